from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clinic_eval import access
from clinic_eval.errors import DomainError, JudgmentInvalid
from clinic_eval.models import Assignment, Study
from clinic_eval.rating import selectors, services
from clinic_eval.rating.forms import judgment_input, judgment_values, rating_form
from clinic_eval.rubrics import selectors as rubrics_selectors
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import physician_required


def _render_item(
    request: AuthenticatedHttpRequest,
    assignment: Assignment,
    *,
    values: dict | None = None,
    errors: dict | None = None,
    status: int = 200,
) -> HttpResponse:
    item = selectors.rating_item(assignment=assignment)
    if values is None:
        values = judgment_values(item.judgment, item.grades, item.spans)
    context = {
        "item": item,
        "form": rating_form(item, values, errors or {}),
        "revision": item.judgment.revision if item.judgment else 0,
        "is_edit": item.judgment is not None,
        "errors": errors or {},
    }
    template = "rater/item.html#rating-item" if wants_partial(request) else "rater/item.html"
    response = render(request, template, context, status=status)
    if wants_partial(request):
        response["HX-Push-Url"] = reverse("rater:item", args=[assignment.public_id])
    return response


def _queue_done(request: AuthenticatedHttpRequest, study: Study) -> HttpResponse:
    context = {
        "study": study,
        "progress": selectors.rater_progress(rater=request.user, study=study),
        "items": selectors.rater_done_items(rater=request.user, study=study),
    }
    if wants_partial(request):
        response = render(request, "rater/queue_done.html#queue-done", context)
        response["HX-Push-Url"] = reverse("rater:rated", args=[study.public_id])
        return response
    return render(request, "rater/queue_done.html", context)


@require_GET
@physician_required
def rater_home(request: AuthenticatedHttpRequest) -> HttpResponse:
    context = {"studies": selectors.rater_studies(rater=request.user)}
    return render(request, "rater/home.html", context)


@require_POST
@physician_required
def rater_next(request: AuthenticatedHttpRequest, study_id: str) -> HttpResponse:
    study = access.study_get_for_rater(user=request.user, public_id=study_id)
    assignment = services.assignment_next(rater=request.user, study=study)
    if assignment is None:
        return redirect("rater:rated", study_id=study.public_id)
    return redirect("rater:item", public_id=assignment.public_id)


@require_http_methods(["GET", "POST"])
@physician_required
def rater_item(request: AuthenticatedHttpRequest, public_id: str) -> HttpResponse:
    assignment = access.assignment_get_for_rater(user=request.user, public_id=public_id)
    if request.method == "GET":
        return _render_item(request, assignment)
    study = assignment.study
    criteria = None
    if study.is_rubric_mode:
        criteria = len(rubrics_selectors.case_criteria(case=assignment.comparison.case))
    data, revision, reason = judgment_input(
        request.POST, positions=len(assignment.shown_order), rubric=study.rubric, criteria=criteria
    )
    try:
        _, outcome = services.judgment_record(
            assignment=assignment, rater=request.user, data=data, revision=revision, reason=reason
        )
    except JudgmentInvalid as exc:
        # htmx swaps only 2xx responses by default, so the form with its errors comes as 200.
        status = 200 if wants_partial(request) else 422
        return _render_item(
            request, assignment, values=request.POST.dict(), errors=exc.errors, status=status
        )
    except DomainError as exc:
        messages.warning(request, str(exc))
        return _render_item(request, assignment, status=200 if wants_partial(request) else 409)
    if outcome == services.JudgmentOutcome.UPDATED:
        messages.success(request, "Your changes were saved.")
    following = services.assignment_next(rater=request.user, study=study)
    if following is None:
        if wants_partial(request):
            return _queue_done(request, study)
        return redirect("rater:rated", study_id=study.public_id)
    if wants_partial(request):
        return _render_item(request, following)
    return redirect("rater:item", public_id=following.public_id)


@require_GET
@physician_required
def rater_rated(request: AuthenticatedHttpRequest, study_id: str) -> HttpResponse:
    study = access.study_get_for_rater(user=request.user, public_id=study_id)
    context = {
        "study": study,
        "progress": selectors.rater_progress(rater=request.user, study=study),
        "items": selectors.rater_done_items(rater=request.user, study=study),
    }
    return render(request, "rater/queue_done.html", context)
