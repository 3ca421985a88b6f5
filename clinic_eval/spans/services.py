"""Writes of spans: checked against the response texts an item showed, stored with their
judgment (same transaction, same revision and audit as the rest of it)."""

from __future__ import annotations

from collections.abc import Sequence

from clinic_eval.config import SpanAnnotation
from clinic_eval.models import Judgment, Response, ResponseSpan
from clinic_eval.spans.text import ResolvedSpan, SpanErrors, SpanInput, resolve_spans


def spans_checked(
    *, config: SpanAnnotation, shown_order: Sequence[int], spans: Sequence[SpanInput]
) -> tuple[list[ResolvedSpan], SpanErrors]:
    """The submitted spans resolved against the shown responses' display text (one query,
    made only when there is something to check), with every problem found."""
    if not spans:
        return [], {}
    texts: list[str] = []
    fields: list[str] = []
    if config.enabled:
        shown = {
            r.pk: r
            for r in Response.objects.filter(pk__in=shown_order)
            .select_related("case")
            .only("display_text", "case__fields")
        }
        texts = [shown[pk].display_text for pk in shown_order]
        fields = list(shown[shown_order[0]].case.fields)
    else:
        texts = [""] * len(shown_order)
    return resolve_spans(spans, texts=texts, config=config, case_fields=fields)


def spans_store(
    *,
    judgment: Judgment,
    shown_order: Sequence[int],
    spans: Sequence[SpanInput],
    replace: bool = True,
) -> None:
    """Write a judgment's resolved spans (``spans_checked`` output, as inputs); an edit
    replaces the stored set."""
    if replace:
        ResponseSpan.objects.filter(judgment=judgment).delete()
    if not spans:
        return
    ResponseSpan.objects.bulk_create(
        ResponseSpan(
            judgment=judgment,
            position=span.position,
            response_id=shown_order[span.position],
            start=span.start,
            end=span.end,
            quote=span.quote,
            category=span.category,
            harm=span.harm,
            case_field=span.case_field,
            note=span.note,
        )
        for span in spans
    )
