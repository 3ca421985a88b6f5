from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clinic_eval import access
from clinic_eval.errors import DomainError
from clinic_eval.studies import selectors, services
from clinic_eval.studies.forms import ArmCreateForm, StudyCreateForm
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required

CASES_PER_PAGE = 50


@require_http_methods(["GET", "POST"])
@coordinator_required
def study_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = StudyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        study = services.study_create(created_by=request.user, **form.cleaned_data)
        messages.success(request, f"Study “{study.title}” created. Import its cases next.")
        return redirect("coordinator:study_detail", study_id=study.pk)
    studies = access.study_list_for_coordinator(user=request.user)
    return render(request, "coordinator/study_list.html", {"studies": studies, "form": form})


def _study_detail_page(
    request: AuthenticatedHttpRequest, study_id: int, *, arm_form: ArmCreateForm | None = None
) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    overview = selectors.study_overview(study=study)
    context = {"overview": overview, "study": study, "arm_form": arm_form or ArmCreateForm()}
    return render(request, "coordinator/study_detail.html", context)


@require_GET
@coordinator_required
def study_detail(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    return _study_detail_page(request, study_id)


@require_POST
@coordinator_required
def arm_create(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = ArmCreateForm(request.POST)
    if form.is_valid():
        try:
            arm = services.arm_create(study=study, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Arm “{arm.label}” added.")
            return redirect("coordinator:study_detail", study_id=study.pk)
    return _study_detail_page(request, study_id, arm_form=form)


@require_GET
@coordinator_required
def case_list(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    stratum = request.GET.get("stratum", "")
    search = request.GET.get("q", "").strip()[:100]
    cases = selectors.case_list(study=study, stratum=stratum, search=search)
    page = Paginator(cases, CASES_PER_PAGE).get_page(request.GET.get("page"))
    context = {"study": study, "page": page, "stratum": stratum, "q": search}
    template = "coordinator/case_list.html"
    if wants_partial(request):
        template += "#case-table"
    return render(request, template, context)


@require_GET
@coordinator_required
def case_detail(request: AuthenticatedHttpRequest, study_id: int, case_id: int) -> HttpResponse:
    case = access.case_get_for_coordinator(user=request.user, study_id=study_id, case_id=case_id)
    context = {
        "study": case.study,
        "case": case,
        "responses": selectors.case_responses(case=case),
    }
    return render(request, "coordinator/case_detail.html", context)
