"""The audit trail's one writer.

Services call ``audit_record`` with what happened; where it happened (address, web or API) comes
from the request being served, which ``AuditContextMiddleware`` puts in a context variable so no
service has to take a request. Outside a request (commands, workers) ``via`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from clinic_eval.models import AuditEvent, ExportLog, Study, User, UserSession

SUMMARY_LENGTH = AuditEvent._meta.get_field("summary").max_length or 300


@dataclass(frozen=True)
class AuditOrigin:
    ip_address: str = ""
    via: str = "command"
    # The signed-in user of the request being served, asked only when an event needs it.
    request_user: Callable[[], User | None] = lambda: None


_NO_REQUEST = AuditOrigin()
_origin: ContextVar[AuditOrigin] = ContextVar("audit_origin", default=_NO_REQUEST)


@contextmanager
def audit_origin(origin: AuditOrigin) -> Iterator[None]:
    token = _origin.set(origin)
    try:
        yield
    finally:
        _origin.reset(token)


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    actor_username: str = "",
    study_id: int | None = None,
    target: str = "",
    summary: str = "",
    before: Any = None,
    after: Any = None,
) -> AuditEvent:
    """Append one event; with no ``actor`` given, the signed-in user of the current request."""
    origin = _origin.get()
    if actor is None:
        actor = origin.request_user()
    if actor is not None and actor.is_authenticated:
        actor_username = actor.get_username()
    else:
        actor = None
    if len(summary) > SUMMARY_LENGTH:
        summary = summary[: SUMMARY_LENGTH - 1] + "…"
    return AuditEvent.objects.create(
        action=action,
        actor=actor,
        actor_username=actor_username[:150],
        study_id=study_id,
        target=target[:64],
        summary=summary,
        before=before,
        after=after,
        ip_address=origin.ip_address[:64],
        via=origin.via,
    )


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict, dict]:
    """Only what differs, so an audit row of a large settings form says what changed."""
    keys = [key for key in {*before, *after} if before.get(key) != after.get(key)]
    keys.sort()
    return {key: before.get(key) for key in keys}, {key: after.get(key) for key in keys}


def session_track(*, user: User, session_key: str | None) -> None:
    if session_key:
        UserSession.objects.get_or_create(session_key=session_key, defaults={"user": user})


def session_forget(*, session_key: str | None) -> None:
    if session_key:
        UserSession.objects.filter(session_key=session_key).delete()


@transaction.atomic
def user_sessions_end(*, user: User, reason: str) -> int:
    """End every session and API token the user holds; returns how many sessions ended."""
    keys = list(UserSession.objects.filter(user=user).values_list("session_key", flat=True))
    Session.objects.filter(session_key__in=keys).delete()
    UserSession.objects.filter(user=user).delete()
    tokens = Token.objects.filter(user=user).delete()[0]
    audit_record(
        action=AuditEvent.Action.ACCOUNT_DISABLED,
        actor=_origin.get().request_user(),
        target=f"user:{user.pk}",
        summary=(
            f"{user.get_username()} {reason}: {len(keys)} session(s) "
            f"and {tokens} API token(s) ended"
        ),
    )
    return len(keys)


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
