"""Model output and case text as sanitised HTML: Markdown formatting, nothing that can run.

Two layers, because either alone has failed elsewhere: markdown-it with raw HTML disabled
escapes any markup in the text, and nh3 (ammonia) then keeps only an allow-list of inert
tags with no attributes at all, so no link, image, style or event handler survives.
"""

from __future__ import annotations

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "del",
}  # fmt: skip

# Model outputs put one decision per line; a line break must show as one, not join the lines.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)


def render_markdown(text: str) -> SafeString:
    """Markdown to HTML a browser can only display: links become their text, images vanish."""
    html = _markdown.render(text or "")
    clean = nh3.clean(html, tags=ALLOWED_TAGS, attributes={}, url_schemes=set(), link_rel=None)
    return mark_safe(clean)  # noqa: S308 - nh3 output is sanitised by construction
