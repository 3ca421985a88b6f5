from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clinic_eval import access
from clinic_eval.config import PLAN_FAMILIES
from clinic_eval.design import selectors as design_selectors
from clinic_eval.design import services
from clinic_eval.design.forms import StudyDesignForm, StudyTransitionForm
from clinic_eval.design.planner import DesignError
from clinic_eval.design.power import views as power_views
from clinic_eval.errors import DomainError
from clinic_eval.models import Study
from clinic_eval.web.csvsafe import csv_safe
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required


@require_http_methods(["GET", "POST"])
@coordinator_required
def study_design(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = StudyDesignForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        try:
            services.study_design_update(study=study, **form.to_config())
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Design saved. Check its balance below, then open the study.")
            return redirect("coordinator:study_design", study_id=study.pk)
    return render_design_page(request, study, form=form)


def render_design_page(
    request: AuthenticatedHttpRequest,
    study: Study,
    *,
    form: StudyDesignForm | None = None,
    power_form: Any = None,
) -> HttpResponse:
    """The design page, with its planner card (the planner's own views render it too)."""
    frozen = study.is_frozen
    context = {
        "study": study,
        "form": form or StudyDesignForm(None, study=study),
        "frozen": frozen,
        "summary": design_selectors.design_summary(study=study) if frozen else None,
        "transition_form": StudyTransitionForm(),
        **power_views.power_context(study, request.user, power_form),
        "plan_families": PLAN_FAMILIES,
    }
    return render(request, "coordinator/study_design.html", context)


@require_GET
@coordinator_required
def study_design_preview(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    context: dict = {"study": study}
    try:
        context["summary"] = design_selectors.design_preview(study=study)
    except DesignError as exc:
        context["problem"] = str(exc)
    template = "coordinator/study_design.html"
    return render(
        request, f"{template}#design-preview" if wants_partial(request) else template, context
    )


def _csv_response(
    filename: str, header: list[str], rows: Iterable[Iterable[object]]
) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows([csv_safe(value) for value in row] for row in rows)
    return response


@require_GET
@coordinator_required
def study_design_csv(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    seats = list(design_selectors.design_seats(study=study))
    orders = design_selectors.seat_arm_order(seats)
    gaps = design_selectors.design_seat_gaps(seats)
    rows = (
        (
            study.design_hash,
            seat.rater.username if seat.rater else "",
            seat.queue_position,
            seat.comparison.case.external_id,
            seat.comparison.case.stratum,
            seat.comparison.arm_set,
            orders[seat.pk],
            "yes" if seat.is_repeat else "no",
            "" if gaps[seat.pk][0] is None else gaps[seat.pk][0],
            "" if gaps[seat.pk][1] is None else gaps[seat.pk][1],
            seat.status,
        )
        for seat in seats
    )
    header = [
        "design_hash", "rater", "queue_position", "case_id", "stratum",
        "arm_set", "shown_order", "repeat", "case_gap", "repeat_gap", "status",
    ]  # fmt: skip
    return _csv_response(f"study-{study.pk}-design.csv", header, rows)


@require_GET
@coordinator_required
def study_balance_csv(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    summary = design_selectors.design_summary(study=study)
    rows = ((r.rater, r.arm_set, r.order, r.count) for r in summary.balance)
    header = ["rater", "arm_set", "shown_order", "count"]
    return _csv_response(f"study-{study.pk}-balance.csv", header, rows)


@require_POST
@coordinator_required
def study_transition(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = StudyTransitionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid status.")
    else:
        try:
            study = services.study_transition(study=study, to_status=form.cleaned_data["to_status"])
            messages.success(request, f"The study is now {study.get_status_display().lower()}.")
        except DomainError as exc:
            messages.error(request, str(exc))
    return redirect("coordinator:study_detail", study_id=study.pk)
