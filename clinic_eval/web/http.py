"""Small request helpers shared by the views of both apps, and the request types they take.

``HtmxMiddleware`` sets ``request.htmx`` on every request and ``login_required`` guarantees a
signed-in ``User``; these classes only tell the type checker so (as django-htmx's example and
healthchecks' ``hc/accounts/http.py`` do). Nothing ever constructs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

if TYPE_CHECKING:
    from clinic_eval.models import User


class HtmxHttpRequest(HttpRequest):
    """Any request to a view: it has passed through ``HtmxMiddleware``."""

    htmx: HtmxDetails


class AuthenticatedHttpRequest(HtmxHttpRequest):
    """A request to a view behind ``login_required`` (or a role decorator built on it)."""

    user: User


def wants_partial(request: HtmxHttpRequest) -> bool:
    """An htmx swap gets a template partial; a history restore (Back) needs the whole page."""
    return bool(request.htmx) and not request.htmx.history_restore_request
