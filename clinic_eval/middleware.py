from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from clinic_eval import selectors


class RaterIdleTimeoutMiddleware:
    """A physician's session ends after the idle timeout their open studies set.

    The shortest timeout of the open studies they rate wins; the expiry slides with every
    request (``SESSION_SAVE_EVERY_REQUEST``), so only idleness ends a session.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_physician:
            minutes = selectors.rater_idle_timeout_minutes(rater=user)
            if minutes is not None:
                request.session.set_expiry(minutes * 60)
        return self.get_response(request)
