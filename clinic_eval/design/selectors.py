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


@dataclass(frozen=True)
class BalanceRow:
    rater: str
    arm_set: str
    order: str  # arms in on-screen order, "A | B"
    count: int


@dataclass(frozen=True)
class DesignSummary:
    comparisons: int
    seats: int
    repeats: int
    skipped: dict[str, int]
    per_rater: list[tuple[str, int]]
    balance: list[BalanceRow]  # per rater, arm set and on-screen order
    order_totals: list[BalanceRow]  # the same summed over raters (rater is "all")


def _summary(
    rows: list[tuple[str, str, str, bool]], comparisons: int, skipped: dict
) -> DesignSummary:
    """``rows``: (rater, arm set, on-screen order, is_repeat) per seat."""
    per_rater: Counter[str] = Counter()
    cells: Counter[tuple[str, str, str]] = Counter()
    totals: Counter[tuple[str, str]] = Counter()
    repeats = 0
    for rater, arm_set, order, repeat in rows:
        per_rater[rater] += 1
        if repeat:
            repeats += 1
            continue
        cells[(rater, arm_set, order)] += 1
        totals[(arm_set, order)] += 1
    return DesignSummary(
        comparisons=comparisons,
        seats=len(rows),
        repeats=repeats,
        skipped=skipped,
        per_rater=sorted(per_rater.items()),
        balance=[BalanceRow(r, s, o, n) for (r, s, o), n in sorted(cells.items())],
        order_totals=[BalanceRow("all", s, o, n) for (s, o), n in sorted(totals.items())],
    )


def design_preview(*, study: Study) -> DesignSummary:
    """The balance of the design the current settings would freeze; nothing is written."""
    inputs = design_inputs(study=study)
    plan = design_plan(study=study, inputs=inputs)
    rows = [
        (
            a.rater,
            " | ".join(plan.design.comparisons[a.comparison].arms),
            " | ".join(a.shown),
            a.repeat,
        )
        for a in plan.design.assignments
    ]
    return _summary(rows, len(plan.design.comparisons), plan.skipped)


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
        (
            seat.rater.username if seat.rater else "(pool)",
            seat.comparison.arm_set,
            orders[seat.pk],
            seat.is_repeat,
        )
        for seat in seats
    ]
    return _summary(rows, study.comparisons.count(), {})
