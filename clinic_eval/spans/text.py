"""Spans on a response's display text, as pure functions: sentences for keyboard marking, a
quoted passage found in the text, a submitted span checked and resolved to its range, and the
hallucination flag a response's spans imply.

A span's range is a pair of character offsets into the response's ``display_text``: the exact
text the physician saw (the rating page shows it character for character when spans are on),
frozen when the study opens, so ranges stay valid for the life of the study.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from clinic_eval.config import HARM_LEVELS, HallucinationFlag, SpanAnnotation

MAX_SPAN_NOTE = 2_000
MAX_QUOTE = 5_000

# A sentence ends at . ! or ? followed by whitespace, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\S+")


def sentences(text: str) -> list[tuple[int, int]]:
    """The [start, end) ranges of the text's sentences and lines, without edge whitespace."""
    ranges = []
    start = 0
    for match in [*_SENTENCE_END.finditer(text), None]:
        end = match.start() if match else len(text)
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            left = start + len(piece) - len(piece.lstrip())
            ranges.append((left, left + len(stripped)))
        if match:
            start = match.end()
    return ranges


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class SpanInput:
    """One marked span as submitted: a range (``start``/``end``), or a ``quote`` of the text
    with its ``occurrence`` (1-based) where it appears more than once; or, for an omission
    category, no range and a ``case_field`` and/or ``note``."""

    position: int
    category: str
    harm: str
    start: int | None = None
    end: int | None = None
    quote: str = ""
    occurrence: int | None = None
    case_field: str = ""
    note: str = ""


@dataclass(frozen=True)
class ResolvedSpan:
    """A checked span: its range and quote taken from the text (none for an omission)."""

    position: int
    category: str
    harm: str
    start: int | None
    end: int | None
    quote: str
    case_field: str
    note: str

    def key(self) -> tuple[object, ...]:
        if self.start is None:
            return (self.position, self.category, self.case_field, self.note.casefold())
        return (self.position, self.category, self.start, self.end)


# (position, span number on that response from 1, field) -> message; field "" is the span.
SpanErrors = dict[tuple[int, int, str], str]


def find_quote(text: str, quote: str, occurrence: int | None) -> tuple[int, int]:
    """The range of ``quote`` in ``text``; ``occurrence`` picks one where it appears more than
    once. Raises ``ValueError`` with what the rater should do otherwise."""
    if not quote.strip():
        raise ValueError("Quote the text you mean, or select it.")
    quote = quote.strip()
    found = [m.start() for m in re.finditer(re.escape(quote), text)]
    if not found:
        raise ValueError("This text is not in the response; copy it exactly as shown.")
    if occurrence is None:
        if len(found) > 1:
            raise ValueError(
                f"This text appears {len(found)} times in the response; say which occurrence "
                f"(1 to {len(found)}) you mean."
            )
        occurrence = 1
    if not 1 <= occurrence <= len(found):
        raise ValueError(f"This text appears {len(found)} time(s); occurrence {occurrence} is not.")
    start = found[occurrence - 1]
    return start, start + len(quote)


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """A selection's range without the whitespace a mouse drag picks up at either edge."""
    piece = text[start:end]
    left = start + len(piece) - len(piece.lstrip())
    return left, left + len(piece.strip())


def _resolve_range(span: SpanInput, text: str) -> tuple[int, int]:
    if span.start is not None or span.end is not None:
        if span.start is None or span.end is None:
            raise ValueError("A span needs both its start and its end.")
        if span.start >= span.end:
            raise ValueError("A span's end must come after its start.")
        if not 0 <= span.start < span.end <= len(text):
            raise ValueError(
                f"This range ({span.start}-{span.end}) lies outside the response, which has "
                f"{len(text)} characters."
            )
        if span.quote and span.quote != text[span.start : span.end]:
            raise ValueError(
                "The marked text does not match the response at this range; reload the item."
            )
        start, end = span.start, span.end
    else:
        if len(span.quote) > MAX_QUOTE:
            raise ValueError(f"Quotes are limited to {MAX_QUOTE} characters.")
        start, end = find_quote(text, span.quote, span.occurrence)
    start, end = _trimmed(text, start, end)
    if start >= end:
        raise ValueError("Mark some text, not only spaces.")
    return start, end


def resolve_spans(
    spans: Sequence[SpanInput],
    *,
    texts: Sequence[str],
    config: SpanAnnotation,
    case_fields: Iterable[str],
) -> tuple[list[ResolvedSpan], SpanErrors]:
    """Check every span against the rubric's categories, the harm scale and the response it
    marks, and resolve quotes to ranges. Returns the spans in a canonical order and, keyed by
    (position, number, field), every problem found; nothing is stored when any is found."""
    errors: SpanErrors = {}
    fields = set(case_fields)
    resolved: list[ResolvedSpan] = []
    seen: set[tuple[object, ...]] = set()
    numbers: dict[int, int] = {}
    for span in spans:
        number = numbers[span.position] = numbers.get(span.position, 0) + 1
        where = (span.position, number)
        if not 0 <= span.position < len(texts):
            errors[(*where, "")] = "This span names a response the item does not show."
            continue
        if not config.enabled:
            errors[(*where, "")] = "This study does not mark spans."
            continue
        category = config.category(span.category)
        if category is None:
            errors[(*where, "category")] = "Choose a category from the list."
        if span.harm not in HARM_LEVELS:
            errors[(*where, "harm")] = "Choose a harm level: none, minor, moderate or severe."
        if len(span.note) > MAX_SPAN_NOTE:
            errors[(*where, "note")] = f"Notes are limited to {MAX_SPAN_NOTE} characters."
        start = end = None
        quote = ""
        if category is not None and category.omission:
            if span.start is not None or span.end is not None or span.quote.strip():
                errors[(*where, "quote")] = (
                    "An omission marks what is missing, so it has no text: name the case field "
                    "it left out, or describe it in the note."
                )
            elif span.case_field and span.case_field not in fields:
                errors[(*where, "case_field")] = "Choose one of this case's fields."
            elif not span.case_field and not span.note.strip():
                errors[(*where, "case_field")] = (
                    "Name the case field the response left out, or describe the omission."
                )
        elif category is not None:
            if span.case_field:
                errors[(*where, "case_field")] = "Only an omission names a case field."
            try:
                start, end = _resolve_range(span, texts[span.position])
                quote = texts[span.position][start:end]
            except ValueError as exc:
                errors[(*where, "quote")] = str(exc)
        if any(key[:2] == where for key in errors):
            continue
        checked = ResolvedSpan(
            position=span.position,
            category=span.category,
            harm=span.harm,
            start=start,
            end=end,
            quote=quote,
            case_field=span.case_field,
            note=span.note.strip(),
        )
        if checked.key() in seen:
            errors[(*where, "")] = "This span is marked twice."
            continue
        seen.add(checked.key())
        resolved.append(checked)
    for position, count in numbers.items():
        if count > config.max_spans_per_response:
            errors[(position, 0, "")] = (
                f"At most {config.max_spans_per_response} spans can be marked on one response."
            )
    return sorted(resolved, key=span_order), errors


def span_order(span: ResolvedSpan) -> tuple[object, ...]:
    """Spans in reading order, omissions last: the order they are stored and shown in."""
    return (
        span.position,
        span.start is None,
        span.start or 0,
        span.end or 0,
        span.category,
        span.case_field,
        span.note,
        span.harm,
    )


def derived_flag(
    spans: Iterable[ResolvedSpan], *, config: SpanAnnotation, flag: HallucinationFlag
) -> tuple[str, str]:
    """The (hallucination type, severity) a response's spans imply: the type of its most
    harmful span whose category implies one (the earlier category on a tie), and the flag's
    most severe level for moderate or severe harm, its least severe level otherwise."""
    order = {c.key: i for i, c in enumerate(config.categories)}
    implying = [
        (span, category.hallucination)
        for span in spans
        if (category := config.category(span.category)) and category.hallucination
    ]
    if not implying:
        return "none", ""
    span, kind = min(implying, key=lambda p: (-HARM_LEVELS.index(p[0].harm), order[p[0].category]))
    serious = HARM_LEVELS.index(span.harm) >= HARM_LEVELS.index("moderate")
    return kind or "none", flag.severities[-1] if serious else flag.severities[0]


def spans_by_position(spans: Iterable[ResolvedSpan]) -> Mapping[int, list[ResolvedSpan]]:
    grouped: dict[int, list[ResolvedSpan]] = {}
    for span in spans:
        grouped.setdefault(span.position, []).append(span)
    return grouped


def as_input(span: ResolvedSpan) -> SpanInput:
    """A stored span in the shape it is submitted in (its range, with its quote)."""
    return SpanInput(
        position=span.position,
        category=span.category,
        harm=span.harm,
        start=span.start,
        end=span.end,
        quote=span.quote,
        case_field=span.case_field,
        note=span.note,
    )
