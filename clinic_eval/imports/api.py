from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from clinic_eval import access
from clinic_eval.errors import DomainError
from clinic_eval.imports import services
from clinic_eval.imports import services as imports_services
from clinic_eval.models import DataImport
from clinic_eval.studies import selectors
from clinic_eval.studies.api import CaseOutput
from clinic_eval.web.api import (
    PAGE_PARAMETER,
    AuthenticatedRequest,
    CoordinatorApi,
    StratumQuery,
    domain_error,
    paginated,
)


class LineErrorOutput(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True)
    message = serializers.CharField()


class DataImportErrorsOutput(serializers.Serializer):
    detail = serializers.CharField()
    # Only when cases were checked; a body that is not cases at all gets the detail alone.
    # (The metaclass moves declared fields off the class; only the stubs see Serializer.errors.)
    errors = LineErrorOutput(many=True, required=False)  # type: ignore[assignment]


class DataImportOutput(serializers.ModelSerializer):
    # The metaclass moves declared fields off the class; only the stubs see Serializer.errors.
    errors = LineErrorOutput(many=True)  # type: ignore[assignment]

    class Meta:
        model = DataImport
        fields = [
            "id",
            "kind",
            "format",
            "filename",
            "sha256",
            "size_bytes",
            "status",
            "row_count",
            "error_count",
            "errors",
            "created_at",
            "finished_at",
        ]


class DataImportInput(serializers.Serializer):
    file = serializers.FileField()
    kind = serializers.ChoiceField(choices=DataImport.Kind.choices, default=DataImport.Kind.CASES)
    format = serializers.ChoiceField(choices=DataImport.Format.choices, required=False)

    def validate_file(self, upload: UploadedFile) -> UploadedFile:
        assert upload.name is not None  # FileField refuses a file without a name
        try:
            services.data_import_check_size(filename=upload.name, size=upload.size or 0)
        except DomainError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return upload


class DataImportListApi(CoordinatorApi):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        parameters=[PAGE_PARAMETER],
        responses=paginated(DataImportOutput),
        operation_id="studies_imports_list",
    )
    def get(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        imports = selectors.data_import_list(study=study)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(imports, request, view=self)
        return paginator.get_paginated_response(DataImportOutput(page, many=True).data)

    @extend_schema(request=DataImportInput, responses={202: DataImportOutput})
    def post(self, request: AuthenticatedRequest, study_id: int) -> Response:
        """Queue a file for import; poll the returned import until it succeeds or fails."""
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        payload = DataImportInput(data=request.data)
        payload.is_valid(raise_exception=True)
        upload = payload.validated_data["file"]
        try:
            data_import = services.data_import_submit(
                study=study,
                kind=payload.validated_data["kind"],
                filename=upload.name,
                content=upload.read(),
                created_by=request.user,
                file_format=payload.validated_data.get("format"),
            )
        except DomainError as exc:
            return domain_error(exc)
        data_import.refresh_from_db()
        return Response(DataImportOutput(data_import).data, status=status.HTTP_202_ACCEPTED)


class DataImportDetailApi(CoordinatorApi):
    @extend_schema(responses=DataImportOutput)
    def get(self, request: AuthenticatedRequest, study_id: int, import_id: int) -> Response:
        data_import = access.data_import_get_for_coordinator(
            user=request.user, study_id=study_id, import_id=import_id
        )
        return Response(DataImportOutput(data_import).data)


class CaseQuery(StratumQuery):
    q = serializers.CharField(required=False, allow_blank=True, default="")


class CaseInput(serializers.Serializer):
    """One case as in docs/data-format.md; the import's checks validate it."""

    case_id = serializers.CharField(max_length=64)
    stratum = serializers.CharField()
    narrative = serializers.CharField()
    # The metaclass moves declared fields off the class; only the stubs see Serializer.fields.
    fields = serializers.DictField(required=False)  # type: ignore[assignment]
    ground_truth = serializers.DictField(required=False)
    original_decision = serializers.DictField(required=False)


class CaseListApi(CoordinatorApi):
    @extend_schema(
        parameters=[
            OpenApiParameter("stratum", str, description="Only cases of this stratum"),
            OpenApiParameter("q", str, description="Search case ids and narratives"),
            PAGE_PARAMETER,
        ],
        responses={200: paginated(CaseOutput), 400: OpenApiTypes.OBJECT},
        operation_id="studies_cases_list",
    )
    def get(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        query = CaseQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        cases = selectors.case_list(
            study=study,
            stratum=query.validated_data["stratum"],
            search=query.validated_data["q"][:100],
        )
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(cases, request, view=self)
        return paginator.get_paginated_response(CaseOutput(page, many=True).data)

    @extend_schema(
        request=CaseInput(many=True),
        responses={201: CaseOutput(many=True), 400: DataImportErrorsOutput},
        description="Create one case (an object) or several (a list), all or nothing. "
        "Errors name the 1-based position of each bad case as its line.",
    )
    def post(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        records = request.data if isinstance(request.data, list) else [request.data]
        try:
            data_import = imports_services.cases_create(
                study=study, records=records, created_by=request.user
            )
        except DomainError as exc:
            return domain_error(exc)
        if data_import.status != data_import.Status.SUCCEEDED:
            errors = DataImportErrorsOutput(
                {"detail": "nothing was created", "errors": data_import.errors}
            )
            return Response(errors.data, status=status.HTTP_400_BAD_REQUEST)
        created = data_import.cases.order_by("id")
        return Response(CaseOutput(created, many=True).data, status=status.HTTP_201_CREATED)
