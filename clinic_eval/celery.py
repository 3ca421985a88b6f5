from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic_eval.settings")

app = Celery("clinic_eval")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each feature package keeps its Celery tasks in its own ``tasks`` module.
TASK_PACKAGES = [
    "clinic_eval.imports",
    "clinic_eval.design.power",
    "alignment_jobs.generation",
    "alignment_jobs.rubric_jobs",
    "alignment_jobs.operations",  # no tasks: the workers' ``engines`` remote-control command
]
app.autodiscover_tasks(TASK_PACKAGES)
