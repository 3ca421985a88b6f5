"""Reads of generation, including the one access check per object type."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from alignment_jobs.models import GenerationItem, GenerationJob, GenerationSpec
from clinic_eval.models import Arm, Response, Study, User
from clinic_eval.selectors import study_get_for_coordinator


def arm_get_for_coordinator(*, user: User, study_id: int, arm_id: int) -> Arm:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return study.arms.select_related("study").get(pk=arm_id)
    except Arm.DoesNotExist:
        raise Http404 from None


def job_get_for_coordinator(*, user: User, study_id: int, job_id: int) -> GenerationJob:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return study.generation_jobs.select_related("study", "created_by").get(pk=job_id)
    except GenerationJob.DoesNotExist:
        raise Http404 from None


def response_get_for_coordinator(*, user: User, study_id: int, response_id: int) -> Response:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return Response.objects.select_related("case", "arm").get(pk=response_id, arm__study=study)
    except Response.DoesNotExist:
        raise Http404 from None


def spec_for_arm(*, arm: Arm) -> GenerationSpec | None:
    return GenerationSpec.objects.filter(arm=arm).first()


def model_arms(*, study: Study) -> QuerySet[Arm]:
    return (
        study.arms.filter(kind=Arm.Kind.MODEL)
        .select_related("generation_spec")
        .annotate(response_count=Count("responses"))
        .order_by("label")
    )


def job_list(*, study: Study) -> QuerySet[GenerationJob]:
    return study.generation_jobs.select_related("created_by")


def held_responses(*, study: Study) -> QuerySet[Response]:
    return (
        Response.objects.filter(arm__study=study, review=Response.Review.HELD)
        .select_related("case", "arm")
        .order_by("arm__label", "case__external_id", "sample_index")
    )


@dataclass(frozen=True)
class JobProgress:
    job: GenerationJob
    total: int
    done: int
    failed: int
    cancelled: int
    pending: int
    percent: int
    completion_tokens: int
    elapsed_seconds: float
    tokens_per_second: float | None
    items_per_minute: float | None
    eta_seconds: float | None
    running_shards: int
    failures: list[GenerationItem]


def job_progress(*, job: GenerationJob, failures_shown: int = 50) -> JobProgress:
    counts = dict(job.items.values("status").annotate(n=Count("id")).values_list("status", "n"))
    done = counts.get(GenerationItem.Status.DONE, 0)
    failed = counts.get(GenerationItem.Status.FAILED, 0)
    cancelled = counts.get(GenerationItem.Status.CANCELLED, 0)
    pending = counts.get(GenerationItem.Status.PENDING, 0)
    total = done + failed + cancelled + pending
    tokens = job.items.aggregate(n=Sum("completion_tokens"))["n"] or 0
    elapsed = 0.0
    if job.started_at:
        elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds()
    tokens_per_second = tokens / elapsed if elapsed > 0 and tokens else None
    items_per_minute = 60 * done / elapsed if elapsed > 0 and done else None
    eta = None
    if items_per_minute and pending and not job.is_finished:
        eta = pending / items_per_minute * 60
    failures = list(
        job.items.filter(status=GenerationItem.Status.FAILED)
        .select_related("case", "arm")
        .order_by("arm__label", "case__external_id")[:failures_shown]
    )
    return JobProgress(
        job=job,
        total=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        pending=pending,
        percent=100 if total == 0 else int(100 * (done + failed + cancelled) / total),
        completion_tokens=tokens,
        elapsed_seconds=elapsed,
        tokens_per_second=tokens_per_second,
        items_per_minute=items_per_minute,
        eta_seconds=eta,
        running_shards=job.shards.filter(status="running").count(),
        failures=failures,
    )
