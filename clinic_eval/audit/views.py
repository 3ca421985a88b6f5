from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from clinic_eval import access
from clinic_eval.audit import selectors as audit_selectors
from clinic_eval.models import AuditEvent
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required

AUDIT_PAGE_SIZE = 100


@require_GET
@coordinator_required
def study_audit(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    action = request.GET.get("action", "")
    if action not in AuditEvent.Action.values:
        action = ""
    events = audit_selectors.study_audit_events(study=study, action=action)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "study": study,
        "page": page,
        "action": action,
        "actions": AuditEvent.Action.choices,
    }
    template = "coordinator/study_audit.html"
    return render(
        request, f"{template}#audit-table" if wants_partial(request) else template, context
    )
