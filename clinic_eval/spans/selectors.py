from __future__ import annotations

from collections.abc import Iterable

from clinic_eval.models import Judgment, ResponseSpan
from clinic_eval.spans.text import ResolvedSpan, SpanInput, as_input, span_order


def resolved(span: ResponseSpan) -> ResolvedSpan:
    return ResolvedSpan(
        position=span.position,
        category=span.category,
        harm=span.harm,
        start=span.start,
        end=span.end,
        quote=span.quote,
        case_field=span.case_field,
        note=span.note,
    )


def spans_in_order(spans: Iterable[ResponseSpan]) -> list[ResolvedSpan]:
    """Stored spans in reading order (databases sort the empty ranges of omissions apart)."""
    return sorted((resolved(s) for s in spans), key=span_order)


def judgment_spans(*, judgment: Judgment) -> tuple[SpanInput, ...]:
    """A stored judgment's spans in the shape they are submitted in, in canonical order."""
    return tuple(as_input(s) for s in spans_in_order(judgment.spans.all()))
