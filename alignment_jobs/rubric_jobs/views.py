"""Coordinator actions for model rubric work: draft with an arm, grade with an arm, progress."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from alignment_jobs.generation.forms import split_ids
from alignment_jobs.rubric_jobs import drafting, engine_use, grading
from alignment_jobs.rubric_jobs import selectors as rubric_selectors
from clinic_eval.access import study_get_for_coordinator
from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, Study
from clinic_eval.web.http import AuthenticatedHttpRequest
from clinic_eval.web.permissions import coordinator_required

TEMPLATE = "alignment_jobs/_rubric_actions.html"


class _ArmForm(forms.Form):
    arm = forms.ModelChoiceField(queryset=Arm.objects.none(), empty_label=None)
    engine = forms.ChoiceField(
        choices=[(name, name) for name in engine_use.ENGINE_CHOICES], initial="auto"
    )

    def __init__(self, *args: Any, study: Study, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        arm_ids = [arm.pk for arm in rubric_selectors.rubric_arms(study=study)]
        arm_field = cast(forms.ModelChoiceField, self.fields["arm"])
        arm_field.queryset = study.arms.filter(pk__in=arm_ids).order_by("label")


class RubricDraftForm(_ArmForm):
    case_ids = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Leave empty for every case without a rubric.",
    )
    replace = forms.BooleanField(
        required=False, help_text="Draft again where a draft has not been edited or verified."
    )

    def clean_case_ids(self) -> list[str] | None:
        return split_ids(self.cleaned_data["case_ids"]) or None


class RubricGradeForm(_ArmForm):
    method = forms.ChoiceField(
        choices=[(name, name) for name in engine_use.GRADE_METHODS], initial="auto"
    )


def _back(request: HttpRequest, study: Study) -> HttpResponse:
    # The rubric page includes the forms; it passes itself as ``next``.
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect("jobs:job_list", study_id=study.pk)


def _form_errors(form: forms.Form) -> str:
    # An ErrorList yields each error's message (a str), whatever it stores.
    return "; ".join(
        f"{name}: {' '.join(str(error) for error in errors)}"
        for name, errors in form.errors.items()
    )


@require_POST
@coordinator_required
def rubric_draft(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = study_get_for_coordinator(user=request.user, study_id=study_id)
    form = RubricDraftForm(request.POST, study=study)
    if not form.is_valid():
        messages.error(request, f"Rubric drafting not queued: {_form_errors(form)}")
        return _back(request, study)
    data = form.cleaned_data
    try:
        launch = drafting.rubric_draft_launch(
            study=study,
            arm=data["arm"],
            created_by=request.user,
            case_ids=data["case_ids"],
            replace=data["replace"],
            engine=data["engine"],
        )
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Drafting queued for {launch.items} case(s) with “{data['arm'].label}”. "
            "Drafts need physicians' verification before they are used.",
        )
    return _back(request, study)


@require_POST
@coordinator_required
def rubric_grade(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = study_get_for_coordinator(user=request.user, study_id=study_id)
    form = RubricGradeForm(request.POST, study=study)
    if not form.is_valid():
        messages.error(request, f"Grading not queued: {_form_errors(form)}")
        return _back(request, study)
    data = form.cleaned_data
    try:
        launch = grading.rubric_grade_launch(
            study=study,
            grader_arm=data["arm"],
            created_by=request.user,
            engine=data["engine"],
            method=data["method"],
        )
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"Grading queued for {launch.items} response(s) with “{data['arm'].label}”."
        )
    return _back(request, study)


def rubric_actions_context(*, study: Study) -> dict[str, object]:
    """What ``_rubric_actions.html`` needs; the rubric page adds it to its own context."""
    return {
        "study": study,
        "rubric_draft_form": RubricDraftForm(study=study),
        "rubric_grade_form": RubricGradeForm(study=study),
        "rubric_progress": rubric_selectors.rubric_jobs_progress(study=study),
    }


def rubric_actions_panel(request: HttpRequest, study: Study) -> SafeString:
    """The drafting and grading panel of the rubric page (registered in ``apps.py``)."""
    return render_to_string(TEMPLATE, rubric_actions_context(study=study), request=request)


@require_GET
@coordinator_required
def rubric_jobs_status(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = study_get_for_coordinator(user=request.user, study_id=study_id)
    progress = rubric_selectors.rubric_jobs_progress(study=study)
    response = render(
        request,
        f"{TEMPLATE}#rubric-progress",
        {"study": study, "rubric_progress": progress},
    )
    if request.htmx and not progress.busy:
        return HttpResponseStopPolling(response.content)
    return response
