from __future__ import annotations

from django.apps import AppConfig


class AlignmentJobsConfig(AppConfig):
    name = "alignment_jobs"
    verbose_name = "Generation jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alignment_jobs.rubric_jobs.views import rubric_actions_panel
        from clinic_eval.rubrics.panels import rubric_panel_register

        rubric_panel_register(rubric_actions_panel)
