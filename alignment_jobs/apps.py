from __future__ import annotations

from django.apps import AppConfig


class AlignmentJobsConfig(AppConfig):
    name = "alignment_jobs"
    verbose_name = "Generation jobs"
    default_auto_field = "django.db.models.BigAutoField"
