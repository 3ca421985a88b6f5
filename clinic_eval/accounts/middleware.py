from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

from clinic_eval.accounts.signals import SESSION_SIGNED_IN_AT
from clinic_eval.audit import services as audit
from clinic_eval.models import AuditEvent
from clinic_eval.rating import selectors
from clinic_eval.web.error_pages import bad_request
from clinic_eval.web.security import client_ip


class RejectNulCharactersMiddleware:
    """A NUL character in the query string answers 400 before any view sees it.

    PostgreSQL text cannot hold NUL, so a filter carrying one would fail deep in a query as a
    500; forms and serializers already refuse it in bodies (Django's and DRF's validators).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if any("\x00" in value for values in request.GET.lists() for value in values[1]) or any(
            "\x00" in key for key in request.GET
        ):
            return bad_request(request, "NUL characters are not accepted in the query string.")
        return self.get_response(request)


class AuditContextMiddleware:
    """Lets services stamp audit events with the request's address and channel."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        origin = audit.AuditOrigin(
            ip_address=client_ip(request) or "",
            via="api" if request.path.startswith("/api/") else "web",
            request_user=lambda: getattr(request, "user", None),
        )
        with audit.audit_origin(origin):
            return self.get_response(request)


class SessionAbsoluteTimeoutMiddleware:
    """However active, a session ends ``SESSION_ABSOLUTE_TIMEOUT_HOURS`` after sign-in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            signed_in_at = request.session.get(SESSION_SIGNED_IN_AT)
            now = time.time()
            if signed_in_at is None:
                request.session[SESSION_SIGNED_IN_AT] = now
            elif now - float(signed_in_at) > settings.SESSION_ABSOLUTE_TIMEOUT_HOURS * 3600:
                audit.audit_record(action=AuditEvent.Action.SESSION_EXPIRED, actor=user)
                request.session_expired = True  # type: ignore[attr-defined]
                logout(request)
                if not request.path.startswith("/api/"):
                    messages.info(request, "Your session reached its time limit; sign in again.")
                    return redirect_to_login(request.get_full_path())
        return self.get_response(request)


# How often an active session's idle deadline is pushed forward (and the session saved).
SESSION_REFRESHED_AT = "refreshed_at"
SESSION_REFRESH_SECONDS = 60


class SlidingSessionMiddleware:
    """A session ends after the idle timeout: each request pushes the deadline forward.

    The deadline moves (and the session row is written) at most once every
    ``SESSION_REFRESH_SECONDS``, not on every request, which cost every page three queries;
    so a session ends between the timeout less a minute and the timeout after the last
    request. A physician's timeout is the shortest of the open studies they rate, looked up
    at the same moments.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = time.time()
            refreshed = request.session.get(SESSION_REFRESHED_AT)
            if refreshed is None or now - float(refreshed) >= SESSION_REFRESH_SECONDS:
                minutes = None
                if user.is_physician:
                    minutes = selectors.rater_idle_timeout_minutes(rater=user)
                request.session.set_expiry(minutes * 60 if minutes is not None else None)
                request.session[SESSION_REFRESHED_AT] = now
        return self.get_response(request)
