"""Reads of generation, including the one access check per object type."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict, cast

from django.conf import settings
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from alignment_jobs import workers
from alignment_jobs.models import GenerationItem, GenerationJob, GenerationShard, GenerationSpec
from clinic_eval.access import study_get_for_coordinator
from clinic_eval.models import Arm, Response, Study, User

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class JobCounts(TypedDict):
    """What ``job_list`` annotates on every job."""

    done_count: int
    failed_count: int
    cancelled_count: int
    pending_count: int
    token_count: int
    last_heartbeat: datetime | None


def job_get_for_coordinator(*, user: User, study_id: int, job_id: int) -> GenerationJob:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return job_list(study=study).select_related("study").get(pk=job_id)
    except GenerationJob.DoesNotExist:
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


def _item_count(status: str) -> Count:
    return Count("items", filter=Q(items__status=status))


def job_list(*, study: Study) -> QuerySet[WithAnnotations[GenerationJob, JobCounts]]:
    """Jobs with their item counts and tokens, so a list costs one query however long it is."""
    return (
        study.generation_jobs.select_related("created_by")
        .annotate(
            done_count=_item_count(GenerationItem.Status.DONE),
            failed_count=_item_count(GenerationItem.Status.FAILED),
            cancelled_count=_item_count(GenerationItem.Status.CANCELLED),
            pending_count=_item_count(GenerationItem.Status.PENDING),
            token_count=Coalesce(Sum("items__completion_tokens"), 0),
            last_heartbeat=_last_heartbeat(),
        )
        .order_by("-created_at", "-id")
    )


def _last_heartbeat() -> Subquery:
    """The latest heartbeat of a job's shards (a subquery: a join would multiply the counts)."""
    beats = GenerationShard.objects.filter(job=OuterRef("pk"), heartbeat_at__isnull=False)
    return Subquery(beats.order_by("-heartbeat_at").values("heartbeat_at")[:1])


def open_jobs(*, study: Study) -> QuerySet[GenerationJob]:
    """The study's jobs not yet finished, newest first."""
    return study.generation_jobs.exclude(status__in=GenerationJob.FINISHED).order_by(
        "-created_at", "-id"
    )


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


def _with_counts(job: GenerationJob) -> WithAnnotations[GenerationJob, JobCounts]:
    """The job itself when it came from ``job_list``, else the same job with its counts."""
    if hasattr(job, "done_count"):
        return cast("WithAnnotations[GenerationJob, JobCounts]", job)
    return job_list(study=job.study).get(pk=job.pk)


def job_progress(*, job: GenerationJob, failures_shown: int = 50) -> JobProgress:
    """Progress of one job; a job from ``job_list`` brings its counts with it."""
    job = _with_counts(job)
    done, failed = job.done_count, job.failed_count
    cancelled, pending = job.cancelled_count, job.pending_count
    total = done + failed + cancelled + pending
    tokens = job.token_count
    elapsed = 0.0
    if job.started_at:
        elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds()
    tokens_per_second = tokens / elapsed if elapsed > 0 and tokens else None
    items_per_minute = 60 * done / elapsed if elapsed > 0 and done else None
    eta = None
    if items_per_minute and pending and not job.is_finished:
        eta = pending / items_per_minute * 60
    failures = []
    if failures_shown and failed:
        failures = list(
            job.items.filter(status=GenerationItem.Status.FAILED)
            .select_related("case", "arm")
            .order_by("arm__label", "case__external_id")[:failures_shown]
        )
    running_shards = 0
    if failures_shown and not job.is_finished:
        running_shards = job.shards.filter(status=GenerationShard.Status.RUNNING).count()
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
        running_shards=running_shards,
        failures=failures,
    )


@dataclass(frozen=True)
class JobWorkers:
    """Whether anything is working on a job, for the job page, its API and ``generate --wait``."""

    queue: str
    consumers: list[str] | None  # live workers on the job's queue; None: they could not be asked
    waiting: int | None  # messages waiting in the queue, where the broker says
    last_heartbeat: datetime | None  # the latest heartbeat of any of the job's shards
    warning: str  # in words, when no worker has taken or reported on the job for too long

    @property
    def heartbeat_age_seconds(self) -> float | None:
        if self.last_heartbeat is None:
            return None
        return (timezone.now() - self.last_heartbeat).total_seconds()


def job_workers(*, job: GenerationJob) -> JobWorkers:
    """Who consumes the job's queue (Celery's remote control, cached for a few seconds) and
    when a shard last reported. A job not finished that no live worker consumes, or (where the
    workers cannot be asked) on which no shard has reported, for ``WORKER_SILENCE_SECONDS``
    gets a warning that says since when and how to start a worker."""
    queue = settings.CELERY_GPU_QUEUE
    state = workers.queue_health_cached(queue)
    if hasattr(job, "last_heartbeat"):  # a job from ``job_list`` brings it
        last = job.last_heartbeat
    else:
        last = job.shards.aggregate(last=Max("heartbeat_at"))["last"]
    since = max(filter(None, (last, job.started_at, job.created_at)))
    consumers = None if state.problem else state.workers
    warning = ""
    quiet = (timezone.now() - since).total_seconds() > settings.WORKER_SILENCE_SECONDS
    if not job.is_finished and quiet and not consumers:
        when = timezone.localtime(since).strftime("%H:%M")
        start = f"start one with: {workers.start_command(queue)}"
        if consumers == []:
            warning = f"No worker is taking jobs from queue {queue} since {when}; {start}"
        else:
            warning = (
                f"No worker has reported on this job since {when} (the workers on queue "
                f"{queue} could not be asked: {state.problem}); {start}"
            )
    return JobWorkers(queue, consumers, state.waiting, last, warning)
