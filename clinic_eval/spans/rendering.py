"""A response's display text as HTML with its sentences and marked spans, character for
character: the element's ``textContent`` is exactly the display text, so offsets a browser
computes on it are the offsets the server stores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from clinic_eval.spans.text import sentences


@dataclass(frozen=True)
class Mark:
    """A range to highlight: CSS classes (a category's, a rater's) and a tooltip, both from
    the server's own vocabulary, escaped on output."""

    start: int
    end: int
    classes: str
    title: str = ""


def _boundaries(text: str, marks: Sequence[Mark]) -> list[int]:
    cuts = {0, len(text)}
    for start, end in sentences(text):
        cuts.update((start, end))
    for mark in marks:
        cuts.update((max(0, mark.start), min(len(text), mark.end)))
    return sorted(cuts)


def marked_text(text: str, marks: Sequence[Mark] = ()) -> SafeString:
    """``text`` escaped, each sentence in ``<span class="sentence" data-start data-end>``, and
    every piece covered by marks in ``<mark>`` with the classes and titles of all of them
    (overlapping spans nest as one mark per piece, so every mark is visible)."""
    sentence_of = sentences(text)
    cuts = _boundaries(text, marks)
    html: list[str] = []
    open_sentence: tuple[int, int] | None = None
    for left, right in zip(cuts, cuts[1:], strict=False):
        sentence = next((s for s in sentence_of if s[0] <= left < s[1]), None)
        if sentence != open_sentence:
            if open_sentence is not None:
                html.append("</span>")
            if sentence is not None:
                html.append(
                    f'<span class="sentence" data-start="{sentence[0]}" data-end="{sentence[1]}">'
                )
            open_sentence = sentence
        piece = escape(text[left:right])
        covering = [m for m in marks if m.start <= left and right <= m.end]
        if covering:
            classes = " ".join(dict.fromkeys(" ".join(m.classes for m in covering).split()))
            title = "; ".join(dict.fromkeys(m.title for m in covering if m.title))
            html.append(
                f'<mark class="{escape(classes)}" title="{escape(title)}" '
                f'data-start="{left}" data-end="{right}">{piece}</mark>'
            )
        else:
            html.append(piece)
    if open_sentence is not None:
        html.append("</span>")
    return mark_safe("".join(html))  # noqa: S308 - every piece of text and attribute is escaped
