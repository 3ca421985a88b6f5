from __future__ import annotations

from celery import shared_task

from clinic_eval.imports import services


@shared_task(name="clinic_eval.data_import_run", acks_late=True, reject_on_worker_lost=True)
def data_import_run_task(import_id: int) -> str:
    """Apply one import. Idempotent: a redelivered or duplicated message changes nothing."""
    return services.data_import_run(import_id=import_id).status
