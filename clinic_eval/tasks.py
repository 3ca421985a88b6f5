from __future__ import annotations

from celery import shared_task

from clinic_eval import services


@shared_task(name="clinic_eval.data_import_run", acks_late=True, reject_on_worker_lost=True)
def data_import_run_task(import_id: int) -> str:
    """Apply one import. Idempotent: a redelivered or duplicated message changes nothing."""
    return services.data_import_run(import_id=import_id).status


# The planner's task lives in its feature package; importing it here registers it with the
# worker, which discovers clinic_eval.tasks.
from clinic_eval.power.tasks import power_analysis_run_task  # noqa: E402

__all__ = ["data_import_run_task", "power_analysis_run_task"]
