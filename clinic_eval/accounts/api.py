"""API sign-in: a token for a username and password, throttled like the sign-in page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response

from clinic_eval.audit.services import audit_record
from clinic_eval.models import AuditEvent

LOCKED_OUT_DETAIL = (
    "Too many failed sign-ins for this account from this address; sign-in is paused. "
    "Try again later or ask your study coordinator."
)


class TokenObtainApi(ObtainAuthToken):
    """django-axes counts the failures; this view turns its lockout into a clear 429."""

    @extend_schema(
        responses={
            200: inline_serializer("TokenOutput", {"token": serializers.CharField()}),
            400: OpenApiResponse(description="Wrong username or password."),
            415: OpenApiResponse(description="The body is not JSON, a form or multipart."),
            429: OpenApiResponse(description="Locked out after repeated failures."),
        }
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            if getattr(request, "axes_locked_out", False):
                return Response(
                    {"detail": LOCKED_OUT_DETAIL},
                    status=status.HTTP_429_TOO_MANY_REQUESTS,
                    headers={"Retry-After": str(int(settings.AXES_COOLOFF_TIME.total_seconds()))},
                )
            return Response(serializer.errors, status=status.HTTP_400_BAD_REQUEST)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        audit_record(action=AuditEvent.Action.LOGIN, actor=user, summary="API token issued")
        return Response({"token": token.key})
