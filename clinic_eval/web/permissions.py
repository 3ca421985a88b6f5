"""Role checks. Object checks live in selectors (``*_get_for_coordinator``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBase
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from clinic_eval.web.http import AuthenticatedHttpRequest

# Any response: a download view returns a StreamingHttpResponse.
View = Callable[..., HttpResponseBase]


def coordinator_required(view: View) -> View:
    """Anonymous users go to the login page; signed-in non-coordinators get 403."""

    @login_required
    @wraps(view)
    def wrapped(request: AuthenticatedHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_coordinator:
            raise PermissionDenied("This page is for study coordinators.")
        return view(request, *args, **kwargs)

    return wrapped


def physician_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapped(request: AuthenticatedHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_physician:
            raise PermissionDenied("This page is for physicians rating a study.")
        return view(request, *args, **kwargs)

    return wrapped


class IsCoordinator(BasePermission):
    message = "This endpoint is for study coordinators."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_coordinator)


class IsPhysician(BasePermission):
    message = "This endpoint is for physicians rating a study."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_physician)
