from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseStopPolling

from clinic_eval import access
from clinic_eval.errors import DomainError
from clinic_eval.imports import services
from clinic_eval.imports.forms import DataImportForm
from clinic_eval.studies import selectors
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required


@require_http_methods(["GET", "POST"])
@coordinator_required
def import_create(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
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
        except DomainError as exc:
            form.add_error("file", str(exc))
        else:
            return redirect(
                "coordinator:import_detail", study_id=study.pk, import_id=data_import.pk
            )
    context = {
        "study": study,
        "form": form,
        "imports": selectors.data_import_list(study=study),
    }
    return render(request, "coordinator/import_form.html", context)


@require_GET
@coordinator_required
def import_detail(request: AuthenticatedHttpRequest, study_id: int, import_id: int) -> HttpResponse:
    data_import = access.data_import_get_for_coordinator(
        user=request.user, study_id=study_id, import_id=import_id
    )
    context = {"study": data_import.study, "data_import": data_import}
    if not wants_partial(request):
        return render(request, "coordinator/import_detail.html", context)
    response = render(request, "coordinator/import_detail.html#import-status", context)
    if data_import.is_finished:
        # 286 tells htmx to stop polling; the body still replaces the spinner with the outcome.
        return HttpResponseStopPolling(response.content)
    return response
