from __future__ import annotations

from django.db.models import Count, QuerySet
from django.http import Http404

from clinic_eval.models import (
    Assignment,
    Case,
    DataImport,
    Study,
    User,
)


def study_list_for_coordinator(*, user: User) -> QuerySet[Study]:
    studies = Study.objects.all() if user.is_superuser else user.coordinated_studies.all()
    return studies.annotate(case_count=Count("cases", distinct=True)).order_by("-created_at")


def study_get_for_coordinator(*, user: User, study_id: int) -> Study:
    if not user.is_coordinator:
        raise Http404
    studies = Study.objects.all() if user.is_superuser else user.coordinated_studies.all()
    try:
        return studies.get(pk=study_id)
    except Study.DoesNotExist:
        raise Http404 from None


def case_get_for_coordinator(*, user: User, study_id: int, case_id: int) -> Case:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return study.cases.select_related("study", "original_author", "data_import").get(pk=case_id)
    except Case.DoesNotExist:
        raise Http404 from None


def data_import_get_for_coordinator(*, user: User, study_id: int, import_id: int) -> DataImport:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return (
            study.imports.select_related("study", "created_by").defer("content").get(pk=import_id)
        )
    except DataImport.DoesNotExist:
        raise Http404 from None


def study_get_for_rater(*, user: User, public_id: str) -> Study:
    if not user.is_physician:
        raise Http404
    try:
        return Study.objects.get(
            public_id=public_id,
            rater_links__rater=user,
            status__in=Study.FROZEN_STATUSES,
        )
    except Study.DoesNotExist:
        raise Http404 from None


def assignment_get_for_rater(*, user: User, public_id: str) -> Assignment:
    if not user.is_physician:
        raise Http404
    try:
        return Assignment.objects.select_related("study", "comparison__case").get(
            public_id=public_id,
            rater=user,
            study__status__in=Study.FROZEN_STATUSES,
        )
    except Assignment.DoesNotExist:
        raise Http404 from None
