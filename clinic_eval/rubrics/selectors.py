"""Reads of criteria rubrics, and the access checks every rubric page and endpoint goes through.

Physicians reach rubrics and criteria through random public ids, never primary keys, so a URL
reveals neither creation order nor, through it, which drafting batch (and so which model arm) a
rubric came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from django.db import models
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.http import Http404

from clinic_eval.access import study_get_for_coordinator
from clinic_eval.models import (
    Case,
    CaseRubric,
    RubricChange,
    RubricCriterion,
    RubricVerification,
    Study,
    StudyRater,
    User,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

# Rubrics freeze when the study opens (see services.rubrics); verification happens before.
VERIFIABLE_STATUSES = (Study.Status.DRAFT, Study.Status.GENERATING, Study.Status.READY)

# --- Opaque ids for the physicians' URLs -------------------------------------------------------


def rubric_public_id(rubric: CaseRubric) -> str:
    return rubric.public_id


def criterion_public_id(criterion: RubricCriterion) -> str:
    return criterion.public_id


# --- Access checks ---------------------------------------------------------------------------


def rubric_get_for_coordinator(*, user: User, study_id: int, rubric_id: int) -> CaseRubric:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return study.case_rubrics.select_related("study", "case", "drafted_by").get(pk=rubric_id)
    except CaseRubric.DoesNotExist:
        raise Http404 from None


def criterion_get_for_coordinator(
    *, user: User, study_id: int, rubric_id: int, criterion_id: int
) -> RubricCriterion:
    rubric = rubric_get_for_coordinator(user=user, study_id=study_id, rubric_id=rubric_id)
    try:
        return rubric.criteria.select_related("rubric").get(pk=criterion_id)
    except RubricCriterion.DoesNotExist:
        raise Http404 from None


def rubric_get_for_physician(*, user: User, rubric_id: str) -> CaseRubric:
    """A rubric of a study the physician rates; 404 for everyone and everything else."""
    if not user.is_physician:
        raise Http404
    try:
        return CaseRubric.objects.select_related("study", "case").get(
            public_id=rubric_id, study__rater_links__rater=user
        )
    except CaseRubric.DoesNotExist:
        raise Http404 from None


def criterion_get_for_physician(
    *, user: User, rubric_id: str, criterion_id: str
) -> RubricCriterion:
    rubric = rubric_get_for_physician(user=user, rubric_id=rubric_id)
    try:
        return rubric.criteria.select_related("rubric").get(public_id=criterion_id)
    except RubricCriterion.DoesNotExist:
        raise Http404 from None


# --- Reads -----------------------------------------------------------------------------------


def required_verifiers(*, study: Study) -> int:
    return study.design_config.rubric_verifiers


def rubric_verified_enough(*, verified: int, required: int) -> bool:
    """The one rule for a usable rubric: enough physicians verified its current version."""
    return verified >= required


def rubric_is_usable(*, rubric: CaseRubric) -> bool:
    verified, required = rubric_counts(rubric=rubric)
    return rubric_verified_enough(verified=verified, required=required)


class RubricCounts(TypedDict):
    """What ``_with_counts`` annotates on every rubric."""

    criteria_count: int
    current_verifications: int


def _with_counts(
    rubrics: QuerySet[CaseRubric],
) -> QuerySet[WithAnnotations[CaseRubric, RubricCounts]]:
    return rubrics.annotate(
        criteria_count=Count("criteria", distinct=True),
        current_verifications=Count(
            "verifications", filter=Q(verifications__version=F("version")), distinct=True
        ),
    )


class RubricState(models.TextChoices):
    MISSING = "missing", "No rubric"
    UNVERIFIED = "unverified", "Not yet usable"
    USABLE = "usable", "Usable"


@dataclass(frozen=True)
class RubricRow:
    """One line of the coordinator's overview: a case (or a stratum) and its rubric, if any."""

    case: Case | None
    stratum: str
    rubric: CaseRubric | None
    criteria_count: int
    verified: int
    required: int

    @property
    def usable(self) -> bool:
        return self.rubric is not None and rubric_verified_enough(
            verified=self.verified, required=self.required
        )

    @property
    def state(self) -> RubricState:
        if self.rubric is None:
            return RubricState.MISSING
        return RubricState.USABLE if self.usable else RubricState.UNVERIFIED


@dataclass(frozen=True)
class RubricOverview:
    rows: list[RubricRow]
    required: int
    cases: int
    with_rubric: int
    usable: int
    strata: list[str]


def rubric_overview(
    *, study: Study, stratum: str = "", state: str = "", source: str = ""
) -> RubricOverview:
    required = required_verifiers(study=study)
    rubrics = list(_with_counts(study.case_rubrics.select_related("drafted_by")))
    by_case = {r.case_id: r for r in rubrics if r.case_id is not None}
    rows = [
        RubricRow(
            case=None,
            stratum=r.stratum,
            rubric=r,
            criteria_count=r.criteria_count,
            verified=r.current_verifications,
            required=required,
        )
        for r in sorted((r for r in rubrics if r.case_id is None), key=lambda r: r.stratum)
    ]
    for case in study.cases.order_by("external_id").only("pk", "external_id", "stratum", "study"):
        rubric = by_case.get(case.pk)
        rows.append(
            RubricRow(
                case=case,
                stratum=case.stratum,
                rubric=rubric,
                criteria_count=rubric.criteria_count if rubric else 0,
                verified=rubric.current_verifications if rubric else 0,
                required=required,
            )
        )
    case_rows = [row for row in rows if row.case is not None]
    strata = list(dict.fromkeys([*study.strata, *sorted({row.stratum for row in rows})]))
    shown = [
        row
        for row in rows
        if (not stratum or row.stratum == stratum)
        and (not state or row.state == state)
        and (not source or (row.rubric is not None and row.rubric.source == source))
    ]
    return RubricOverview(
        rows=shown,
        required=required,
        cases=len(case_rows),
        with_rubric=sum(row.rubric is not None for row in case_rows),
        usable=sum(row.usable for row in rows),
        strata=strata,
    )


def rubric_counts(*, rubric: CaseRubric) -> tuple[int, int]:
    """Verifications of the rubric as it is now, and how many it needs."""
    done = rubric.verifications.filter(version=rubric.version).count()
    return done, required_verifiers(study=rubric.study)


def rubric_criteria(*, rubric: CaseRubric) -> QuerySet[RubricCriterion]:
    return rubric.criteria.order_by("position", "id")


def rubric_history(*, rubric: CaseRubric) -> QuerySet[RubricChange]:
    return rubric.changes.select_related("author").order_by("-at", "-id")


def rubrics_for_export(*, study: Study) -> QuerySet[CaseRubric]:
    return (
        study.case_rubrics.select_related("case")
        .prefetch_related("criteria")
        .order_by("case__external_id", "stratum", "id")
    )


@dataclass(frozen=True)
class QueueRubric:
    rubric: CaseRubric
    public_id: str
    criteria_count: int
    verified: int
    required: int


@dataclass(frozen=True)
class QueueStudy:
    study: Study
    rubrics: list[QueueRubric]


def rubric_queue_for_physician(*, user: User) -> list[QueueStudy]:
    """Rubrics of the physician's studies, still open to edits, not verified by them as they are.

    Deliberately carries nothing about how a rubric was made (no source, no drafting arm).
    """
    if not user.is_physician:
        return []
    studies = Study.objects.filter(
        pk__in=StudyRater.objects.filter(rater=user).values("study"),
        status__in=VERIFIABLE_STATUSES,
    ).order_by("title", "id")
    queue = []
    for study in studies:
        required = required_verifiers(study=study)
        rubrics = (
            _with_counts(study.case_rubrics.select_related("case"))
            .exclude(
                Exists(
                    RubricVerification.objects.filter(
                        rubric=OuterRef("pk"), physician=user, version=OuterRef("version")
                    )
                )
            )
            .order_by("case__external_id", "stratum", "id")
        )
        rows = [
            QueueRubric(
                rubric=rubric,
                public_id=rubric_public_id(rubric),
                criteria_count=rubric.criteria_count,
                verified=rubric.current_verifications,
                required=required,
            )
            for rubric in rubrics
        ]
        if rows:
            queue.append(QueueStudy(study=study, rubrics=rows))
    return queue


def rubric_verified_by(*, rubric: CaseRubric, user: User) -> bool:
    return rubric.verifications.filter(physician=user, version=rubric.version).exists()


def rubric_changed_by_others(*, rubric: CaseRubric, user: User, since: int) -> bool:
    """Whether anyone but ``user`` changed the rubric after its version ``since``."""
    changes = rubric.changes.filter(version__gt=since).exclude(action=RubricChange.Action.VERIFY)
    return changes.exclude(author=user).exists()


def case_rubric(*, case: Case) -> CaseRubric | None:
    """The rubric a case is graded on: its own, else its stratum's."""
    return (
        CaseRubric.objects.filter(case=case).first()
        or CaseRubric.objects.filter(
            study_id=case.study_id, case__isnull=True, stratum=case.stratum
        ).first()
    )


def case_criteria(*, case: Case) -> list[RubricCriterion]:
    """The criteria a case is graded on, in order: its own rubric's, else its stratum's."""
    rubric = case_rubric(case=case)
    return list(rubric.criteria.all()) if rubric else []


def rubrics_by_scope(*, study: Study) -> tuple[dict[int, CaseRubric], dict[str, CaseRubric]]:
    """The study's rubrics by case pk and by stratum, criteria prefetched, each with ``usable``
    (verified by the design's number of physicians for its current version)."""
    required = required_verifiers(study=study)
    rubrics = (
        CaseRubric.objects.filter(study=study)
        .annotate(
            current_verifications=Count(
                "verifications", filter=Q(verifications__version=F("version"))
            )
        )
        .prefetch_related("criteria")
    )
    by_case: dict[int, CaseRubric] = {}
    by_stratum: dict[str, CaseRubric] = {}
    for rubric in rubrics:
        rubric.usable = rubric_verified_enough(  # type: ignore[attr-defined]
            verified=rubric.current_verifications, required=required
        )
        if rubric.case_id:
            by_case[rubric.case_id] = rubric
        else:
            by_stratum[rubric.stratum] = rubric
    return by_case, by_stratum
