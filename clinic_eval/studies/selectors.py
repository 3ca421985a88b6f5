"""Reads of the study domain, including the one access check per object type.

Each ``*_get_for_coordinator`` raises ``Http404`` for anything the user may not see, so a
foreign object is indistinguishable from a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from clinic_eval.models import (
    STUDY_TRANSITIONS,
    Arm,
    Case,
    DataImport,
    Study,
)


def case_list(*, study: Study, stratum: str = "", search: str = "") -> QuerySet[Case]:
    cases = study.cases.all()
    if stratum:
        cases = cases.filter(stratum=stratum)
    if search:
        cases = cases.filter(Q(external_id__icontains=search) | Q(narrative__icontains=search))
    return cases.order_by("external_id")


def arm_list(*, study: Study) -> QuerySet[Arm]:
    return study.arms.annotate(response_count=Count("responses")).order_by("label")


def case_responses(*, case: Case) -> QuerySet:
    return case.responses.select_related("arm").order_by("arm__label", "sample_index")


@dataclass(frozen=True)
class StudyOverview:
    study: Study
    case_count: int
    cases_per_stratum: list[tuple[str, int]]
    arms: list[Arm]
    imports: list[DataImport]
    next_statuses: list[tuple[str, str]]


def study_overview(*, study: Study) -> StudyOverview:
    per_stratum = dict(
        study.cases.values_list("stratum").annotate(n=Count("id")).values_list("stratum", "n")
    )
    ordered = [(name, per_stratum.pop(name, 0)) for name in study.strata]
    ordered += sorted(per_stratum.items())
    labels = dict(Study.Status.choices)
    return StudyOverview(
        study=study,
        case_count=sum(n for _, n in ordered),
        cases_per_stratum=ordered,
        arms=list(arm_list(study=study)),
        imports=list(data_import_list(study=study)[:10]),
        next_statuses=[(status, labels[status]) for status in STUDY_TRANSITIONS[study.status]],
    )


def data_import_list(*, study: Study) -> QuerySet[DataImport]:
    return study.imports.select_related("created_by").defer("content")
