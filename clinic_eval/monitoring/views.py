from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from clinic_eval import access
from clinic_eval.adjudication import services as adjudication_services
from clinic_eval.errors import DomainError
from clinic_eval.models import Study, User
from clinic_eval.monitoring import selectors as monitoring_selectors
from clinic_eval.monitoring import services
from clinic_eval.monitoring.forms import AdjudicationAssignForm, ReassignForm
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required


@require_GET
@coordinator_required
def study_monitor(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    context = {
        "study": study,
        "monitor": monitoring_selectors.study_monitoring(study=study),
        "reassign_form": ReassignForm(study=study),
        "backlog": monitoring_selectors.adjudication_backlog(study=study),
    }
    template = "coordinator/study_monitor.html"
    return render(
        request, f"{template}#monitor-table" if wants_partial(request) else template, context
    )


def _study_rater(
    request: AuthenticatedHttpRequest, study_id: int, rater_id: int
) -> tuple[Study, User]:
    link = access.study_rater_get_for_coordinator(
        user=request.user, study_id=study_id, rater_id=rater_id
    )
    return link.study, link.rater


@require_POST
@coordinator_required
def rater_remind(request: AuthenticatedHttpRequest, study_id: int, rater_id: int) -> HttpResponse:
    study, rater = _study_rater(request, study_id, rater_id)
    try:
        services.rater_remind(study=study, rater=rater)
        messages.success(request, f"Reminder sent to {rater.username}.")
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("coordinator:study_monitor", study_id=study.pk)


@require_POST
@coordinator_required
def rater_reassign(request: AuthenticatedHttpRequest, study_id: int, rater_id: int) -> HttpResponse:
    study, rater = _study_rater(request, study_id, rater_id)
    form = ReassignForm(request.POST, study=study)
    if not form.is_valid():
        messages.error(request, "Choose a physician in this study, or the pool.")
        return redirect("coordinator:study_monitor", study_id=study.pk)
    target = form.cleaned_data["to_rater"]
    try:
        result = services.assignments_reassign(study=study, from_rater=rater, to_rater=target)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        where = target.username if target else "the pool"
        messages.success(
            request,
            f"Moved {result.moved} of {rater.username}'s pending items to {where}; "
            f"{result.kept} stay (in progress, or {where} may not rate them); "
            f"{result.dropped_repeats} repeat showings dropped.",
        )
    return redirect("coordinator:study_monitor", study_id=study.pk)


@require_POST
@coordinator_required
def adjudication_assign(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = AdjudicationAssignForm(request.POST, study=study)
    if not form.is_valid():
        messages.error(request, "Choose an item and a physician on this study.")
        return redirect("coordinator:study_monitor", study_id=study.pk)
    adjudication = monitoring_selectors.adjudication_of_study(
        study=study, public_id=form.cleaned_data["adjudication"]
    )
    if adjudication is None:
        messages.error(request, "This study has no such item to adjudicate.")
        return redirect("coordinator:study_monitor", study_id=study.pk)
    adjudicator = form.cleaned_data["adjudicator"]
    try:
        adjudication_services.adjudication_assign(
            adjudication=adjudication, adjudicator=adjudicator
        )
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"Item {adjudication.public_id} goes to {adjudicator.username} to adjudicate."
        )
    return redirect("coordinator:study_monitor", study_id=study.pk)
