from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from alignment_jobs.generation import jobs, shards


@shared_task(
    name="alignment_jobs.shard_run",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def shard_run_task(self: Task, shard_id: int) -> str:
    """Generate one shard. Idempotent: a redelivered or duplicated message stores nothing twice.

    Items that failed for a reason that may pass (the engine raised) stay pending and the shard
    comes back after a pause; each item has a bounded number of attempts.
    """
    outcome = shards.shard_run(shard_id=shard_id)
    if outcome.retry:
        raise self.retry(countdown=settings.GENERATION_RETRY_SECONDS)
    return outcome.status


@shared_task(name="alignment_jobs.shards_sweep_stale")
def shards_sweep_stale_task() -> int:
    """Requeue shards whose worker went silent (killed, or the machine went away)."""
    return len(jobs.shards_sweep_stale())
