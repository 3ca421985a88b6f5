from __future__ import annotations

from typing import Any

from django.core.exceptions import (
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import Direction, OpenApiParameter, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.exceptions import ErrorDetail
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from clinic_eval.errors import DomainError
from clinic_eval.models import User
from clinic_eval.web.permissions import IsCoordinator


class AuthenticatedRequest(Request):
    """A request to an API view whose permission classes require a signed-in ``User``.

    For the type checker only (as ``web.http.AuthenticatedHttpRequest`` is for pages).
    """

    user: User


class DetailOutput(serializers.Serializer):
    detail = serializers.CharField()


class ApiSchema(AutoSchema):
    """Documents what DRF and the URL converters do on every endpoint and drf-spectacular
    leaves out: clients (and the fuzzer in tests/test_fuzz.py) may rely on nothing else."""

    def _resolve_path_parameters(self, variables: list[str]) -> list[dict]:
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            schema = parameter["schema"]
            # What <int:...> and <str:...> match; anything else never reaches a view.
            if schema.get("type") == "integer":
                schema["minimum"] = 0
            elif schema.get("type") == "string":
                schema["pattern"] = "^[^/]+$"
        return parameters

    def _get_response_bodies(self, direction: Direction = "response") -> dict:
        bodies = super()._get_response_bodies(direction)
        errors: dict[str, object] = {
            # No or a bad credential; the wrong role; another study's object, or a bad page.
            "401": DetailOutput,
            "403": DetailOutput,
            "404": DetailOutput,
        }
        if self.method in ("POST", "PUT", "PATCH"):
            # Field errors ({"field": ["message"]}), or {"detail": ...} for a refused action.
            errors["400"] = OpenApiTypes.OBJECT
            errors["413"] = DetailOutput
            errors["415"] = DetailOutput
        for code, serializer in errors.items():
            if code not in bodies:
                bodies[code] = self._get_response_for_code(serializer, code, direction=direction)
        return bodies


PAGE_PARAMETER = OpenApiParameter("page", int, description="1-based page number")


def paginated(output: type[serializers.Serializer]) -> serializers.Serializer:
    """The envelope ``PageNumberPagination`` wraps a page of ``output`` rows in."""
    name = output.__name__.removesuffix("Output")
    return inline_serializer(
        f"Paginated{name}List",
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": output(many=True),
        },
    )


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."


class BaseApi(APIView):
    """What every endpoint of this API shares: its documented errors, and JSON for them."""

    schema = ApiSchema()

    def handle_exception(self, exc: Exception) -> Response:
        # Django's own limits on a body (DATA_UPLOAD_MAX_*) are raised while DRF parses it;
        # left alone they become Django's HTML error page instead of an API error.
        if isinstance(exc, RequestDataTooBig):
            exc = PayloadTooLarge()
        elif isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
            exc = exceptions.ParseError(str(exc))
        return super().handle_exception(exc)


class CoordinatorApi(BaseApi):
    permission_classes = [IsCoordinator]


class StratumQuery(serializers.Serializer):
    # A CharField refuses NUL characters, which PostgreSQL cannot store or compare.
    stratum = serializers.CharField(required=False, allow_blank=True, default="")


class Shape:
    """A serializer built once and used for every request, on the rater's hot path.

    DRF deep-copies a serializer's declared fields each time one is instantiated: for the
    rating item (about 80 fields, nested) that cost more than the item's queries. Rendering
    and validating keep no state on the serializer (``to_representation`` and
    ``run_validation`` return their result or raise), so one bound instance serves every
    thread; the fields are still the serializer's, listed explicitly.
    """

    def __init__(self, serializer: serializers.Serializer) -> None:
        self.serializer = serializer
        # Bind every field now, once, rather than racing on the first requests.
        self._bind(serializer)

    @classmethod
    def _bind(cls, field: serializers.Field) -> None:
        child = getattr(field, "child", None)
        if child is not None:
            cls._bind(child)
        if isinstance(field, serializers.Serializer):
            for nested in field.fields.values():
                cls._bind(nested)

    def render(self, data: object) -> Any:
        """``Serializer(data).data``: only the declared fields, in their output form."""
        return self.serializer.to_representation(data)

    def validated(self, data: object) -> Any:
        """``Serializer(data=data)``, validated: the validated data, or DRF's
        ``ValidationError`` with the same field errors ``is_valid(raise_exception=True)``
        raises (a 400)."""
        try:
            return self.serializer.run_validation(data)
        except exceptions.ValidationError as exc:
            raise exceptions.ValidationError(_as_field_errors(exc.detail)) from None


def _as_field_errors(detail: Any) -> Any:
    # What ``Serializer.errors`` makes of a null body, which validation reports as a bare list.
    if isinstance(detail, list) and len(detail) == 1 and getattr(detail[0], "code", None) == "null":
        return {api_settings.NON_FIELD_ERRORS_KEY: [ErrorDetail("No data provided", code="null")]}
    return detail


def domain_error(exc: DomainError) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
