"""Small request helpers shared by the views of both apps."""

from __future__ import annotations

from django.http import HttpRequest


def wants_partial(request: HttpRequest) -> bool:
    """An htmx swap gets a template partial; a history restore (Back) needs the whole page."""
    return bool(request.htmx) and not request.htmx.history_restore_request  # type: ignore[attr-defined]
