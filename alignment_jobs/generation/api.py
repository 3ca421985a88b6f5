"""Coordinator API for generation: specs and jobs, with the same access checks as the pages."""

from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from alignment_jobs.generation import jobs, selectors, specs
from alignment_jobs.models import GenerationJob, GenerationSpec
from clinic_eval import access
from clinic_eval.errors import DomainError
from clinic_eval.web.api import PAGE_PARAMETER, AuthenticatedRequest, BaseApi, paginated
from clinic_eval.web.permissions import IsCoordinator


class CoordinatorApi(BaseApi):
    permission_classes = [IsCoordinator]


def _refused(exc: DomainError) -> Response:
    if isinstance(exc, jobs.QueueUnavailable):
        # Not the request's fault: the same request succeeds once the broker is back.
        return Response(
            {"detail": str(exc), "retryable": True},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(jobs.QUEUE_RETRY_AFTER_SECONDS)},
        )
    return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)


class QueueUnavailableOutput(serializers.Serializer):
    detail = serializers.CharField()
    retryable = serializers.BooleanField(help_text="Send the same request again later")


class SpecOutput(serializers.ModelSerializer):
    class Meta:
        model = GenerationSpec
        fields = [
            "arm",
            *specs.GENERATION_FIELDS,
            "template_version",
            "base_config_sha256",
            "adapter_config_sha256",
            "updated_at",
        ]


class SpecInput(serializers.Serializer):
    base_model_path = serializers.CharField(max_length=500)
    adapter_path = serializers.CharField(max_length=500, required=False, allow_blank=True)
    system_prompt = serializers.CharField(required=False, allow_blank=True)
    user_template = serializers.CharField(required=False)
    use_chat_template = serializers.BooleanField(required=False)
    few_shot_k = serializers.IntegerField(min_value=0, max_value=16, required=False)
    few_shot_pool = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=10_000
    )
    temperature = serializers.FloatField(min_value=0, max_value=5, required=False)
    top_p = serializers.FloatField(min_value=0.01, max_value=1, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=32_768, required=False)
    n_samples = serializers.IntegerField(min_value=1, max_value=16, required=False)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    dtype = serializers.ChoiceField(choices=GenerationSpec.Dtype.choices, required=False)
    tensor_parallel_size = serializers.IntegerField(min_value=1, max_value=16, required=False)


class SpecApi(CoordinatorApi):
    @extend_schema(responses=SpecOutput)
    def get(self, request: AuthenticatedRequest, study_id: int, arm_id: int) -> Response:
        arm = access.arm_get_for_coordinator(user=request.user, study_id=study_id, arm_id=arm_id)
        spec = selectors.spec_for_arm(arm=arm)
        if spec is None:
            return Response({"detail": "no generation settings yet"}, status=404)
        return Response(SpecOutput(spec).data)

    @extend_schema(request=SpecInput, responses=SpecOutput)
    def put(self, request: AuthenticatedRequest, study_id: int, arm_id: int) -> Response:
        arm = access.arm_get_for_coordinator(user=request.user, study_id=study_id, arm_id=arm_id)
        payload = SpecInput(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            spec = specs.spec_save(arm=arm, **payload.validated_data)
        except DomainError as exc:
            return _refused(exc)
        return Response(SpecOutput(spec).data)


PROGRESS_FIELDS = (
    "done",
    "failed",
    "pending",
    "cancelled",
    "percent",
    "completion_tokens",
    "tokens_per_second",
    "eta_seconds",
)


class JobWorkersOutput(serializers.Serializer):
    queue = serializers.CharField()
    consumers = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="Live workers on the job's queue; null when they could not be asked",
    )
    waiting = serializers.IntegerField(allow_null=True, help_text="Messages waiting in the queue")
    heartbeat_age_seconds = serializers.FloatField(
        allow_null=True, help_text="Seconds since any of the job's shards last reported"
    )
    warning = serializers.CharField(
        allow_blank=True, help_text="Set when no worker has taken or reported on the job for long"
    )


class JobOutput(serializers.ModelSerializer):
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    pending = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    percent = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    tokens_per_second = serializers.FloatField(allow_null=True)
    eta_seconds = serializers.FloatField(allow_null=True)
    workers = JobWorkersOutput(read_only=True)

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "status",
            "engine",
            "shard_size",
            "item_count",
            *PROGRESS_FIELDS,
            "workers",
            "created_at",
            "started_at",
            "finished_at",
        ]


def _job_data(job: GenerationJob) -> dict:
    """A job from ``selectors.job_list`` costs no further query."""
    progress = selectors.job_progress(job=job, failures_shown=0)
    for name in PROGRESS_FIELDS:
        setattr(job, name, getattr(progress, name))
    job.workers = selectors.job_workers(job=job)  # type: ignore[attr-defined]
    return JobOutput(job).data


class JobInput(serializers.Serializer):
    arms = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text="Arm labels; all model arms with generation settings when left out.",
    )
    case_ids = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=100_000
    )
    stratum = serializers.CharField(required=False, allow_blank=True, default="")
    engine = serializers.ChoiceField(
        choices=GenerationJob.Engine.choices, default=GenerationJob.Engine.AUTO
    )


class JobListApi(CoordinatorApi):
    @extend_schema(
        parameters=[PAGE_PARAMETER],
        responses=paginated(JobOutput),
        operation_id="studies_jobs_list",
    )
    def get(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.job_list(study=study), request, view=self)
        # None only without a page size, and REST_FRAMEWORK sets PAGE_SIZE.
        assert page is not None
        return paginator.get_paginated_response([_job_data(job) for job in page])

    @extend_schema(request=JobInput, responses={201: JobOutput, 503: QueueUnavailableOutput})
    def post(self, request: AuthenticatedRequest, study_id: int) -> Response:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        payload = JobInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        arms = None
        if "arms" in data:
            by_label = {arm.label: arm for arm in study.arms.all()}
            unknown = [label for label in data["arms"] if label not in by_label]
            if unknown:
                return Response(
                    {"detail": f"no such arm(s): {', '.join(unknown)}"},
                    status=status.HTTP_400_BAD_REQUEST,
                )
            arms = [by_label[label] for label in data["arms"]]
        try:
            job = jobs.job_launch(
                study=study,
                created_by=request.user,
                arms=arms,
                case_ids=data.get("case_ids"),
                stratum=data["stratum"],
                engine=data["engine"],
            )
        except DomainError as exc:
            return _refused(exc)
        return Response(_job_data(job), status=status.HTTP_201_CREATED)


class JobDetailApi(CoordinatorApi):
    @extend_schema(responses=JobOutput)
    def get(self, request: AuthenticatedRequest, study_id: int, job_id: int) -> Response:
        job = selectors.job_get_for_coordinator(user=request.user, study_id=study_id, job_id=job_id)
        return Response(_job_data(job))


def _job_action(
    request: AuthenticatedRequest, study_id: int, job_id: int, action: Callable
) -> Response:
    job = selectors.job_get_for_coordinator(user=request.user, study_id=study_id, job_id=job_id)
    try:
        job = action(job=job)
    except DomainError as exc:
        return _refused(exc)
    return Response(_job_data(job))


class JobCancelApi(CoordinatorApi):
    @extend_schema(request=None, responses=JobOutput)
    def post(self, request: AuthenticatedRequest, study_id: int, job_id: int) -> Response:
        return _job_action(request, study_id, job_id, jobs.job_cancel)


class JobRetryFailedApi(CoordinatorApi):
    @extend_schema(request=None, responses={200: JobOutput, 503: QueueUnavailableOutput})
    def post(self, request: AuthenticatedRequest, study_id: int, job_id: int) -> Response:
        return _job_action(request, study_id, job_id, jobs.job_retry_failed)
