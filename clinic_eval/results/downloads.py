from __future__ import annotations

from collections.abc import Iterator

from django.http import Http404, HttpRequest, StreamingHttpResponse

from clinic_eval.audit import services
from clinic_eval.models import Study
from clinic_eval.results import exports, reporting
from clinic_eval.web.api import AuthenticatedRequest
from clinic_eval.web.http import AuthenticatedHttpRequest


def export_filters(request: HttpRequest) -> exports.ExportFilters:
    return exports.ExportFilters(stratum=request.GET.get("stratum", "").strip()[:80])


def logged_download(
    request: AuthenticatedHttpRequest | AuthenticatedRequest,
    study: Study,
    name: str,
    *,
    via: str = "web",
) -> StreamingHttpResponse:
    """Stream one export file or the zip, logging who took what; 404 for an unknown name."""
    filters = export_filters(request)
    counter = exports.RowCounter()
    if name == "zip":
        chunks = exports.stream_zip(
            study,
            filters,
            counter,
            lambda: reporting.summary_files(exports.study_report(study, filters)),
        )
        filename, content_type = f"study-{study.pk}-export.zip", "application/zip"
    elif name in exports.FILES_BY_NAME:
        chunks = exports.stream_csv(exports.FILES_BY_NAME[name], study, filters, counter)
        filename, content_type = f"study-{study.pk}-{name}", "text/csv; charset=utf-8"
    else:
        raise Http404
    log = services.export_log_start(
        study=study, user=request.user, what=name, filters=filters.as_dict(), via=via
    )

    def logged() -> Iterator[bytes]:
        yield from chunks
        services.export_log_finish(log=log, row_count=counter.rows)

    response = StreamingHttpResponse(logged(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
