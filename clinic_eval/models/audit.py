from __future__ import annotations

from django.conf import settings
from django.db import models

from clinic_eval.models.studies import Study


class ExportLog(models.Model):
    """Who exported what, when, with which filters, and how many rows left the building."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="export_logs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    what = models.CharField(max_length=64)  # "zip", a file name, or "report"
    filters = models.JSONField(default=dict, blank=True)
    via = models.CharField(max_length=8, default="web")  # web | api | command
    row_count = models.PositiveBigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.what} of {self.study} by {self.user} at {self.started_at}"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs: object) -> int:
        raise AuditImmutable("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutable("audit events are append-only")


class AuditImmutable(Exception):
    """Raised on any attempt to change or remove an audit event."""


class AuditEvent(models.Model):
    """Append-only trail: who did what, when, to which object, with the old and new values.

    Rows are never updated or deleted: the model and its queryset refuse, and on PostgreSQL and
    SQLite a trigger refuses too, so even a raw UPDATE cannot rewrite history. The study is a
    plain id, not a foreign key, so the trail outlives what it describes.
    """

    class Action(models.TextChoices):
        LOGIN = "login", "Signed in"
        LOGIN_FAILED = "login_failed", "Failed sign-in"
        LOCKED_OUT = "locked_out", "Locked out after failed sign-ins"
        LOGOUT = "logout", "Signed out"
        SESSION_EXPIRED = "session_expired", "Session reached its absolute limit"
        ACCOUNT_DISABLED = "account_disabled", "Account disabled; its sessions ended"
        STUDY_CREATED = "study_created", "Study created"
        STUDY_STATUS = "study_status", "Study status changed"
        DESIGN_CHANGED = "design_changed", "Design changed"
        ARM_CREATED = "arm_created", "Arm created"
        SPEC_SAVED = "spec_saved", "Generation settings saved"
        IMPORT_SUBMITTED = "import_submitted", "Import submitted"
        JOB_LAUNCHED = "job_launched", "Generation job launched"
        JOB_CANCELLED = "job_cancelled", "Generation job cancelled"
        JOB_RETRIED = "job_retried", "Failed items retried"
        RESPONSE_REVIEWED = "response_reviewed", "Held response decided"
        RATERS_REASSIGNED = "raters_reassigned", "Rating seats reassigned"
        JUDGMENT_EDITED = "judgment_edited", "Rating edited"
        ADJUDICATION_OPENED = "adjudication_opened", "Item sent to adjudication"
        ADJUDICATION_ASSIGNED = "adjudication_assigned", "Adjudication handed to a physician"
        ADJUDICATION_DONE = "adjudication_done", "Item adjudicated"
        EXPORT = "export", "Export"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # As typed for a failed sign-in; kept for everyone so a renamed account's history reads true.
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=24, choices=Action.choices, db_index=True)
    study_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    target = models.CharField(max_length=64, blank=True)  # "judgment:12", "job:3"
    summary = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip_address = models.CharField(max_length=64, blank=True)
    via = models.CharField(max_length=8, blank=True)  # web | api | command | worker

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["actor", "-at"], name="audit_actor_at")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor_username or 'anonymous'} at {self.at}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise AuditImmutable("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise AuditImmutable("audit events are append-only")
