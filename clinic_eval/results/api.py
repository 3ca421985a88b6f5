from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request

from clinic_eval import access
from clinic_eval.audit import services
from clinic_eval.results import exports
from clinic_eval.results.downloads import export_filters, logged_download
from clinic_eval.statistics.report import report_json
from clinic_eval.web.api import AuthenticatedRequest, CoordinatorApi, StratumQuery

STRATUM_PARAMETER = OpenApiParameter(
    "stratum", str, description="Only the cases of this stratum (recorded in the export log)."
)


# A stratum that cannot be a stratum at all (a NUL character): field errors.
BAD_FILTER = {(400, "application/json"): OpenApiTypes.OBJECT}


def _check_filters(request: Request) -> None:
    StratumQuery(data=request.query_params).is_valid(raise_exception=True)


class StudyReportApi(CoordinatorApi):
    """The full statistical report, as ``study_report --format json`` prints it."""

    @extend_schema(
        parameters=[STRATUM_PARAMETER],
        responses={200: OpenApiTypes.OBJECT, **BAD_FILTER},
        description="Every statistic of the study (see docs/statistics.md for the structure).",
    )
    def get(self, request: AuthenticatedRequest, study_id: int) -> HttpResponse:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        _check_filters(request)
        filters = export_filters(request)
        log = services.export_log_start(
            study=study, user=request.user, what="report", filters=filters.as_dict(), via="api"
        )
        report = exports.study_report(study, filters)
        services.export_log_finish(log=log, row_count=report["counts"]["judgments"])
        return HttpResponse(report_json(report), content_type="application/json")


class StudyExportApi(CoordinatorApi):
    """The whole export as a zip: every file, the data dictionary, study.json and summaries."""

    @extend_schema(
        parameters=[STRATUM_PARAMETER],
        responses={(200, "application/zip"): OpenApiTypes.BINARY, **BAD_FILTER},
    )
    def get(self, request: AuthenticatedRequest, study_id: int) -> StreamingHttpResponse:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        _check_filters(request)
        return logged_download(request, study, "zip", via="api")


class StudyExportFileApi(CoordinatorApi):
    """One export file by name: judgments.csv, ratings.csv, hallucinations.csv, spans.csv,
    adjudications.csv, ... (every file of the zip; docs/exports.md)."""

    @extend_schema(
        parameters=[STRATUM_PARAMETER],
        responses={(200, "text/csv"): OpenApiTypes.BINARY, **BAD_FILTER},
        operation_id="studies_export_file",
    )
    def get(self, request: AuthenticatedRequest, study_id: int, name: str) -> StreamingHttpResponse:
        study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
        _check_filters(request)
        return logged_download(request, study, name, via="api")
