from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.db.models import QuerySet

from clinic_eval.design import planner as design_lib
from clinic_eval.models import (
    Assignment,
    CaseRubric,
    Response,
    Study,
    StudyRater,
)
from clinic_eval.rubrics.selectors import rubrics_by_scope


@dataclass(frozen=True)
class DesignInputs:
    """What the planner sees, keyed by what stays the same in every installation (a case's
    external id, a rater's username), never by database ids: the same import, raters and seed
    give the same design anywhere."""

    case_arms: dict[str, set[str]]  # case id -> arm labels with a servable response
    responses: dict[tuple[str, str], int]  # (case id, arm label) -> pk of the response shown
    strata: dict[str, str]
    authors: dict[str, str]  # case id -> username, for raters of this study
    raters: list[str]  # usernames
    case_pks: dict[str, int]
    rater_pks: dict[str, int]
    # Rubric mode only: case id -> the verified criteria rubric it is graded on, as
    # [scope, version, criteria] for the design hash; cases without one are absent.
    rubrics: dict[str, list] = field(default_factory=dict)


def _rubric_fingerprint(rubric: CaseRubric) -> list:
    scope = "case" if rubric.case_id else f"stratum:{rubric.stratum}"
    criteria = [[c.text, c.points, c.axis, c.level] for c in rubric.criteria.all()]
    return [scope, rubric.version, criteria]


def _graded_rubrics(
    study: Study, strata: dict[str, str], case_pks: dict[str, int]
) -> dict[str, list]:
    """Case id -> fingerprint of the usable rubric it is graded on (its own, else its stratum's)."""
    by_case, by_stratum = rubrics_by_scope(study=study)
    fingerprints: dict[int, list] = {}
    found: dict[str, list] = {}
    for case_id, stratum in strata.items():
        rubric = by_case.get(case_pks[case_id]) or by_stratum.get(stratum)
        if rubric is None or not rubric.usable:  # type: ignore[attr-defined]
            continue
        if rubric.pk not in fingerprints:
            fingerprints[rubric.pk] = _rubric_fingerprint(rubric)
        found[case_id] = fingerprints[rubric.pk]
    return found


def design_inputs(*, study: Study) -> DesignInputs:
    """What the design is built from: servable responses, case strata, authors and raters,
    and in rubric mode the verified criteria rubric of each case."""
    cases = list(study.cases.values_list("pk", "external_id", "stratum", "original_author_id"))
    case_pks = {external_id: pk for pk, external_id, _, _ in cases}
    external = {pk: external_id for pk, external_id, _, _ in cases}
    responses: dict[tuple[str, str], int] = {}
    rows = (
        Response.objects.filter(case__study=study, review__in=Response.SERVABLE)
        .order_by("-sample_index", "-id")
        .values_list("case_id", "arm__label", "pk")
    )
    for case_pk, label, pk in rows:  # the lowest sample index wins: it is written last
        responses[(external[case_pk], label)] = pk
    case_arms: dict[str, set[str]] = {external_id: set() for external_id in case_pks}
    for case_id, label in responses:
        case_arms[case_id].add(label)
    usernames = dict(
        StudyRater.objects.filter(study=study, rater__is_active=True).values_list(
            "rater_id", "rater__username"
        )
    )
    authors = {
        external_id: usernames[author]
        for _, external_id, _, author in cases
        if author is not None and author in usernames
    }
    strata = {external_id: stratum for _, external_id, stratum, _ in cases}
    return DesignInputs(
        case_arms=case_arms,
        responses=responses,
        strata=strata,
        authors=authors,
        raters=sorted(usernames.values()),
        case_pks=case_pks,
        rater_pks={name: pk for pk, name in usernames.items()},
        rubrics=_graded_rubrics(study, strata, case_pks) if study.is_rubric_mode else {},
    )


def design_plan(*, study: Study, inputs: DesignInputs | None = None) -> design_lib.StudyPlan:
    """The study's design as it would be frozen now (raises ``DesignError`` if it cannot be)."""
    inputs = inputs or design_inputs(study=study)
    config = study.design_config
    return design_lib.plan_design(
        case_arms=inputs.case_arms,
        arm_sets=[list(arms) for arms in config.arm_sets],
        raters=inputs.raters,
        raters_per_item=config.raters_per_item,
        seed=study.seed,
        strata=inputs.strata,
        authors=inputs.authors,
        items_per_rater=config.cases_per_rater,
        repeat_fraction=config.repeat_fraction,
        mode=config.mode,
        graded_cases=set(inputs.rubrics),
    )


POOL = "(pool)"  # seats not yet given to a rater


@dataclass(frozen=True)
class BalanceRow:
    rater: str
    arm_set: str
    order: str  # arms in on-screen order, "A | B"
    count: int


@dataclass(frozen=True)
class SeatRow:
    """One seat as the design summary reads it, in the rater's queue order."""

    rater: str
    arm_set: str
    order: str  # arms in on-screen order, "A | B"
    repeat: bool
    case_id: str
    comparison: object  # what identifies the comparison, for pairing a repeat with its original


@dataclass(frozen=True)
class DesignSummary:
    comparisons: int
    seats: int
    repeats: int
    skipped: dict[str, int]
    per_rater: list[tuple[str, int]]
    balance: list[BalanceRow]  # per rater, arm set and on-screen order
    order_totals: list[BalanceRow]  # the same summed over raters (rater is "all")
    spacing: list[design_lib.QueueSpacing]  # per rater: how far apart cases and repeats are

    @property
    def shortfalls(self) -> list[str]:
        return [line for queue in self.spacing for line in queue.shortfalls]

    @property
    def pooled(self) -> int:
        """Seats released to the study's pool, in no rater's queue."""
        return dict(self.per_rater).get(POOL, 0)


def _summary(
    rows: list[SeatRow], comparisons: int, skipped: dict, *, min_case_gap: int
) -> DesignSummary:
    """``rows``: every seat, each rater's in queue order."""
    per_rater: Counter[str] = Counter()
    cells: Counter[tuple[str, str, str]] = Counter()
    totals: Counter[tuple[str, str]] = Counter()
    queues: dict[str, list[tuple[str, object, bool]]] = {}
    repeats = 0
    for row in rows:
        per_rater[row.rater] += 1
        if row.rater != POOL:
            queues.setdefault(row.rater, []).append((row.case_id, row.comparison, row.repeat))
        if row.repeat:
            repeats += 1
            continue
        cells[(row.rater, row.arm_set, row.order)] += 1
        totals[(row.arm_set, row.order)] += 1
    return DesignSummary(
        comparisons=comparisons,
        seats=len(rows),
        repeats=repeats,
        skipped=skipped,
        per_rater=sorted(per_rater.items()),
        balance=[BalanceRow(r, s, o, n) for (r, s, o), n in sorted(cells.items())],
        order_totals=[BalanceRow("all", s, o, n) for (s, o), n in sorted(totals.items())],
        spacing=[
            design_lib.queue_spacing(rater, queue, min_case_gap=min_case_gap)
            for rater, queue in sorted(queues.items())
        ],
    )


def design_preview(*, study: Study) -> DesignSummary:
    """The balance of the design the current settings would freeze; nothing is written."""
    inputs = design_inputs(study=study)
    plan = design_plan(study=study, inputs=inputs)
    rows = [
        SeatRow(
            rater=a.rater,
            arm_set=" | ".join(plan.design.comparisons[a.comparison].arms),
            order=" | ".join(a.shown),
            repeat=a.repeat,
            case_id=plan.design.comparisons[a.comparison].case_id,
            comparison=a.comparison,
        )
        for a in plan.design.assignments
    ]
    return _summary(
        rows,
        len(plan.design.comparisons),
        plan.skipped,
        min_case_gap=study.design_config.min_case_gap,
    )


def design_seats(*, study: Study) -> QuerySet[Assignment]:
    """The frozen design's seats, for the coordinator's table and CSV."""
    return (
        Assignment.objects.filter(study=study)
        .select_related("rater", "comparison__case")
        .order_by("rater__username", "queue_position", "id")
    )


def seat_arm_order(seats: list[Assignment]) -> dict[int, str]:
    """Seat pk -> arm labels in on-screen order (coordinator only)."""
    ids = {pk for seat in seats for pk in seat.shown_order}
    labels = dict(Response.objects.filter(pk__in=ids).values_list("pk", "arm__label"))
    return {seat.pk: " | ".join(labels[pk] for pk in seat.shown_order) for seat in seats}


def design_summary(*, study: Study) -> DesignSummary:
    seats = list(design_seats(study=study))
    orders = seat_arm_order(seats)
    rows = [
        SeatRow(
            rater=seat.rater.username if seat.rater else POOL,
            arm_set=seat.comparison.arm_set,
            order=orders[seat.pk],
            repeat=seat.is_repeat,
            case_id=seat.comparison.case.external_id,
            comparison=seat.comparison_id,
        )
        for seat in seats
    ]
    return _summary(
        rows, study.comparisons.count(), {}, min_case_gap=study.design_config.min_case_gap
    )


def design_seat_gaps(seats: list[Assignment]) -> dict[int, tuple[int | None, int | None]]:
    """Seat pk -> (places to the nearest other item of its case in the rater's queue, and for
    a repeat the places after its original); ``seats`` ordered as ``design_seats`` orders them."""
    queues: dict[int | None, list[Assignment]] = {}
    for seat in seats:
        queues.setdefault(seat.rater_id, []).append(seat)
    gaps: dict[int, tuple[int | None, int | None]] = {}
    for rater_id, queue in queues.items():
        if rater_id is None:
            gaps.update({seat.pk: (None, None) for seat in queue})
            continue
        measured = design_lib.queue_gaps(
            [(s.comparison.case.external_id, s.comparison_id, s.is_repeat) for s in queue]
        )
        gaps.update({seat.pk: gap for seat, gap in zip(queue, measured, strict=True)})
    return gaps
