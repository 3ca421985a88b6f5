"""CSV cells a spreadsheet will not run, reversibly.

Text starting like a formula (``= + - @``, tab or carriage return) gets a leading ``'``, which
Excel and LibreOffice show as text. So that ``study_report --from-export`` reads back exactly
what was exported, text that already starts with ``'`` followed by a formula character or
another ``'`` is escaped the same way, and ``csv_unescape`` removes exactly one ``'``.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def _needs_prefix(text: str) -> bool:
    if text.startswith(FORMULA_STARTS):
        return True
    return text.startswith(QUOTE) and text[1:2] in (*FORMULA_STARTS, QUOTE)


def csv_safe(value: object) -> object:
    """Numbers pass unchanged; text that a spreadsheet would evaluate is neutralised."""
    if isinstance(value, str) and _needs_prefix(value):
        return QUOTE + value
    return value


def csv_unescape(text: str) -> str:
    """The inverse of ``csv_safe`` on text."""
    if text.startswith(QUOTE) and _needs_prefix(text[1:]):
        return text[1:]
    return text
