from __future__ import annotations

from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from clinic_eval import access
from clinic_eval.models import Study
from clinic_eval.results import exports, viewer
from clinic_eval.results import selectors as results_selectors
from clinic_eval.results.downloads import export_filters, logged_download
from clinic_eval.results.page import results_context
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required


@require_GET
@coordinator_required
def study_export(
    request: AuthenticatedHttpRequest, study_id: int, name: str = "zip"
) -> StreamingHttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    return logged_download(request, study, name)


def _primary_label(study: Study) -> str:
    primary = study.plan_config.primary
    if not (primary.arm_a and primary.arm_b):
        return ""
    if primary.kind == "likert":
        return f"{primary.dimension}: {primary.arm_a} vs {primary.arm_b}"
    return f"Preference: {primary.arm_a} vs {primary.arm_b}"


@require_GET
@coordinator_required
def study_results(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    filters = export_filters(request)
    key = (
        f"results:{study.pk}:{filters.stratum}:{results_selectors.study_data_version(study=study)}"
    )
    results = cache.get(key)
    if results is None:
        report, tables = exports.study_analysis(study, filters)
        results = results_context(
            report,
            tables.ratings if len(tables.ratings) else None,
            interim=study.status != Study.Status.CLOSED,
            primary_label=_primary_label(study),
        )
        cache.set(key, results, timeout=24 * 3600)
    context = {
        "study": study,
        "results": results,
        "interim": study.status != Study.Status.CLOSED,
        "simulated": study.simulated_ratings,
        "stratum": filters.stratum,
    }
    return render(request, "coordinator/study_results.html", context)


@require_GET
@coordinator_required
def response_viewer(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    """Every response raters marked spans on, each rater's spans highlighted by category;
    filtered by arm and category. Part of the results, so only once the study is closed."""
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    closed = study.status == Study.Status.CLOSED
    options = viewer.viewer_options(study=study)
    filters = viewer.viewer_filters(
        options=options,
        arm=request.GET.get("arm", ""),
        category=request.GET.get("category", ""),
    )
    page = None
    rows: list[viewer.ViewedResponse] = []
    if closed:
        responses = viewer.viewer_responses(study=study, filters=filters)
        page = Paginator(responses, viewer.RESPONSES_PER_PAGE).get_page(request.GET.get("page"))
        rows = viewer.viewer_rows(study=study, responses=list(page.object_list), filters=filters)
    context = {
        "study": study,
        "closed": closed,
        "spans_enabled": study.rubric_config.spans.enabled,
        "options": options,
        "filters": filters,
        "category_title": next(
            (c.title for c in options.categories if c.key == filters.category), ""
        ),
        "page": page,
        "rows": rows,
        "simulated": study.simulated_ratings,
    }
    template = "coordinator/response_viewer.html"
    if wants_partial(request):
        template += "#viewer-results"
    return render(request, template, context)
