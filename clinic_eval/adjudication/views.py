"""The adjudicator's pages: their queue, and one item with the raters' answers and the final
judgment form. Every item is reached through ``access.adjudication_get_for_adjudicator``."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from clinic_eval import access
from clinic_eval.adjudication import selectors, services
from clinic_eval.adjudication.forms import final_form, final_input
from clinic_eval.errors import DomainError, JudgmentInvalid
from clinic_eval.models import Adjudication
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import physician_required


@require_GET
@physician_required
def adjudication_queue(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The full queue page; on htmx, the summary panel the physician's home page loads."""
    queue = selectors.adjudicator_queue(user=request.user)
    template = "adjudication/queue.html"
    if wants_partial(request):
        template += "#queue-summary"
    return render(request, template, {"queue": queue})


def _render_item(
    request: AuthenticatedHttpRequest,
    adjudication: Adjudication,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    item = selectors.adjudication_item(adjudication=adjudication)
    context = {
        "item": item,
        "form": final_form(item, values or {}, errors or {}),
        "errors": errors or {},
        "next_item": selectors.adjudication_next_for(user=request.user) if item.is_done else None,
    }
    partial = wants_partial(request)
    template = "adjudication/item.html" + ("#adjudication-item" if partial else "")
    response = render(request, template, context, status=status)
    if partial:
        response["HX-Push-Url"] = reverse("rater:adjudication_item", args=[adjudication.public_id])
    return response


@require_http_methods(["GET", "POST"])
@physician_required
def adjudication_item(request: AuthenticatedHttpRequest, adjudication_id: str) -> HttpResponse:
    adjudication = access.adjudication_get_for_adjudicator(
        user=request.user, public_id=adjudication_id
    )
    if request.method == "GET":
        return _render_item(request, adjudication)
    data, reason = final_input(request.POST, adjudication=adjudication)
    try:
        recorded, outcome = services.adjudication_record(
            adjudication=adjudication, adjudicator=request.user, data=data, reason=reason
        )
    except JudgmentInvalid as exc:
        # htmx swaps only 2xx responses by default, so the form with its errors comes as 200.
        return _render_item(
            request,
            adjudication,
            values=request.POST.dict(),
            errors=exc.errors,
            status=200 if wants_partial(request) else 422,
        )
    except DomainError as exc:
        messages.warning(request, str(exc))
        adjudication.refresh_from_db()
        return _render_item(request, adjudication, status=200 if wants_partial(request) else 409)
    if outcome == services.AdjudicationOutcome.RECORDED:
        messages.success(request, "Your final judgment was recorded.")
    else:
        messages.info(request, "This final judgment was already recorded; nothing changed.")
    if wants_partial(request):
        return _render_item(request, recorded)
    return redirect("rater:adjudication_item", adjudication_id=recorded.public_id)
