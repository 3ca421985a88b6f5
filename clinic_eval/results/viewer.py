"""Reads for the response viewer: every response raters marked spans on, with each rater's
spans highlighted by category on the response's display text and omissions listed beneath.

The viewer is part of the results, so it shows what the results page shows once a study is
closed: arm labels and raters' usernames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, QuerySet
from django.utils.safestring import SafeString

from clinic_eval.config import SpanAnnotation, SpanCategory, harm_words
from clinic_eval.models import Response, ResponseSpan, Study
from clinic_eval.spans.rendering import Mark, marked_text

RESPONSES_PER_PAGE = 20


@dataclass(frozen=True)
class ViewerFilters:
    """Which responses to show: one arm's (by label) and those with a span of one category
    (then only that category's spans are shown); empty means all."""

    arm: str = ""
    category: str = ""


@dataclass(frozen=True)
class ViewerOptions:
    arms: list[str]
    categories: list[SpanCategory]


@dataclass(frozen=True)
class ViewedSpan:
    rater: str
    category: str
    title: str  # the category's title
    harm: str
    quote: str
    case_field: str
    note: str

    @property
    def label(self) -> str:
        """The mark's tooltip: who marked it, what and how harmful."""
        return f"{self.rater} — {self.title}, {harm_words(self.harm)}"


@dataclass(frozen=True)
class ViewedResponse:
    case: str  # the case's external id
    case_pk: int  # for the link to the case's page
    arm: str
    html: SafeString  # the display text with every shown span marked
    raters: list[str]  # who marked spans on it, whether shown under the filter or not
    spans: list[ViewedSpan]  # ranged spans in reading order
    omissions: list[ViewedSpan]


def viewer_options(*, study: Study) -> ViewerOptions:
    """The arms and span categories a coordinator may filter by."""
    return ViewerOptions(
        arms=list(study.arms.order_by("label").values_list("label", flat=True)),
        categories=list(study.rubric_config.spans.categories),
    )


def viewer_filters(*, options: ViewerOptions, arm: str, category: str) -> ViewerFilters:
    """The filters asked for, each dropped when it names no arm or category of the study."""
    return ViewerFilters(
        arm=arm if arm in options.arms else "",
        category=category if any(c.key == category for c in options.categories) else "",
    )


def _spans(study: Study, filters: ViewerFilters) -> QuerySet[ResponseSpan]:
    spans = ResponseSpan.objects.filter(judgment__study=study)
    if filters.category:
        spans = spans.filter(category=filters.category)
    return spans


def viewer_responses(*, study: Study, filters: ViewerFilters) -> QuerySet[Response]:
    """The study's responses with at least one span that passes the filters, by case and arm
    (a page of them is then read with ``viewer_rows``)."""
    responses = Response.objects.filter(case__study=study).filter(
        Exists(_spans(study, filters).filter(response=OuterRef("pk")))
    )
    if filters.arm:
        responses = responses.filter(arm__label=filters.arm)
    return responses.select_related("case", "arm").order_by(
        "case__external_id", "arm__label", "sample_index", "pk"
    )


def _viewed(span: ResponseSpan, config: SpanAnnotation) -> ViewedSpan:
    category = config.category(span.category)
    return ViewedSpan(
        rater=span.judgment.rater.username,
        category=span.category,
        title=category.title if category else span.category,
        harm=span.harm,
        quote=span.quote,
        case_field=span.case_field,
        note=span.note,
    )


def viewer_rows(
    *, study: Study, responses: Sequence[Response], filters: ViewerFilters
) -> list[ViewedResponse]:
    """One page of responses, each with its display text marked by every shown span (one mark
    per span, classed by category and titled with the rater, category and harm)."""
    config = study.rubric_config.spans
    by_response: dict[int, list[ResponseSpan]] = {r.pk: [] for r in responses}
    raters: dict[int, set[str]] = {r.pk: set() for r in responses}
    stored = (
        ResponseSpan.objects.filter(judgment__study=study, response__in=list(by_response))
        .select_related("judgment__rater")
        .order_by("judgment__rater__username", "start", "end", "category", "id")
    )
    for span in stored:
        raters[span.response_id].add(span.judgment.rater.username)
        if not filters.category or span.category == filters.category:
            by_response[span.response_id].append(span)
    rows = []
    for response in responses:
        spans = by_response[response.pk]
        ranged = sorted(
            (s for s in spans if s.start is not None and s.end is not None),
            key=lambda s: (s.start, s.end, s.judgment.rater.username, s.category),
        )
        marks = [
            Mark(
                start=s.start,
                end=s.end,
                classes=f"span-mark span-cat-{s.category} span-harm-{s.harm}",
                title=_viewed(s, config).label,
            )
            for s in ranged
            if s.start is not None and s.end is not None
        ]
        rows.append(
            ViewedResponse(
                case=response.case.external_id,
                case_pk=response.case_id,
                arm=response.arm.label,
                html=marked_text(response.display_text, marks),
                raters=sorted(raters[response.pk]),
                spans=[_viewed(s, config) for s in ranged],
                omissions=[_viewed(s, config) for s in spans if s.start is None],
            )
        )
    return rows
