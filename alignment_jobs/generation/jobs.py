"""Every write of generation: specs, job launch, shard runs, cancel, retry and the stale sweep."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from alignment_jobs.generation.specs import spec_check_paths
from alignment_jobs.models import GenerationItem, GenerationJob, GenerationShard, GenerationSpec
from clinic_eval.audit.services import audit_record
from clinic_eval.celery import app as celery_app
from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, AuditEvent, Response, Study, User

logger = logging.getLogger(__name__)


LAUNCHABLE_STATUSES = (Study.Status.DRAFT, Study.Status.GENERATING, Study.Status.READY)


# A coordinator waits on these: without limits kombu retries a dead broker for minutes.
BROKER_TIMEOUT_SECONDS = 2.0


BROKER_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.25,
    "interval_max": 0.5,
}


QUEUE_RETRY_AFTER_SECONDS = 30


class QueueUnavailable(DomainError):
    """The broker cannot take the job's tasks; nothing of the job was kept."""


def _queue_unavailable(exc: Exception, *, what: str) -> QueueUnavailable:
    scheme = str(celery_app.conf.broker_write_url or "").split(":", 1)[0]
    name = "The job queue (Redis)" if scheme.startswith("redis") else "The job queue"
    logger.warning("broker unreachable (%s): %s", what, exc)
    return QueueUnavailable(
        f"{name} is unreachable, so {what}. "
        "Check that the queue service is running, then try again."
    )


def _broker_connection() -> Any:
    # A connection of its own, not one from Celery's pool: its short timeouts must not leak into
    # the workers' and beat's long-lived connections. Transports ignore options they do not know.
    return celery_app.connection_for_write(
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        transport_options={
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
        },
    )


def _broker_connect(broker: Any) -> None:
    broker.ensure_connection(
        max_retries=1, interval_start=0.2, interval_step=0.2, timeout=BROKER_TIMEOUT_SECONDS
    )


def broker_check(*, what: str) -> None:
    """Raise QueueUnavailable unless the broker accepts a connection now (eager mode: no-op)."""
    if celery_app.conf.task_always_eager:
        return
    try:
        with _broker_connection() as broker:
            _broker_connect(broker)
    except (BrokerError, OSError) as exc:
        raise _queue_unavailable(exc, what=what) from exc


def _shards_publish(shard_ids: Sequence[int]) -> None:
    """Send one task per shard over one connection; raises BrokerError or OSError on failure."""
    from alignment_jobs.generation.tasks import shard_run_task

    if celery_app.conf.task_always_eager:
        for pk in shard_ids:
            shard_run_task.delay(pk)
        return
    with _broker_connection() as broker:
        _broker_connect(broker)
        for pk in shard_ids:
            shard_run_task.apply_async(
                (pk,), connection=broker, retry=True, retry_policy=BROKER_RETRY_POLICY
            )


def job_launch(
    *,
    study: Study,
    created_by: User | None,
    arms: Sequence[Arm] | None = None,
    case_ids: Sequence[str] | None = None,
    stratum: str = "",
    engine: str = GenerationJob.Engine.AUTO,
    shard_size: int | None = None,
    enqueue: bool = True,
) -> GenerationJob:
    """Split the missing (case, arm) outputs into shards and queue them once this commits.

    With ``enqueue=False`` the caller runs the shards itself (``manage.py generate --inline``).
    Raises QueueUnavailable when the broker is down, before anything is created; should it go
    down between that check and the publish, the job is deleted again before the error rises.
    """
    if study.status not in LAUNCHABLE_STATUSES:
        raise DomainError(
            f"the study is {study.get_status_display().lower()}; generation would change what "
            "raters see"
        )
    # Which engines are installed is the GPU worker's business, not the web server's: a worker
    # without the engine asked for fails the items with that reason.
    if engine not in GenerationJob.Engine.values:
        raise DomainError(f"engine must be one of {', '.join(GenerationJob.Engine.values)}")
    specs = list(
        GenerationSpec.objects.filter(arm__study=study, arm__kind=Arm.Kind.MODEL)
        .select_related("arm")
        .order_by("base_model_path", "arm__label")
    )
    if arms is not None:
        wanted = {arm.pk for arm in arms}
        without_spec = [arm.label for arm in arms if arm.pk not in {s.arm_id for s in specs}]
        if without_spec:
            raise DomainError(f"no generation settings yet for: {', '.join(without_spec)}")
        specs = [spec for spec in specs if spec.arm_id in wanted]
    if not specs:
        raise DomainError("add generation settings to at least one model arm first")
    for spec in specs:
        try:
            spec_check_paths(base_model_path=spec.base_model_path, adapter_path=spec.adapter_path)
        except DomainError as exc:
            raise DomainError(f"{spec.arm.label}: {exc}") from None

    cases = study.cases.all()
    if stratum:
        cases = cases.filter(stratum=stratum)
    if case_ids is not None:
        wanted_ids = list(dict.fromkeys(case_ids))
        cases = cases.filter(external_id__in=wanted_ids)
        found = set(cases.values_list("external_id", flat=True))
        unknown = [case_id for case_id in wanted_ids if case_id not in found]
        if unknown:
            raise DomainError(f"no such case(s) in this study: {', '.join(unknown[:10])}")
    case_list = list(cases.order_by("external_id").values_list("pk", flat=True))
    if not case_list:
        raise DomainError("no cases match; import cases first")
    if enqueue:
        broker_check(what="no job was created")

    shard_size = shard_size or settings.GENERATION_SHARD_SIZE
    with transaction.atomic():
        Study.objects.select_for_update().get(pk=study.pk)
        busy = set(
            GenerationItem.objects.filter(
                job__study=study,
                status=GenerationItem.Status.PENDING,
                job__status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING],
            ).values_list("case_id", "arm_id")
        )
        job = GenerationJob.objects.create(
            study=study, engine=engine, shard_size=shard_size, created_by=created_by
        )
        shards: list[GenerationShard] = []
        chunks: list[list[int]] = []
        for spec in specs:
            complete = set(
                Response.objects.filter(arm=spec.arm, sample_index__lt=spec.n_samples)
                .values("case_id")
                .annotate(n=Count("id"))
                .filter(n__gte=spec.n_samples)
                .values_list("case_id", flat=True)
            )
            todo = [c for c in case_list if c not in complete and (c, spec.arm_id) not in busy]
            for start in range(0, len(todo), shard_size):
                shards.append(GenerationShard(job=job, spec=spec, index=len(shards)))
                chunks.append(todo[start : start + shard_size])
        if not shards:
            raise DomainError(
                "nothing to generate: every chosen case already has its responses "
                "(or is being generated by a running job)"
            )
        GenerationShard.objects.bulk_create(shards)
        items = [
            GenerationItem(job=job, shard=shard, case_id=case_id, arm_id=shard.spec.arm_id)
            for shard, chunk in zip(shards, chunks, strict=True)
            for case_id in chunk
        ]
        GenerationItem.objects.bulk_create(items, batch_size=2_000)
        job.item_count = len(items)
        job.save(update_fields=["item_count"])
        previous = Study.objects.values_list("status", "status_changed_at").get(pk=study.pk)
        if study.status == Study.Status.DRAFT:
            Study.objects.filter(pk=study.pk).update(
                status=Study.Status.GENERATING, status_changed_at=timezone.now()
            )
        shard_ids = [shard.pk for shard in shards]
        if enqueue:
            transaction.on_commit(lambda: _launch_publish(job.pk, shard_ids, previous))
        else:
            _audit_launch(job, shards)
    return job


def _audit_launch(job: GenerationJob, shards: Sequence[GenerationShard]) -> None:
    arms = sorted({shard.spec.arm.label for shard in shards})
    audit_record(
        action=AuditEvent.Action.JOB_LAUNCHED,
        actor=job.created_by,
        study_id=job.study_id,
        target=f"job:{job.pk}",
        summary=f"{job.item_count} item(s) in {len(shards)} shard(s) for {', '.join(arms)}",
        after={"engine": job.engine, "shard_size": job.shard_size, "arms": arms},
    )


def _launch_publish(job_id: int, shard_ids: list[int], previous: tuple[str, Any]) -> None:
    """Queue a committed job's shards, or delete the job again if the broker refuses them.

    A shard sent before the failure finds no row when a worker takes it, and does nothing.
    """
    try:
        _shards_publish(shard_ids)
        job = GenerationJob.objects.select_related("created_by").get(pk=job_id)
        _audit_launch(job, list(job.shards.select_related("spec__arm")))
    except (BrokerError, OSError) as exc:
        with transaction.atomic():
            locked = GenerationJob.objects.select_for_update().filter(pk=job_id).first()
            if locked is not None:
                study_id = locked.study_id
                locked.delete()
                status, changed_at = previous
                others = GenerationJob.objects.filter(study_id=study_id).exists()
                if status == Study.Status.DRAFT and not others:
                    Study.objects.filter(pk=study_id, status=Study.Status.GENERATING).update(
                        status=status, status_changed_at=changed_at
                    )
        raise _queue_unavailable(exc, what="no job was created") from exc


def job_refresh(*, job_id: int) -> GenerationJob:
    """Close the job once no shard has work left; the status says how it ended."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().get(pk=job_id)
        if job.is_finished:
            return job
        open_shards = job.shards.filter(
            status__in=[GenerationShard.Status.PENDING, GenerationShard.Status.RUNNING]
        ).exists()
        if open_shards:
            return job
        counts = dict(job.items.values("status").annotate(n=Count("id")).values_list("status", "n"))
        if job.cancel_requested_at is not None:
            job.status = GenerationJob.Status.CANCELLED
        elif counts.get(GenerationItem.Status.FAILED):
            job.status = GenerationJob.Status.FINISHED_WITH_FAILURES
        else:
            job.status = GenerationJob.Status.SUCCEEDED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])
        return job


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Stop handing out shards; shards already on a GPU finish and keep their outputs."""
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_finished:
            raise DomainError("the job has already finished")
        locked.cancel_requested_at = timezone.now()
        locked.save(update_fields=["cancel_requested_at"])
        pending = locked.shards.filter(status=GenerationShard.Status.PENDING)
        GenerationItem.objects.filter(
            shard__in=pending, status=GenerationItem.Status.PENDING
        ).update(status=GenerationItem.Status.CANCELLED, finished_at=timezone.now())
        pending.update(status=GenerationShard.Status.CANCELLED, finished_at=timezone.now())
        audit_record(
            action=AuditEvent.Action.JOB_CANCELLED,
            study_id=locked.study_id,
            target=f"job:{locked.pk}",
            summary="stopped handing out shards",
        )
    return job_refresh(job_id=job.pk)


ITEM_RETRY_FIELDS = ("status", "attempts", "error", "finished_at")


SHARD_RETRY_FIELDS = ("status", "attempts", "claim_token")


JOB_RETRY_FIELDS = ("status", "finished_at", "cancel_requested_at")


def job_retry_failed(*, job: GenerationJob) -> GenerationJob:
    """Give every failed item fresh attempts and queue their shards again.

    Raises QueueUnavailable when the broker is down; the job then stays as it was.
    """
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if not locked.is_finished:
            raise DomainError("wait for the job to finish, then retry its failed items")
        failed = locked.items.filter(status=GenerationItem.Status.FAILED)
        # order_by(): the model's ordering would otherwise join the DISTINCT, one row an item.
        shard_ids = list(failed.order_by().values_list("shard_id", flat=True).distinct())
        if not shard_ids:
            raise DomainError("the job has no failed items")
        broker_check(what="no item was queued again")
        # What to put back should the publish fail after this commits.
        before = _RetrySnapshot(
            items=list(failed.values("pk", *ITEM_RETRY_FIELDS)),
            shards=list(
                GenerationShard.objects.filter(pk__in=shard_ids).values("pk", *SHARD_RETRY_FIELDS)
            ),
            job={name: getattr(locked, name) for name in JOB_RETRY_FIELDS},
        )
        failed.update(status=GenerationItem.Status.PENDING, attempts=0, error="", finished_at=None)
        GenerationShard.objects.filter(pk__in=shard_ids).update(
            status=GenerationShard.Status.PENDING, attempts=0, claim_token=""
        )
        locked.status = GenerationJob.Status.QUEUED
        locked.finished_at = None
        locked.cancel_requested_at = None
        locked.save(update_fields=list(JOB_RETRY_FIELDS))
        transaction.on_commit(lambda: _retry_publish(locked.pk, shard_ids, before))
    return locked


@dataclass
class _RetrySnapshot:
    items: list[dict[str, Any]]
    shards: list[dict[str, Any]]
    job: dict[str, Any]


def _retry_publish(job_id: int, shard_ids: list[int], before: _RetrySnapshot) -> None:
    try:
        _shards_publish(shard_ids)
        study_id = GenerationJob.objects.values_list("study_id", flat=True).get(pk=job_id)
        audit_record(
            action=AuditEvent.Action.JOB_RETRIED,
            study_id=study_id,
            target=f"job:{job_id}",
            summary=f"{len(before.items)} failed item(s) queued again",
        )
    except (BrokerError, OSError) as exc:
        with transaction.atomic():
            job = GenerationJob.objects.select_for_update().get(pk=job_id)
            # Put back only what no worker has taken since: a shard sent before the failure may
            # be running, and its finish closes the job again.
            untouched = set(
                GenerationShard.objects.select_for_update()
                .filter(pk__in=shard_ids, status=GenerationShard.Status.PENDING, attempts=0)
                .values_list("pk", flat=True)
            )
            restorable = set(
                GenerationItem.objects.filter(
                    pk__in=[row["pk"] for row in before.items],
                    shard_id__in=untouched,
                    status=GenerationItem.Status.PENDING,
                ).values_list("pk", flat=True)
            )
            GenerationItem.objects.bulk_update(
                [GenerationItem(**row) for row in before.items if row["pk"] in restorable],
                list(ITEM_RETRY_FIELDS),
            )
            GenerationShard.objects.bulk_update(
                [GenerationShard(**row) for row in before.shards if row["pk"] in untouched],
                list(SHARD_RETRY_FIELDS),
            )
            if untouched == set(shard_ids):
                for name, value in before.job.items():
                    setattr(job, name, value)
                job.save(update_fields=list(JOB_RETRY_FIELDS))
        raise _queue_unavailable(exc, what="no item was queued again") from exc


def shards_sweep_stale() -> list[int]:
    """Requeue shards whose worker stopped sending heartbeats; returns their ids."""
    from alignment_jobs.generation.tasks import shard_run_task

    stale_before = timezone.now() - timedelta(seconds=settings.GENERATION_STALE_SECONDS)
    with transaction.atomic():
        stale = list(
            GenerationShard.objects.select_for_update(skip_locked=True)
            .filter(status=GenerationShard.Status.RUNNING, heartbeat_at__lt=stale_before)
            .values_list("pk", flat=True)
        )
        if stale:
            GenerationShard.objects.filter(pk__in=stale).update(
                status=GenerationShard.Status.PENDING, claim_token=""
            )
            logger.warning("requeued %d shard(s) whose worker went silent: %s", len(stale), stale)
            transaction.on_commit(lambda: [shard_run_task.delay(pk) for pk in stale])
    return stale
