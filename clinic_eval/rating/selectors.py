from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from django.db.models import Count, Q, QuerySet

from clinic_eval import sql
from clinic_eval.config import RUBRIC_MODE, SpanAnnotation, position_letter, preference_choices
from clinic_eval.models import (
    Assignment,
    Case,
    Judgment,
    Response,
    Study,
    User,
)
from clinic_eval.rubrics.selectors import case_criteria
from clinic_eval.spans.selectors import spans_in_order
from clinic_eval.spans.text import ResolvedSpan


@dataclass(frozen=True)
class RaterProgress:
    study: Study
    done: int
    total: int

    @property
    def remaining(self) -> int:
        return self.total - self.done


# A rater's seats in a study, counted in one aggregate.
_PROGRESS = {"total": Count("id"), "done": Count("id", filter=Q(status=Assignment.Status.DONE))}


def rater_progress(*, rater: User, study: Study) -> RaterProgress:
    counts = Assignment.objects.filter(study=study, rater=rater).aggregate(**_PROGRESS)
    return RaterProgress(study=study, done=counts["done"], total=counts["total"])


def rater_studies(*, rater: User) -> list[RaterProgress]:
    studies = Study.objects.filter(
        rater_links__rater=rater, status__in=Study.FROZEN_STATUSES
    ).annotate(
        seat_total=Count("assignments", filter=Q(assignments__rater=rater)),
        seat_done=Count(
            "assignments",
            filter=Q(assignments__rater=rater, assignments__status=Assignment.Status.DONE),
        ),
    )
    return [RaterProgress(study=s, done=s.seat_done, total=s.seat_total) for s in studies]


def rater_done_items(*, rater: User, study: Study) -> QuerySet[Assignment]:
    return (
        Assignment.objects.filter(study=study, rater=rater, status=Assignment.Status.DONE)
        .select_related("judgment")
        .order_by("-done_at", "-id")
    )


@dataclass(frozen=True)
class ShownResponse:
    letter: str
    position: int
    text: str


@dataclass(frozen=True)
class ShownCriterion:
    """A rubric criterion as a rater sees it: named by its number on the item, never its key."""

    number: int  # 1-based, in rubric order
    text: str
    points: int

    @property
    def undesirable(self) -> bool:
        # Negative points: "met" means the undesirable behaviour occurred.
        return self.points < 0


@dataclass(frozen=True)
class RatingItem:
    """Everything a rater's page or API shows for one item, and nothing that identifies an arm."""

    assignment: Assignment
    study: Study
    fields: list[tuple[str, object]]
    narrative: str
    responses: list[ShownResponse]
    preference_choices: list[str]  # empty in rubric mode: no preference is asked
    judgment: Judgment | None
    progress: RaterProgress
    number: int  # 1-based place of this item in the rater's queue
    mode: str = "pairwise"
    criteria: list[ShownCriterion] = field(default_factory=list)  # rubric mode only
    # The stored judgment's grades as (position letter, criterion number, met, note).
    grades: list[tuple[str, int, bool, str]] = field(default_factory=list)
    # The rubric's span annotation, and the stored judgment's spans in reading order.
    span_config: SpanAnnotation = field(default_factory=SpanAnnotation)
    spans: list[ResolvedSpan] = field(default_factory=list)

    @property
    def is_rubric(self) -> bool:
        return self.mode == RUBRIC_MODE


@dataclass(frozen=True)
class _Shown:
    case: Case
    texts: dict[int, str]  # response pk -> display text
    progress: RaterProgress
    number: int  # 1-based place of the item in the rater's queue


def _shown(assignment: Assignment) -> _Shown:
    """The case and the shown responses' texts, with the rater's progress in the study and the
    item's place in their queue, in one written query (see ``clinic_eval.sql``)."""
    shown_order = list(assignment.shown_order)
    rows = sql.fetch(
        _shown_sql(len(shown_order)),
        [
            assignment.queue_position,
            Assignment.Status.DONE,
            assignment.study_id,
            assignment.rater_id,
            *shown_order,
        ],
    )
    case, at = sql.load(Case, rows[0])
    seats, rated, ahead = rows[0][at + 2 : at + 5]
    progress = RaterProgress(study=assignment.study, done=int(rated), total=int(seats))
    return _Shown(case, {row[at]: row[at + 1] for row in rows}, progress, int(ahead) + 1)


@cache
def _shown_sql(responses: int) -> str:
    seat = sql.table(Assignment)
    position = sql.column(Assignment, "queue_position", "q")
    status = sql.column(Assignment, "status", "q")
    return (
        f"SELECT {sql.columns(Case, 'c')}, {sql.column(Response, 'id', 'r')}, "
        f"{sql.column(Response, 'display_text', 'r')}, q.seats, q.rated, q.ahead "
        f"FROM {sql.table(Response)} r JOIN {sql.table(Case)} c "
        f"ON {sql.column(Case, 'id', 'c')} = {sql.column(Response, 'case', 'r')} "
        f"CROSS JOIN (SELECT COUNT(*) AS seats, "
        f"COALESCE(SUM(CASE WHEN {position} < %s THEN 1 ELSE 0 END), 0) AS ahead, "
        f"COALESCE(SUM(CASE WHEN {status} = %s THEN 1 ELSE 0 END), 0) AS rated "
        f"FROM {seat} q WHERE {sql.column(Assignment, 'study', 'q')} = %s "
        f"AND {sql.column(Assignment, 'rater', 'q')} = %s) q "
        f"WHERE {sql.column(Response, 'id', 'r')} IN ({sql.placeholders(responses)})"
    )


def rating_item(*, assignment: Assignment) -> RatingItem:
    """What the rater sees for one seat: the case, the shown responses, the queue place and
    progress in one query, and only for a rated seat its judgment (with its spans when the
    rubric marks them)."""
    shown = _shown(assignment)
    case = shown.case
    study = assignment.study
    rubric_mode = study.is_rubric_mode
    span_config = study.rubric_config.spans
    judgment = None
    if assignment.status == Assignment.Status.DONE:
        related = ["ratings", "criterion_grades"] if rubric_mode else ["ratings"]
        if span_config.enabled:
            related.append("spans")
        judgment = Judgment.objects.filter(assignment=assignment).prefetch_related(*related).first()
    criteria = case_criteria(case=case) if rubric_mode else []
    numbers = {c.pk: n for n, c in enumerate(criteria, 1)}
    grades = sorted(
        (g.position, numbers[g.criterion_id], g.met, g.note)
        for g in (judgment.criterion_grades.all() if judgment and rubric_mode else [])
        if g.criterion_id in numbers
    )
    return RatingItem(
        assignment=assignment,
        study=study,
        fields=list(case.fields.items()),
        narrative=case.narrative,
        responses=[
            ShownResponse(position_letter(i), i, shown.texts[pk])
            for i, pk in enumerate(assignment.shown_order)
        ],
        preference_choices=[]
        if rubric_mode
        else preference_choices(study.design, len(assignment.shown_order)),
        judgment=judgment,
        progress=shown.progress,
        number=shown.number,
        mode=study.design_config.mode,
        criteria=[ShownCriterion(n, c.text, c.points) for n, c in enumerate(criteria, 1)],
        grades=grades,
        span_config=span_config,
        spans=spans_in_order(judgment.spans.all()) if judgment and span_config.enabled else [],
    )


def rater_idle_timeout_minutes(*, rater: User) -> int | None:
    """The shortest idle timeout among the open studies this physician rates, if any."""
    designs = Study.objects.filter(rater_links__rater=rater, status=Study.Status.OPEN).values_list(
        "design", flat=True
    )
    minutes = [d.get("idle_timeout_minutes") for d in designs if d.get("idle_timeout_minutes")]
    return min(minutes) if minutes else None
