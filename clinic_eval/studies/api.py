"""Coordinator API. Every view checks the role with ``IsCoordinator`` and the object with the
same selector the pages use, so a physician gets 403 and a foreign study 404."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from clinic_eval import access
from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, Case, Study
from clinic_eval.studies import selectors, services
from clinic_eval.web.api import (
    PAGE_PARAMETER,
    AuthenticatedRequest,
    CoordinatorApi,
    domain_error,
    paginated,
)


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
    def get(self, request: AuthenticatedRequest) -> Response:
        paginator = PageNumberPagination()
        studies = access.study_list_for_coordinator(user=request.user)
        page = paginator.paginate_queryset(studies, request, view=self)
        return paginator.get_paginated_response(StudyOutput(page, many=True).data)

    @extend_schema(request=StudyInput, responses={201: StudyOutput})
    def post(self, request: AuthenticatedRequest) -> Response:
        payload = StudyInput(data=request.data)
        payload.is_valid(raise_exception=True)
        study = services.study_create(created_by=request.user, **payload.validated_data)
        return Response(StudyOutput(study).data, status=status.HTTP_201_CREATED)


class StudyDetailApi(CoordinatorApi):
    @extend_schema(responses=StudyOutput)
    def get(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
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


class CaseDetailApi(CoordinatorApi):
    @extend_schema(responses=CaseOutput)
    def get(self, request: AuthenticatedRequest, study_id: int, case_id: int) -> Response:
        case = access.case_get_for_coordinator(
            user=request.user, study_id=study_id, case_id=case_id
        )
        return Response(CaseOutput(case).data)


class ArmOutput(serializers.ModelSerializer):
    response_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Arm
        fields = ["id", "label", "kind", "description", "response_count", "created_at"]


class ArmInput(serializers.Serializer):
    # The metaclass moves declared fields off the class; only the stubs see Field.label here.
    label = serializers.CharField(max_length=64)  # type: ignore[assignment]
    kind = serializers.ChoiceField(choices=Arm.Kind.choices)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class ArmListApi(CoordinatorApi):
    @extend_schema(responses=ArmOutput(many=True))
    def get(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        return Response(ArmOutput(selectors.arm_list(study=study), many=True).data)

    @extend_schema(request=ArmInput, responses={201: ArmOutput})
    def post(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        payload = ArmInput(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            arm = services.arm_create(study=study, **payload.validated_data)
        except DomainError as exc:
            return domain_error(exc)
        return Response(ArmOutput(arm).data, status=status.HTTP_201_CREATED)
