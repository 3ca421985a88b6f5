from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count, Q, QuerySet

from clinic_eval.config import RUBRIC_MODE, SpanAnnotation, position_letter, preference_choices
from clinic_eval.models import (
    Assignment,
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


def _queue_place(assignment: Assignment) -> tuple[RaterProgress, int]:
    """The rater's progress in the study and this item's 1-based place, in one query."""
    counts = Assignment.objects.filter(
        study=assignment.study_id, rater=assignment.rater_id
    ).aggregate(
        **_PROGRESS, before=Count("id", filter=Q(queue_position__lt=assignment.queue_position))
    )
    progress = RaterProgress(study=assignment.study, done=counts["done"], total=counts["total"])
    return progress, counts["before"] + 1


def rating_item(*, assignment: Assignment) -> RatingItem:
    """What the rater sees for one seat: the case and the shown responses in one query, the
    queue place and progress in another, and only for a rated seat its judgment (with its
    spans when the rubric marks them)."""
    shown = {
        response.pk: response
        for response in Response.objects.filter(pk__in=assignment.shown_order).select_related(
            "case"
        )
    }
    case = shown[assignment.shown_order[0]].case
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
    progress, number = _queue_place(assignment)
    return RatingItem(
        assignment=assignment,
        study=study,
        fields=list(case.fields.items()),
        narrative=case.narrative,
        responses=[
            ShownResponse(position_letter(i), i, shown[pk].display_text)
            for i, pk in enumerate(assignment.shown_order)
        ],
        preference_choices=[]
        if rubric_mode
        else preference_choices(study.design, len(assignment.shown_order)),
        judgment=judgment,
        progress=progress,
        number=number,
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
