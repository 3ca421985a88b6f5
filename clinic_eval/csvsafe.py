"""CSV cells a spreadsheet will not run: text starting like a formula is prefixed with '."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """Numbers pass unchanged; text that Excel or LibreOffice would evaluate is neutralised."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
