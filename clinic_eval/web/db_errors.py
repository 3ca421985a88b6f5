"""A database outage answers 503 with Retry-After instead of a bare 500.

Django turns any uncaught exception, in a view or in a middleware, into a call of ``handler500``
from inside the ``except`` block, so ``sys.exc_info()`` still names the cause here. A lost
connection (PostgreSQL restarting, failing over, refusing connections) is the one failure a
client can cure by sending the same request again: every write the rater flow makes is
idempotent, so a retried submit stores the judgment exactly once.
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

RETRY_AFTER_SECONDS = 5
UNAVAILABLE_MESSAGE = (
    "The database is briefly unavailable. Nothing you entered was lost: "
    "send the same request again in a few seconds."
)


def database_unavailable() -> bool:
    _, exception, _ = sys.exc_info()
    return isinstance(exception, OperationalError | InterfaceError)


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


def server_error(request: HttpRequest) -> HttpResponse:
    if not database_unavailable():
        return HttpResponse(
            render_to_string("500.html"), status=500, content_type="text/html; charset=utf-8"
        )
    if wants_json(request):
        response: HttpResponse = JsonResponse(
            {"detail": UNAVAILABLE_MESSAGE, "retryable": True}, status=503
        )
    else:
        # No template context processors: they would query the database that is down.
        response = HttpResponse(
            render_to_string("503.html", {"message": UNAVAILABLE_MESSAGE}),
            status=503,
            content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
