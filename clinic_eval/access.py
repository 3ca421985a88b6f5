"""The access checks: one function per object type, used by every page and API endpoint.

Each ``<object>_get_for_<role>`` returns the object or raises ``Http404`` for anything the user
may not see, so a foreign id and a missing one look the same. Role checks (coordinator,
physician) are the decorators and permission classes in ``clinic_eval.web.permissions``;
rubric and generation objects have theirs in ``clinic_eval.rubrics.selectors`` and
``alignment_jobs.generation.selectors`` (jobs), built on these.
"""

from __future__ import annotations

from django.db.models import Count, QuerySet
from django.http import Http404

from clinic_eval.models import (
    Adjudication,
    Arm,
    Assignment,
    Case,
    DataImport,
    Response,
    Study,
    StudyRater,
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


def arm_get_for_coordinator(*, user: User, study_id: int, arm_id: int) -> Arm:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return study.arms.select_related("study").get(pk=arm_id)
    except Arm.DoesNotExist:
        raise Http404 from None


def response_get_for_coordinator(*, user: User, study_id: int, response_id: int) -> Response:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return Response.objects.select_related("case", "arm").get(pk=response_id, arm__study=study)
    except Response.DoesNotExist:
        raise Http404 from None


def data_import_get_for_coordinator(*, user: User, study_id: int, import_id: int) -> DataImport:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return (
            study.imports.select_related("study", "created_by").defer("content").get(pk=import_id)
        )
    except DataImport.DoesNotExist:
        raise Http404 from None


def study_rater_get_for_coordinator(*, user: User, study_id: int, rater_id: int) -> StudyRater:
    """A physician's place on a study the coordinator runs (404 for anyone else's)."""
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return StudyRater.objects.select_related("study", "rater").get(study=study, rater=rater_id)
    except StudyRater.DoesNotExist:
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


def adjudication_get_for_adjudicator(*, user: User, public_id: str) -> Adjudication:
    """An adjudication handed to this physician, on a study that is open or closed (404 for
    anyone else's, an unassigned one, or one whose study is not under way)."""
    if not user.is_physician:
        raise Http404
    try:
        return Adjudication.objects.select_related("study", "comparison__case").get(
            public_id=public_id,
            adjudicator=user,
            study__status__in=Study.FROZEN_STATUSES,
        )
    except Adjudication.DoesNotExist:
        raise Http404 from None
