from __future__ import annotations

from django.utils import timezone

from clinic_eval.audit.services import audit_record
from clinic_eval.models import AuditEvent, ExportLog, Study, User


def export_log_start(
    *, study: Study, user: User, what: str, filters: dict, via: str = "web"
) -> ExportLog:
    """Record an export as it starts; ``finished_at`` stays empty if the download is cut off."""
    log = ExportLog.objects.create(study=study, user=user, what=what, filters=filters, via=via)
    audit_record(
        action=AuditEvent.Action.EXPORT,
        actor=user,
        study_id=study.pk,
        target=f"export:{log.pk}",
        summary=what,
        after={"filters": filters, "via": via},
    )
    return log


def export_log_finish(*, log: ExportLog, row_count: int) -> ExportLog:
    log.row_count = row_count
    log.finished_at = timezone.now()
    log.save(update_fields=["row_count", "finished_at"])
    return log
