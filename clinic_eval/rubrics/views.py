"""Criteria rubrics in the browser: the coordinator's overview, import, export and edits, and
the physician's verification queue (blinded: nothing says how or by which arm a rubric was made).

The criteria list is one set of partials (``rubrics/_criteria.html``) shared by both pages; an
htmx edit swaps the one row and refreshes the page's status panel out of band, so the version a
physician verifies is always the one their page shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from clinic_eval import access
from clinic_eval.audit import services
from clinic_eval.errors import DomainError
from clinic_eval.models import CaseRubric, RubricCriterion, User
from clinic_eval.rubrics import selectors as rubric_reads
from clinic_eval.rubrics import services as rubrics_services
from clinic_eval.rubrics.forms import (
    CriterionForm,
    RubricFilterForm,
    RubricImportForm,
    SeenVersionForm,
)
from clinic_eval.rubrics.panels import rubric_panels_render
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required, physician_required

ADD_PREFIX = "new"


# --- The criteria list, shared by the coordinator's and the physician's page -------------------


@dataclass(frozen=True)
class Editor:
    """Where one role's criterion forms post, and which page and panel they come back to."""

    rubric: CaseRubric
    physician: bool

    @property
    def rubric_id(self) -> str:
        return rubric_reads.rubric_public_id(self.rubric)

    def url(self, name: str, criterion: RubricCriterion | None = None) -> str:
        if self.physician:
            kwargs: dict[str, Any] = {"rubric_id": self.rubric_id}
            if criterion is not None:
                kwargs["criterion_id"] = rubric_reads.criterion_public_id(criterion)
            return reverse(f"rubrics:review{name}", kwargs=kwargs)
        kwargs = {"study_id": self.rubric.study_id, "rubric_id": self.rubric.pk}
        if criterion is not None:
            kwargs["criterion_id"] = criterion.pk
        return reverse(f"rubrics:{'detail' if not name else 'criterion' + name}", kwargs=kwargs)

    @property
    def page_url(self) -> str:
        return self.url("")

    @property
    def add_url(self) -> str:
        return self.url("_add")

    @property
    def template(self) -> str:
        return "rubrics/review.html" if self.physician else "rubrics/detail.html"

    @property
    def panel(self) -> str:
        return f"{self.template}#{'verify-panel' if self.physician else 'rubric-summary'}"


@dataclass(frozen=True)
class CriterionRow:
    criterion: RubricCriterion
    key: str
    form: CriterionForm
    edit_url: str
    delete_url: str
    error: str = ""

    @property
    def open(self) -> bool:
        return bool(self.error or self.form.errors)


def _row(
    editor: Editor, criterion: RubricCriterion, form: CriterionForm | None = None, error: str = ""
) -> CriterionRow:
    key = rubric_reads.criterion_public_id(criterion)
    return CriterionRow(
        criterion=criterion,
        key=key,
        form=form or CriterionForm.for_criterion(criterion, prefix=f"c{key}"),
        edit_url=editor.url("_edit", criterion),
        delete_url=editor.url("_delete", criterion),
        error=error,
    )


def _context(
    request: AuthenticatedHttpRequest,
    editor: Editor,
    *,
    failed: CriterionRow | None = None,
    add_form: CriterionForm | None = None,
    seen_version: int | None = None,
) -> dict[str, Any]:
    rubric = editor.rubric
    rubric.refresh_from_db(fields=["version"])
    verified, required = rubric_reads.rubric_counts(rubric=rubric)
    rows = [
        failed
        if failed is not None and failed.criterion.pk == criterion.pk
        else _row(editor, criterion)
        for criterion in rubric_reads.rubric_criteria(rubric=rubric)
    ]
    seen = rubric.version if seen_version is None else seen_version
    context: dict[str, Any] = {
        "rubric": rubric,
        "study": rubric.study,
        "case": rubric.case,
        "rows": rows,
        "add_form": add_form or CriterionForm(prefix=ADD_PREFIX),
        "add_url": editor.add_url,
        "page_url": editor.page_url,
        "editable": rubric.study.status in rubric_reads.VERIFIABLE_STATUSES,
        "verified": verified,
        "required": required,
        "usable": rubric_reads.rubric_verified_enough(verified=verified, required=required),
        "seen_version": seen,
        "changed_elsewhere": seen != rubric.version,
    }
    if editor.physician:
        context["rubric_id"] = editor.rubric_id
        context["verified_by_me"] = rubric_reads.rubric_verified_by(
            rubric=rubric, user=request.user
        )
    else:
        context["history"] = rubric_reads.rubric_history(rubric=rubric)
    return context


def _page(request: AuthenticatedHttpRequest, editor: Editor, **kwargs: Any) -> HttpResponse:
    return render(request, editor.template, _context(request, editor, **kwargs))


def _seen_version(request: AuthenticatedHttpRequest, editor: Editor) -> int | None:
    """After an htmx edit: the version the page may now verify, or the one it showed if someone
    else has changed the rubric since (then the physician must reload and re-read)."""
    form = SeenVersionForm(request.POST)
    seen = form.cleaned_data["version"] if form.is_valid() else None
    if seen is None:
        return None
    if rubric_reads.rubric_changed_by_others(rubric=editor.rubric, user=request.user, since=seen):
        return seen
    return None  # everything since is this user's own doing: the page is current


def _partials(
    request: AuthenticatedHttpRequest, editor: Editor, main: str, **kwargs: Any
) -> HttpResponse:
    """The swapped fragment, then the status panel (and the add form) out of band."""
    context = _context(request, editor, seen_version=_seen_version(request, editor))
    context.update(kwargs)
    html = render_to_string(main, context, request) if main else ""
    context["oob"] = True
    html += render_to_string(editor.panel, context, request)
    if kwargs.get("fresh_add_form"):
        html += render_to_string("rubrics/_criteria.html#criterion-add", context, request)
    return HttpResponse(html)


def _criterion_add(request: AuthenticatedHttpRequest, editor: Editor) -> HttpResponse:
    form = CriterionForm(request.POST, prefix=ADD_PREFIX)
    error = ""
    if form.is_valid():
        try:
            criterion = rubrics_services.criterion_add(
                rubric=editor.rubric, author=request.user, data=form.criterion_input()
            )
        except DomainError as exc:
            error = str(exc)
        else:
            if not wants_partial(request):
                messages.success(request, "Criterion added.")
                return redirect(editor.page_url)
            return _partials(
                request,
                editor,
                "rubrics/_criteria.html#criterion-row",
                row=_row(editor, criterion),
                fresh_add_form=True,
            )
    if error:
        form.add_error(None, error)
    if not wants_partial(request):
        return _page(request, editor, add_form=form)
    context = _context(request, editor, add_form=form)
    response = render(request, "rubrics/_criteria.html#criterion-add", context)
    return reswap(retarget(response, "#criterion-add"), "outerHTML")


def _criterion_edit(
    request: AuthenticatedHttpRequest, editor: Editor, criterion: RubricCriterion
) -> HttpResponse:
    key = rubric_reads.criterion_public_id(criterion)
    form = CriterionForm.for_criterion(criterion, prefix=f"c{key}", data=request.POST)
    error = ""
    if form.is_valid():
        try:
            criterion = rubrics_services.criterion_edit(
                criterion=criterion, author=request.user, data=form.criterion_input()
            )
        except DomainError as exc:
            error = str(exc)
        else:
            if not wants_partial(request):
                messages.success(request, "Criterion saved.")
                return redirect(f"{editor.page_url}#criterion-{key}")
            row = _row(editor, criterion)
            return _partials(request, editor, "rubrics/_criteria.html#criterion-row", row=row)
    failed = _row(editor, criterion, form=form, error=error)
    if not wants_partial(request):
        return _page(request, editor, failed=failed)
    return _partials(request, editor, "rubrics/_criteria.html#criterion-row", row=failed)


def _criterion_delete(
    request: AuthenticatedHttpRequest, editor: Editor, criterion: RubricCriterion
) -> HttpResponse:
    if request.POST.get("confirm") != "yes":
        messages.info(request, "Nothing was deleted: confirm the deletion first.")
        return redirect(editor.page_url)
    try:
        rubrics_services.criterion_delete(criterion=criterion, author=request.user)
    except DomainError as exc:
        if not wants_partial(request):
            messages.error(request, str(exc))
            return redirect(editor.page_url)
        row = _row(editor, criterion, error=str(exc))
        return _partials(request, editor, "rubrics/_criteria.html#criterion-row", row=row)
    if not wants_partial(request):
        messages.success(request, "Criterion deleted.")
        return redirect(editor.page_url)
    return _partials(request, editor, "")  # the row goes; the panel shows the new version


# --- Coordinator: overview, import, export, detail ---------------------------------------------


@require_GET
@coordinator_required
def rubric_overview(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    filters = RubricFilterForm(request.GET)
    chosen = filters.cleaned_data if filters.is_valid() else {}
    overview = rubric_reads.rubric_overview(
        study=study,
        stratum=chosen.get("stratum", ""),
        state=chosen.get("state", ""),
        source=chosen.get("source", ""),
    )
    context = {"study": study, "overview": overview, "filters": filters}
    if wants_partial(request):
        return render(request, "rubrics/overview.html#rubric-table", context)
    context["panels"] = rubric_panels_render(request=request, study=study)
    return render(request, "rubrics/overview.html", context)


def _import_errors(message: str) -> list[str]:
    """The service's ``line N: …`` problems one per entry; a line's own list stays with it."""
    errors: list[str] = []
    for part in message.split("; "):
        if errors and not part.startswith("line "):
            errors[-1] += f"; {part}"
        else:
            errors.append(part)
    return errors


@require_http_methods(["GET", "POST"])
@coordinator_required
def rubric_import(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = RubricImportForm(request.POST or None, request.FILES or None)
    errors: list[str] = []
    if request.method == "POST" and form.is_valid():
        try:
            stored = rubrics_services.rubrics_import(
                study=study, text=form.cleaned_data["file"], imported_by=request.user
            )
        except DomainError as exc:
            errors = _import_errors(str(exc))
        else:
            messages.success(request, f"Imported {len(stored)} rubric(s).")
            return redirect("rubrics:overview", study_id=study.pk)
    status = 400 if errors or form.errors else 200
    context = {"study": study, "form": form, "errors": errors}
    return render(request, "rubrics/import.html", context, status=status)


@require_GET
@coordinator_required
def rubric_export(request: AuthenticatedHttpRequest, study_id: int) -> StreamingHttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    rubrics = rubric_reads.rubrics_for_export(study=study)
    log = services.export_log_start(
        study=study, user=request.user, what="rubrics.jsonl", filters={}, via="web"
    )

    def logged() -> Iterator[bytes]:
        rows = 0
        for line in rubrics_services.rubrics_jsonl(rubrics):
            rows += 1
            yield line.encode()
        services.export_log_finish(log=log, row_count=rows)

    response = StreamingHttpResponse(logged(), content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="study-{study.pk}-rubrics.jsonl"'
    return response


@require_GET
@coordinator_required
def rubric_detail(request: AuthenticatedHttpRequest, study_id: int, rubric_id: int) -> HttpResponse:
    rubric = rubric_reads.rubric_get_for_coordinator(
        user=request.user, study_id=study_id, rubric_id=rubric_id
    )
    return _page(request, Editor(rubric, physician=False))


@require_POST
@coordinator_required
def criterion_add(request: AuthenticatedHttpRequest, study_id: int, rubric_id: int) -> HttpResponse:
    rubric = rubric_reads.rubric_get_for_coordinator(
        user=request.user, study_id=study_id, rubric_id=rubric_id
    )
    return _criterion_add(request, Editor(rubric, physician=False))


@require_POST
@coordinator_required
def criterion_edit(
    request: AuthenticatedHttpRequest, study_id: int, rubric_id: int, criterion_id: int
) -> HttpResponse:
    criterion = rubric_reads.criterion_get_for_coordinator(
        user=request.user, study_id=study_id, rubric_id=rubric_id, criterion_id=criterion_id
    )
    return _criterion_edit(request, Editor(criterion.rubric, physician=False), criterion)


@require_POST
@coordinator_required
def criterion_delete(
    request: AuthenticatedHttpRequest, study_id: int, rubric_id: int, criterion_id: int
) -> HttpResponse:
    criterion = rubric_reads.criterion_get_for_coordinator(
        user=request.user, study_id=study_id, rubric_id=rubric_id, criterion_id=criterion_id
    )
    return _criterion_delete(request, Editor(criterion.rubric, physician=False), criterion)


# --- Physicians: the verification queue --------------------------------------------------------


@require_GET
@physician_required
def rubric_queue(request: AuthenticatedHttpRequest) -> HttpResponse:
    queue = rubric_reads.rubric_queue_for_physician(user=request.user)
    template = "rubrics/queue.html"
    if wants_partial(request):
        template += "#queue-summary"
    return render(request, template, {"queue": queue})


@require_GET
@physician_required
def rubric_review(request: AuthenticatedHttpRequest, rubric_id: str) -> HttpResponse:
    rubric = rubric_reads.rubric_get_for_physician(user=request.user, rubric_id=rubric_id)
    return _page(request, Editor(rubric, physician=True))


@require_POST
@physician_required
def review_add(request: AuthenticatedHttpRequest, rubric_id: str) -> HttpResponse:
    rubric = rubric_reads.rubric_get_for_physician(user=request.user, rubric_id=rubric_id)
    return _criterion_add(request, Editor(rubric, physician=True))


@require_POST
@physician_required
def review_edit(
    request: AuthenticatedHttpRequest, rubric_id: str, criterion_id: str
) -> HttpResponse:
    criterion = rubric_reads.criterion_get_for_physician(
        user=request.user, rubric_id=rubric_id, criterion_id=criterion_id
    )
    return _criterion_edit(request, Editor(criterion.rubric, physician=True), criterion)


@require_POST
@physician_required
def review_delete(
    request: AuthenticatedHttpRequest, rubric_id: str, criterion_id: str
) -> HttpResponse:
    criterion = rubric_reads.criterion_get_for_physician(
        user=request.user, rubric_id=rubric_id, criterion_id=criterion_id
    )
    return _criterion_delete(request, Editor(criterion.rubric, physician=True), criterion)


@require_POST
@physician_required
def rubric_verify(request: AuthenticatedHttpRequest, rubric_id: str) -> HttpResponse:
    rubric = rubric_reads.rubric_get_for_physician(user=request.user, rubric_id=rubric_id)
    form = SeenVersionForm(request.POST)
    version = form.cleaned_data["version"] if form.is_valid() else None
    if version is None:
        messages.error(request, "Review the rubric, then use its Verify button.")
        return redirect("rubrics:review", rubric_id=rubric_id)
    try:
        rubrics_services.rubric_verify(rubric=rubric, physician=request.user, version=version)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("rubrics:review", rubric_id=rubric_id)
    messages.success(request, "Rubric verified. Thank you.")
    return redirect(_next_to_verify(request.user, rubric))


def _next_to_verify(user: User, rubric: CaseRubric) -> str:
    for entry in rubric_reads.rubric_queue_for_physician(user=user):
        if entry.study.pk == rubric.study_id and entry.rubrics:
            return reverse("rubrics:review", kwargs={"rubric_id": entry.rubrics[0].public_id})
    return reverse("rubrics:queue")
