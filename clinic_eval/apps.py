from __future__ import annotations

from django.apps import AppConfig


class ClinicEvalConfig(AppConfig):
    name = "clinic_eval"
    verbose_name = "Clinician evaluation studies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from clinic_eval.accounts import signals  # noqa: F401  (connects the receivers)
