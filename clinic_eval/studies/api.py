"""Coordinator API. Every view checks the role with ``IsCoordinator`` and the object with the
same selector the pages use, so a physician gets 403 and a foreign study 404."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from clinic_eval.errors import DomainError
from clinic_eval.imports import services as imports_services
from clinic_eval.imports.api import DataImportErrorsOutput
from clinic_eval.models import Arm, Case, Study
from clinic_eval.studies import selectors
from clinic_eval.studies import services as studies_services
from clinic_eval.web.api import (
    PAGE_PARAMETER,
    CoordinatorApi,
    StratumQuery,
    domain_error,
    paginated,
)


class CaseQuery(StratumQuery):
    q = serializers.CharField(required=False, allow_blank=True, default="")


class StudyOutput(serializers.ModelSerializer):
    case_count = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "id",
            "title",
            "question",
            "status",
            "seed",
            "strata",
            "decision_layers",
            "rubric",
            "design",
            "case_count",
            "created_at",
        ]

    def get_case_count(self, study: Study) -> int:
        annotated = getattr(study, "case_count", None)
        return annotated if annotated is not None else study.cases.count()


class StudyInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    question = serializers.CharField(required=False, allow_blank=True, default="")


class StudyListApi(CoordinatorApi):
    @extend_schema(
        parameters=[PAGE_PARAMETER], responses=paginated(StudyOutput), operation_id="studies_list"
    )
    def get(self, request: Request) -> Response:
        paginator = PageNumberPagination()
        studies = selectors.study_list_for_coordinator(user=request.user)
        page = paginator.paginate_queryset(studies, request, view=self)
        return paginator.get_paginated_response(StudyOutput(page, many=True).data)

    @extend_schema(request=StudyInput, responses={201: StudyOutput})
    def post(self, request: Request) -> Response:
        payload = StudyInput(data=request.data)
        payload.is_valid(raise_exception=True)
        study = studies_services.study_create(created_by=request.user, **payload.validated_data)
        return Response(StudyOutput(study).data, status=status.HTTP_201_CREATED)


class StudyDetailApi(CoordinatorApi):
    @extend_schema(responses=StudyOutput)
    def get(self, request: Request, study_id: int) -> Response:
        study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
        return Response(StudyOutput(study).data)


class CaseOutput(serializers.ModelSerializer):
    class Meta:
        model = Case
        fields = [
            "id",
            "external_id",
            "stratum",
            "narrative",
            "fields",
            "ground_truth",
            "original_text",
            "original_decision",
            "original_author_ref",
            "created_at",
        ]


class CaseInput(serializers.Serializer):
    """One case as in docs/data-format.md; the import's checks validate it."""

    case_id = serializers.CharField(max_length=64)
    stratum = serializers.CharField()
    narrative = serializers.CharField()
    fields = serializers.DictField(required=False)
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
    def get(self, request: Request, study_id: int) -> Response:
        study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
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
    def post(self, request: Request, study_id: int) -> Response:
        study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
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


class CaseDetailApi(CoordinatorApi):
    @extend_schema(responses=CaseOutput)
    def get(self, request: Request, study_id: int, case_id: int) -> Response:
        case = selectors.case_get_for_coordinator(
            user=request.user, study_id=study_id, case_id=case_id
        )
        return Response(CaseOutput(case).data)


class ArmOutput(serializers.ModelSerializer):
    response_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Arm
        fields = ["id", "label", "kind", "description", "response_count", "created_at"]


class ArmInput(serializers.Serializer):
    label = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=Arm.Kind.choices)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class ArmListApi(CoordinatorApi):
    @extend_schema(responses=ArmOutput(many=True))
    def get(self, request: Request, study_id: int) -> Response:
        study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
        return Response(ArmOutput(selectors.arm_list(study=study), many=True).data)

    @extend_schema(request=ArmInput, responses={201: ArmOutput})
    def post(self, request: Request, study_id: int) -> Response:
        study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
        payload = ArmInput(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            arm = studies_services.arm_create(study=study, **payload.validated_data)
        except DomainError as exc:
            return domain_error(exc)
        return Response(ArmOutput(arm).data, status=status.HTTP_201_CREATED)
