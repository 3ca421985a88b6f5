from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from clinic_eval.errors import DomainError
from clinic_eval.imports import selectors as imports_selectors
from clinic_eval.imports import services
from clinic_eval.models import DataImport
from clinic_eval.studies import selectors as studies_selectors
from clinic_eval.web.api import PAGE_PARAMETER, CoordinatorApi, domain_error, paginated


class LineErrorOutput(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True)
    message = serializers.CharField()


class DataImportErrorsOutput(serializers.Serializer):
    detail = serializers.CharField()
    # Only when cases were checked; a body that is not cases at all gets the detail alone.
    errors = LineErrorOutput(many=True, required=False)


class DataImportOutput(serializers.ModelSerializer):
    errors = LineErrorOutput(many=True)

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
    def get(self, request: Request, study_id: int) -> Response:
        study = studies_selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
        imports = studies_selectors.data_import_list(study=study)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(imports, request, view=self)
        return paginator.get_paginated_response(DataImportOutput(page, many=True).data)

    @extend_schema(request=DataImportInput, responses={202: DataImportOutput})
    def post(self, request: Request, study_id: int) -> Response:
        """Queue a file for import; poll the returned import until it succeeds or fails."""
        study = studies_selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
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
    def get(self, request: Request, study_id: int, import_id: int) -> Response:
        data_import = imports_selectors.data_import_get_for_coordinator(
            user=request.user, study_id=study_id, import_id=import_id
        )
        return Response(DataImportOutput(data_import).data)
