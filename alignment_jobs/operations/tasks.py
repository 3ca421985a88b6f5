"""Loaded by every worker (``clinic_eval.celery.TASK_PACKAGES``): registers the workers'
``engines`` remote-control command. This package defines no task."""

from alignment_jobs import workers  # noqa: F401
