from __future__ import annotations

from django.db.models import Q, QuerySet

from clinic_eval.models import (
    AuditEvent,
    Study,
    StudyRater,
)

SIGN_IN_ACTIONS = (
    AuditEvent.Action.LOGIN,
    AuditEvent.Action.LOGIN_FAILED,
    AuditEvent.Action.LOCKED_OUT,
    AuditEvent.Action.LOGOUT,
    AuditEvent.Action.SESSION_EXPIRED,
    AuditEvent.Action.ACCOUNT_DISABLED,
)


def study_audit_events(*, study: Study, action: str = "") -> QuerySet[AuditEvent]:
    """The study's own events, and the sign-in events of its coordinators and raters."""
    people = [
        *study.coordinators.values_list("username", flat=True),
        *StudyRater.objects.filter(study=study).values_list("rater__username", flat=True),
    ]
    events = AuditEvent.objects.filter(
        Q(study_id=study.pk) | Q(action__in=SIGN_IN_ACTIONS, actor_username__in=people)
    )
    if action:
        events = events.filter(action=action)
    return events.order_by("-at", "-id")
