"""Authentication events, written to the audit trail and to the session register."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from clinic_eval.audit import services as audit
from clinic_eval.models import AuditEvent, User

SESSION_SIGNED_IN_AT = "signed_in_at"


@receiver(user_logged_in)
def on_login(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_SIGNED_IN_AT] = timezone.now().timestamp()
        audit.session_track(user=user, session_key=request.session.session_key)
    audit.audit_record(action=AuditEvent.Action.LOGIN, actor=user)


@receiver(user_logged_out)
def on_logout(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        audit.session_forget(session_key=request.session.session_key)
    if user is not None and not getattr(request, "session_expired", False):
        audit.audit_record(action=AuditEvent.Action.LOGOUT, actor=user)


@receiver(user_login_failed)
def on_login_failed(sender: Any, credentials: dict[str, Any], **kwargs: Any) -> None:
    audit.audit_record(
        action=AuditEvent.Action.LOGIN_FAILED,
        actor_username=str(credentials.get("username") or ""),
    )


@receiver(user_locked_out)
def on_locked_out(sender: Any, request: HttpRequest, username: str, **kwargs: Any) -> None:
    audit.audit_record(action=AuditEvent.Action.LOCKED_OUT, actor_username=username or "")


@receiver(pre_save, sender=User)
def remember_active_flag(sender: type[User], instance: User, **kwargs: Any) -> None:
    instance._was_active = (  # type: ignore[attr-defined]
        instance.pk is not None and User.objects.filter(pk=instance.pk, is_active=True).exists()
    )


@receiver(post_save, sender=User)
def end_sessions_of_disabled_account(sender: type[User], instance: User, **kwargs: Any) -> None:
    if getattr(instance, "_was_active", False) and not instance.is_active:
        audit.user_sessions_end(user=instance, reason="disabled")
