"""Reads for the planner: the study's latest analysis, defaults from its design, and the
measured time physicians spend per item."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from django.db.models import QuerySet

from clinic_eval.models import Judgment, PowerAnalysis, Study, User

DEFAULT_SECONDS_PER_ITEM = 90.0


def power_analysis_latest(*, study: Study) -> PowerAnalysis | None:
    return study.power_analyses.order_by("-created_at", "-id").first()


def power_analysis_get_for_coordinator(*, study: Study, analysis_id: int) -> PowerAnalysis:
    """The one access check for a power analysis: it belongs to a study the caller may see
    (the study itself was checked with ``study_get_for_coordinator``)."""
    return PowerAnalysis.objects.get(pk=analysis_id, study=study)


def closed_studies_for_heterogeneity(*, user: User, exclude: Study) -> QuerySet[Study]:
    """Closed studies this coordinator runs, whose variance components can seed the planner."""
    return (
        Study.objects.filter(coordinators=user, status=Study.Status.CLOSED)
        .exclude(pk=exclude.pk)
        .order_by("-created_at")
    )


@dataclass(frozen=True)
class SecondsPerItem:
    seconds: float
    source: str


def seconds_per_item(*, study: Study, user: User) -> SecondsPerItem:
    """The median time physicians spent on an item: this study's if it has judgments, else
    over the coordinator's other studies, else a stated assumption."""
    for scope, judgments in (
        ("this study", Judgment.objects.filter(assignment__study=study)),
        (
            "your other studies",
            Judgment.objects.filter(assignment__study__coordinators=user),
        ),
    ):
        times = judgments.filter(seconds_on_item__isnull=False).values_list(
            "seconds_on_item", flat=True
        )
        values = sorted(cast("Iterable[float]", times[:20_000]))  # the filter leaves no None
        if values:
            middle = len(values) // 2
            median = (
                values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
            )
            return SecondsPerItem(float(median), f"median of {len(values)} judgments in {scope}")
    return SecondsPerItem(
        DEFAULT_SECONDS_PER_ITEM, "no measured times yet: 90 seconds per item assumed"
    )


@dataclass(frozen=True)
class PlannerDefaults:
    kind: str
    arm_a: str
    arm_b: str
    dimension: str
    cases: int
    raters: int
    raters_per_item: int
    items_per_rater: int | None
    pairs_per_case: int
    repeat_fraction: float
    alpha: float
    problem: str  # why the planner cannot run yet, or ""


def planner_defaults(*, study: Study) -> PlannerDefaults:
    design = study.design_config
    plan = study.plan_config
    primary = plan.primary
    problem = ""
    if not (primary.arm_a and primary.arm_b):
        problem = "register a primary endpoint (two arms) in the analysis plan first"
    elif design.mode != "pairwise":
        problem = "the planner simulates pairwise designs; this study is in another mode"
    return PlannerDefaults(
        kind=primary.kind,
        arm_a=primary.arm_a,
        arm_b=primary.arm_b,
        dimension=primary.dimension,
        cases=study.cases.count(),
        raters=study.raters.count(),
        raters_per_item=design.raters_per_item,
        items_per_rater=design.cases_per_rater,
        pairs_per_case=max(1, len(design.arm_sets)),
        repeat_fraction=design.repeat_fraction,
        alpha=plan.alpha,
        problem=problem,
    )
