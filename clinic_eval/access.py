"""The access checks: one function per object type, used by every page and API endpoint.

Each ``<object>_get_for_<role>`` returns the object or raises ``Http404`` for anything the user
may not see, so a foreign id and a missing one look the same. Role checks (coordinator,
physician) are the decorators and permission classes in ``clinic_eval.web.permissions``;
rubric and generation objects have theirs in ``clinic_eval.rubrics.selectors`` and
``alignment_jobs.generation.selectors`` (jobs), built on these.
"""

from __future__ import annotations

from functools import cache

from django.db.models import Count, QuerySet
from django.http import Http404

from clinic_eval import sql
from clinic_eval.models import (
    Adjudication,
    Arm,
    Assignment,
    Case,
    Comparison,
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
    frozen = list(Study.FROZEN_STATUSES)
    found = sql.fetch(_rated_study_sql(len(frozen)), [public_id, user.pk, *frozen])
    if not found:
        raise Http404
    return sql.load(Study, found[0])[0]


@cache
def _rated_study_sql(statuses: int) -> str:
    return (
        f"SELECT {sql.columns(Study, 's')} FROM {sql.table(Study)} s "
        f"JOIN {sql.table(StudyRater)} sr "
        f"ON {sql.column(StudyRater, 'study', 'sr')} = {sql.column(Study, 'id', 's')} "
        f"WHERE {sql.column(Study, 'public_id', 's')} = %s "
        f"AND {sql.column(StudyRater, 'rater', 'sr')} = %s "
        f"AND {sql.column(Study, 'status', 's')} IN ({sql.placeholders(statuses)})"
    )


def assignment_get_for_rater(*, user: User, public_id: str) -> Assignment:
    """The rater's seat with its study, comparison and case, in one written query: every
    rating request starts here (see ``clinic_eval.sql``)."""
    if not user.is_physician:
        raise Http404
    frozen = list(Study.FROZEN_STATUSES)
    found = sql.fetch(_seat_sql(len(frozen)), [public_id, user.pk, *frozen])
    if not found:
        raise Http404
    row = found[0]
    assignment, at = sql.load(Assignment, row)
    study, at = sql.load(Study, row, at)
    comparison, at = sql.load(Comparison, row, at)
    case, _ = sql.load(Case, row, at)
    comparison.case = case
    assignment.study, assignment.comparison, assignment.rater = study, comparison, user
    return assignment


@cache
def _seat_sql(statuses: int) -> str:
    return (
        f"SELECT {sql.columns(Assignment, 'a')}, {sql.columns(Study, 's')}, "
        f"{sql.columns(Comparison, 'cmp')}, {sql.columns(Case, 'c')} "
        f"FROM {sql.table(Assignment)} a "
        f"JOIN {sql.table(Study)} s "
        f"ON {sql.column(Study, 'id', 's')} = {sql.column(Assignment, 'study', 'a')} "
        f"JOIN {sql.table(Comparison)} cmp "
        f"ON {sql.column(Comparison, 'id', 'cmp')} = {sql.column(Assignment, 'comparison', 'a')} "
        f"JOIN {sql.table(Case)} c "
        f"ON {sql.column(Case, 'id', 'c')} = {sql.column(Comparison, 'case', 'cmp')} "
        f"WHERE {sql.column(Assignment, 'public_id', 'a')} = %s "
        f"AND {sql.column(Assignment, 'rater', 'a')} = %s "
        f"AND {sql.column(Study, 'status', 's')} IN ({sql.placeholders(statuses)})"
    )


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
