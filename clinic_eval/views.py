from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from clinic_eval import exports, selectors, services
from clinic_eval.csvsafe import csv_safe
from clinic_eval.design import RUBRIC_MODE, DesignError
from clinic_eval.forms import (
    MET,
    NOT_MET,
    ArmCreateForm,
    DataImportForm,
    ReassignForm,
    StudyCreateForm,
    StudyDesignForm,
    StudyTransitionForm,
    judgment_input,
)
from clinic_eval.http import export_filters, logged_download, wants_partial
from clinic_eval.models import Assignment, AuditEvent, Judgment, Study, StudyRater, User
from clinic_eval.permissions import coordinator_required, physician_required
from clinic_eval.power import views as power_views
from clinic_eval.results import results_context
from clinic_eval.study_config import PLAN_FAMILIES, position_letter

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
    if wants_partial(request):
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
    if not wants_partial(request):
        return render(request, "coordinator/import_detail.html", context)
    response = render(request, "coordinator/import_detail.html#import-status", context)
    if data_import.is_finished:
        # 286 tells htmx to stop polling; the body still replaces the spinner with the outcome.
        return HttpResponseStopPolling(response.content)
    return response


# --- Physicians: the blinded rating queue ---------------------------------------------------

HALLUCINATION_LABELS = {
    "none": "No hallucination",
    "factual": "Factual error",
    "reasoning": "Reasoning error",
    "minor": "Minor",
    "major": "Major",
}


def _choice_label(key: str) -> str:
    return HALLUCINATION_LABELS.get(key, key.replace("_", " ").capitalize())


def _shortcut_keys(keys: list[str], reserved: set[str]) -> dict[str, str]:
    """A one-key shortcut per option: the first letter of its name that no other option and
    no preference choice uses (minor -> M, major -> J), else a digit."""
    shortcuts: dict[str, str] = {}
    for index, key in enumerate(keys):
        free = [
            c for c in key.lower() if c.isalpha() and c not in reserved | set(shortcuts.values())
        ]
        shortcuts[key] = free[0] if free else str(index + 1)
    return shortcuts


def _judgment_values(
    judgment: Judgment | None, grades: Iterable[tuple[str, int, bool, str]] = ()
) -> dict[str, str]:
    if judgment is None:
        return {}
    values = {"preference": judgment.preference, "rationale": judgment.rationale}
    for letter, number, met, note in grades:
        values[f"{letter}-c{number}"] = MET if met else NOT_MET
        values[f"{letter}-c{number}-note"] = note
    for rating in judgment.ratings.all():
        letter = position_letter(rating.position)
        for key, score in rating.scores.items():
            values[f"{letter}-{key}"] = str(score)
        values[f"{letter}-hallucination"] = rating.hallucination
        values[f"{letter}-severity"] = rating.severity
        values[f"{letter}-note"] = rating.note
    return values


# Y answers "yes" (met, or the undesirable behaviour occurred), N "no".
GRADE_WORDING = {
    False: ((MET, "Met", "y"), (NOT_MET, "Not met", "n")),
    True: ((MET, "Occurred", "y"), (NOT_MET, "Did not occur", "n")),
}


def _grading_form(item: selectors.RatingItem, values: dict, errors: dict) -> dict:
    """Rubric mode: per response, a met / not-met question and a note on every criterion.

    A criterion with negative points describes something undesirable; its question asks
    whether that occurred, so "met" never reads as praise."""
    responses = []
    for shown in item.responses:
        letter = shown.letter
        criteria = []
        for criterion in item.criteria:
            name = f"{letter}-c{criterion.number}"
            criteria.append(
                {
                    "name": name,
                    "number": criterion.number,
                    "text": criterion.text,
                    "points": criterion.points,
                    "undesirable": criterion.undesirable,
                    "options": [
                        {"value": value, "label": label, "key": key}
                        for value, label, key in GRADE_WORDING[criterion.undesirable]
                    ],
                    "value": values.get(name, ""),
                    "error": errors.get(f"{letter}.c{criterion.number}"),
                    "note_name": f"{name}-note",
                    "note": values.get(f"{name}-note", ""),
                    "note_error": errors.get(f"{letter}.c{criterion.number}.note"),
                }
            )
        responses.append({"letter": letter, "text": shown.text, "criteria": criteria})
    design = item.study.design
    return {
        "rubric_mode": True,
        "responses": responses,
        "grades_error": errors.get("grades") or errors.get("ratings"),
        "rationale": values.get("rationale", ""),
        "rationale_error": errors.get("rationale"),
        "rationale_required": design.get("rationale_required", False),
    }


def _rating_form(item: selectors.RatingItem, values: dict, errors: dict) -> dict:
    """The rating form as plain nested data, so the template only loops and prints."""
    if item.is_rubric:
        return _grading_form(item, values, errors)
    rubric, design = item.study.rubric, item.study.design
    flag = rubric["hallucination"]
    reserved = {
        "t",
        "x",
        *(choice.lower() for choice in item.preference_choices if len(choice) == 1),
    }
    type_keys = _shortcut_keys(flag["types"], reserved)
    severity_keys = _shortcut_keys(flag["severities"], reserved | set(type_keys.values()))
    responses = []
    for shown in item.responses:
        letter = shown.letter
        dimensions = []
        for dimension in rubric["dimensions"]:
            name = f"{letter}-{dimension['key']}"
            anchors = {int(k): v for k, v in dimension.get("anchors", {}).items()}
            scale = range(dimension["scale_min"], dimension["scale_max"] + 1)
            dimensions.append(
                {
                    "name": name,
                    "title": dimension["title"],
                    "options": [
                        {"value": str(v), "key": str(v), "anchor": anchors.get(v, "")}
                        for v in scale
                    ],
                    "value": str(values.get(name, "")),
                    "error": errors.get(f"{letter}.{dimension['key']}"),
                }
            )
        responses.append(
            {
                "letter": letter,
                "text": shown.text,
                "dimensions": dimensions,
                "hallucination": {
                    "name": f"{letter}-hallucination",
                    "options": [
                        {"value": k, "key": type_keys[k], "label": _choice_label(k)}
                        for k in flag["types"]
                    ],
                    "value": values.get(f"{letter}-hallucination", ""),
                    "error": errors.get(f"{letter}.hallucination"),
                },
                "severity": {
                    "name": f"{letter}-severity",
                    "options": [
                        {"value": k, "key": severity_keys[k], "label": _choice_label(k)}
                        for k in flag["severities"]
                    ],
                    "value": values.get(f"{letter}-severity", ""),
                    "error": errors.get(f"{letter}.severity"),
                },
                "note_name": f"{letter}-note",
                "note": values.get(f"{letter}-note", ""),
                "note_error": errors.get(f"{letter}.note"),
            }
        )
    preference_labels = {
        Judgment.Preference.TIE: ("Tie", "t"),
        Judgment.Preference.NONE: (
            "Both unacceptable" if len(item.responses) == 2 else "None acceptable",
            "x",
        ),
    }
    preferences = []
    for choice in item.preference_choices:
        label, key = preference_labels.get(choice, (f"Response {choice}", choice.lower()))
        preferences.append({"value": choice, "label": label, "key": key})
    return {
        "responses": responses,
        "hallucination_enabled": flag["enabled"],
        "note_allowed": flag["note_allowed"],
        "preferences": preferences,
        "preference": values.get("preference", ""),
        "preference_error": errors.get("preference") or errors.get("ratings"),
        "rationale": values.get("rationale", ""),
        "rationale_error": errors.get("rationale"),
        "rationale_required": design.get("rationale_required", False),
        "best_of_n": design.get("mode") == "best_of_n",
    }


def _render_item(
    request: HttpRequest,
    assignment: Assignment,
    *,
    values: dict | None = None,
    errors: dict | None = None,
    status: int = 200,
) -> HttpResponse:
    item = selectors.rating_item(assignment=assignment)
    if values is None:
        values = _judgment_values(item.judgment, item.grades)
    context = {
        "item": item,
        "form": _rating_form(item, values, errors or {}),
        "revision": item.judgment.revision if item.judgment else 0,
        "is_edit": item.judgment is not None,
        "errors": errors or {},
    }
    template = "rater/item.html#rating-item" if wants_partial(request) else "rater/item.html"
    response = render(request, template, context, status=status)
    if wants_partial(request):
        response["HX-Push-Url"] = reverse("rater:item", args=[assignment.public_id])
    return response


def _queue_done(request: HttpRequest, study: Study) -> HttpResponse:
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
def rater_home(request: HttpRequest) -> HttpResponse:
    context = {"studies": selectors.rater_studies(rater=request.user)}
    return render(request, "rater/home.html", context)


@require_POST
@physician_required
def rater_next(request: HttpRequest, study_id: str) -> HttpResponse:
    study = selectors.study_get_for_rater(user=request.user, public_id=study_id)
    assignment = services.assignment_next(rater=request.user, study=study)
    if assignment is None:
        return redirect("rater:rated", study_id=study.public_id)
    return redirect("rater:item", public_id=assignment.public_id)


@require_http_methods(["GET", "POST"])
@physician_required
def rater_item(request: HttpRequest, public_id: str) -> HttpResponse:
    assignment = selectors.assignment_get_for_rater(user=request.user, public_id=public_id)
    if request.method == "GET":
        return _render_item(request, assignment)
    study = assignment.study
    criteria = None
    if study.design.get("mode") == RUBRIC_MODE:
        criteria = len(selectors.case_criteria(case=assignment.comparison.case))
    data, revision, reason = judgment_input(
        request.POST, positions=len(assignment.shown_order), rubric=study.rubric, criteria=criteria
    )
    try:
        _, outcome = services.judgment_record(
            assignment=assignment, rater=request.user, data=data, revision=revision, reason=reason
        )
    except services.JudgmentInvalid as exc:
        # htmx swaps only 2xx responses by default, so the form with its errors comes as 200.
        status = 200 if wants_partial(request) else 422
        return _render_item(
            request, assignment, values=request.POST.dict(), errors=exc.errors, status=status
        )
    except services.DomainError as exc:
        messages.warning(request, str(exc))
        return _render_item(request, assignment, status=200 if wants_partial(request) else 409)
    if outcome == "updated":
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
def rater_rated(request: HttpRequest, study_id: str) -> HttpResponse:
    study = selectors.study_get_for_rater(user=request.user, public_id=study_id)
    context = {
        "study": study,
        "progress": selectors.rater_progress(rater=request.user, study=study),
        "items": selectors.rater_done_items(rater=request.user, study=study),
    }
    return render(request, "rater/queue_done.html", context)


# --- Coordinator: design, balance and monitoring --------------------------------------------


@require_http_methods(["GET", "POST"])
@coordinator_required
def study_design(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = StudyDesignForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        try:
            services.study_design_update(study=study, **form.to_config())
        except services.DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Design saved. Check its balance below, then open the study.")
            return redirect("coordinator:study_design", study_id=study.pk)
    return render_design_page(request, study, form=form)


def render_design_page(
    request: HttpRequest,
    study: Study,
    *,
    form: StudyDesignForm | None = None,
    power_form: Any = None,
) -> HttpResponse:
    """The design page, with its planner card (the planner's own views render it too)."""
    frozen = study.status in services.rating.FROZEN_STATUSES
    context = {
        "study": study,
        "form": form or StudyDesignForm(None, study=study),
        "frozen": frozen,
        "summary": selectors.design_summary(study=study) if frozen else None,
        "transition_form": StudyTransitionForm(),
        **power_views.power_context(study, request.user, power_form),
        "plan_families": PLAN_FAMILIES,
    }
    return render(request, "coordinator/study_design.html", context)


@require_GET
@coordinator_required
def study_design_preview(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    context: dict = {"study": study}
    try:
        context["summary"] = selectors.design_preview(study=study)
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
def study_design_csv(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    seats = list(selectors.design_seats(study=study))
    orders = selectors.seat_arm_order(seats)
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
            seat.status,
        )
        for seat in seats
    )
    header = [
        "design_hash", "rater", "queue_position", "case_id", "stratum",
        "arm_set", "shown_order", "repeat", "status",
    ]  # fmt: skip
    return _csv_response(f"study-{study.pk}-design.csv", header, rows)


@require_GET
@coordinator_required
def study_balance_csv(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    summary = selectors.design_summary(study=study)
    rows = ((r.rater, r.arm_set, r.order, r.count) for r in summary.balance)
    header = ["rater", "arm_set", "shown_order", "count"]
    return _csv_response(f"study-{study.pk}-balance.csv", header, rows)


@require_GET
@coordinator_required
def study_monitor(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    context = {
        "study": study,
        "monitor": selectors.study_monitoring(study=study),
        "reassign_form": ReassignForm(study=study),
    }
    template = "coordinator/study_monitor.html"
    return render(
        request, f"{template}#monitor-table" if wants_partial(request) else template, context
    )


def _study_rater(request: HttpRequest, study_id: int, rater_id: int) -> tuple[Study, User]:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    link = get_object_or_404(
        StudyRater.objects.select_related("rater"), study=study, rater=rater_id
    )
    return study, link.rater


@require_POST
@coordinator_required
def rater_remind(request: HttpRequest, study_id: int, rater_id: int) -> HttpResponse:
    study, rater = _study_rater(request, study_id, rater_id)
    try:
        services.rater_remind(study=study, rater=rater)
        messages.success(request, f"Reminder sent to {rater.username}.")
    except services.DomainError as exc:
        messages.error(request, str(exc))
    return redirect("coordinator:study_monitor", study_id=study.pk)


@require_POST
@coordinator_required
def rater_reassign(request: HttpRequest, study_id: int, rater_id: int) -> HttpResponse:
    study, rater = _study_rater(request, study_id, rater_id)
    form = ReassignForm(request.POST, study=study)
    if not form.is_valid():
        messages.error(request, "Choose a physician in this study, or the pool.")
        return redirect("coordinator:study_monitor", study_id=study.pk)
    target = form.cleaned_data["to_rater"]
    try:
        result = services.assignments_reassign(study=study, from_rater=rater, to_rater=target)
    except services.DomainError as exc:
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


# --- Coordinator: results and exports -------------------------------------------------------


@require_GET
@coordinator_required
def study_export(request: HttpRequest, study_id: int, name: str = "zip") -> StreamingHttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    return logged_download(request, study, name)


AUDIT_PAGE_SIZE = 100


@require_GET
@coordinator_required
def study_audit(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    action = request.GET.get("action", "")
    if action not in AuditEvent.Action.values:
        action = ""
    events = selectors.study_audit_events(study=study, action=action)
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


def _primary_label(study: Study) -> str:
    primary = study.analysis_plan.get("primary", {})
    if not (primary.get("arm_a") and primary.get("arm_b")):
        return ""
    if primary.get("kind") == "likert":
        return f"{primary.get('dimension')}: {primary['arm_a']} vs {primary['arm_b']}"
    return f"Preference: {primary['arm_a']} vs {primary['arm_b']}"


@require_GET
@coordinator_required
def study_results(request: HttpRequest, study_id: int) -> HttpResponse:
    study = selectors.study_get_for_coordinator(user=request.user, study_id=study_id)
    filters = export_filters(request)
    key = f"results:{study.pk}:{filters.stratum}:{selectors.study_data_version(study=study)}"
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
