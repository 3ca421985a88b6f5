from __future__ import annotations

from celery import shared_task

from clinic_eval.design.power import services


@shared_task(name="clinic_eval.power_analysis_run", acks_late=True, reject_on_worker_lost=True)
def power_analysis_run_task(analysis_id: int) -> str:
    """Run one power analysis. Idempotent: a finished analysis is left as it is."""
    return services.power_analysis_run(analysis_id=analysis_id).status
