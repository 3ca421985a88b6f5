from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from clinic_eval import selectors, services
from clinic_eval.forms import ArmCreateForm, DataImportForm, StudyCreateForm, StudyTransitionForm
from clinic_eval.permissions import coordinator_required, physician_required

CASES_PER_PAGE = 50


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    if request.user.is_coordinator:
        return redirect("coordinator:study_list")
    return redirect("rater:home")


@require_GET
@physician_required
def rater_home(request: HttpRequest) -> HttpResponse:
    return render(request, "rater/home.html")


# --- Coordinator: studies -------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@coordinator_required
def study_list(request: HttpRequest) -> HttpResponse:
    form = StudyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        study = services.study_create(created_by=request.user, **form.cleaned_data)
        messages.success(request, f"Study “{study.title}” created. Import its cases next.")
        return redirect("coordinator:study_detail", study_id=study.pk)
    studies = selectors.study_list_for_coordinator(user=request.user)
    return render(request, "coordinator/study_list.html", {"studies": studies, "form": form})


def _study_detail_page(
    request: HttpRequest, study_id: int, *, arm_form: ArmCreateForm | None = None
) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    overview = selectors.study_overview(study=study)
    context = {"overview": overview, "study": study, "arm_form": arm_form or ArmCreateForm()}
    return render(request, "coordinator/study_detail.html", context)


@require_GET
@coordinator_required
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    return _study_detail_page(request, study_id)


@require_POST
@coordinator_required
def study_transition(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = StudyTransitionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid status.")
    else:
        try:
            study = services.study_transition(study=study, to_status=form.cleaned_data["to_status"])
            messages.success(request, f"The study is now {study.get_status_display().lower()}.")
        except services.DomainError as exc:
            messages.error(request, str(exc))
    return redirect("coordinator:study_detail", study_id=study.pk)


@require_POST
@coordinator_required
def arm_create(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = ArmCreateForm(request.POST)
    if form.is_valid():
        try:
            arm = services.arm_create(study=study, **form.cleaned_data)
        except services.DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Arm “{arm.label}” added.")
            return redirect("coordinator:study_detail", study_id=study.pk)
    return _study_detail_page(request, study_id, arm_form=form)


# --- Coordinator: cases ---------------------------------------------------------------------


@require_GET
@coordinator_required
def case_list(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    stratum = request.GET.get("stratum", "")
    search = request.GET.get("q", "").strip()[:100]
    cases = selectors.case_list(study=study, stratum=stratum, search=search)
    page = Paginator(cases, CASES_PER_PAGE).get_page(request.GET.get("page"))
    context = {"study": study, "page": page, "stratum": stratum, "q": search}
    template = "coordinator/case_list.html"
    if request.htmx:
        template += "#case-table"
    return render(request, template, context)


@require_GET
@coordinator_required
def case_detail(request: HttpRequest, study_id: int, case_id: int) -> HttpResponse:
    case = selectors.case_get_for_coordinator(user=request.user, study_id=study_id, case_id=case_id)
    context = {
        "study": case.study,
        "case": case,
        "responses": selectors.case_responses(case=case),
    }
    return render(request, "coordinator/case_detail.html", context)


# --- Coordinator: imports -------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@coordinator_required
def import_create(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = DataImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            data_import = services.data_import_submit(
                study=study,
                kind=form.cleaned_data["kind"],
                filename=upload.name,
                content=upload.read(),
                created_by=request.user,
                file_format=form.cleaned_data["format"] or None,
            )
        except services.DomainError as exc:
            form.add_error("file", str(exc))
        else:
            return redirect(
                "coordinator:import_detail", study_id=study.pk, import_id=data_import.pk
            )
    context = {"study": study, "form": form, "imports": selectors.data_import_list(study=study)}
    return render(request, "coordinator/import_form.html", context)


@require_GET
@coordinator_required
def import_detail(request: HttpRequest, study_id: int, import_id: int) -> HttpResponse:
    data_import = selectors.data_import_get_for_coordinator(
        user=request.user, study_id=study_id, import_id=import_id
    )
    context = {"study": data_import.study, "data_import": data_import}
    if not request.htmx:
        return render(request, "coordinator/import_detail.html", context)
    response = render(request, "coordinator/import_detail.html#import-status", context)
    if data_import.is_finished:
        # 286 tells htmx to stop polling; the body still replaces the spinner with the outcome.
        return HttpResponseStopPolling(response.content)
    return response
