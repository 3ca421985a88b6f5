from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from alignment_jobs.generation import jobs, selectors, specs
from alignment_jobs.generation.forms import JobLaunchForm, ReviewForm, SpecForm
from clinic_eval import access
from clinic_eval.errors import DomainError
from clinic_eval.studies.services import response_review
from clinic_eval.web.http import AuthenticatedHttpRequest, wants_partial
from clinic_eval.web.permissions import coordinator_required


@require_http_methods(["GET", "POST"])
@coordinator_required
def spec_edit(request: AuthenticatedHttpRequest, study_id: int, arm_id: int) -> HttpResponse:
    arm = access.arm_get_for_coordinator(user=request.user, study_id=study_id, arm_id=arm_id)
    spec = selectors.spec_for_arm(arm=arm)
    form = SpecForm.for_spec(spec, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            specs.spec_save(arm=arm, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Generation settings for “{arm.label}” saved.")
            return redirect("jobs:job_list", study_id=arm.study_id)
    context = {"study": arm.study, "arm": arm, "spec": spec, "form": form}
    return render(request, "alignment_jobs/spec_form.html", context)


@require_http_methods(["GET", "POST"])
@coordinator_required
def job_list(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = JobLaunchForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        try:
            job = jobs.job_launch(study=study, created_by=request.user, **form.launch_arguments())
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Job #{job.pk} queued: {job.item_count} case × arm items.")
            return redirect("jobs:job_detail", study_id=study.pk, job_id=job.pk)
    context = {
        "study": study,
        "form": form,
        "arms": selectors.model_arms(study=study),
        "jobs": selectors.job_list(study=study),
        "held_count": selectors.held_responses(study=study).count(),
    }
    return render(request, "alignment_jobs/job_list.html", context)


@require_GET
@coordinator_required
def job_detail(request: AuthenticatedHttpRequest, study_id: int, job_id: int) -> HttpResponse:
    job = selectors.job_get_for_coordinator(user=request.user, study_id=study_id, job_id=job_id)
    context = {
        "study": job.study,
        "job": job,
        "progress": selectors.job_progress(job=job),
        "workers": selectors.job_workers(job=job),
    }
    if not wants_partial(request):
        return render(request, "alignment_jobs/job_detail.html", context)
    response = render(request, "alignment_jobs/job_detail.html#job-progress", context)
    if job.is_finished:
        return HttpResponseStopPolling(response.content)
    return response


def _job_action(
    request: AuthenticatedHttpRequest, study_id: int, job_id: int, action: Callable, done: str
) -> HttpResponse:
    job = selectors.job_get_for_coordinator(user=request.user, study_id=study_id, job_id=job_id)
    try:
        action(job=job)
        messages.success(request, done)
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("jobs:job_detail", study_id=study_id, job_id=job.pk)


@require_GET
@coordinator_required
def study_job_workers(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    """The study page's note on its open jobs: loaded over htmx, so the study page (in
    clinic_eval) needs nothing from generation; without JavaScript its link leads here."""
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    open_jobs = [(job, selectors.job_workers(job=job)) for job in selectors.open_jobs(study=study)]
    context = {"study": study, "open_jobs": open_jobs}
    template = "alignment_jobs/job_workers.html"
    partial = f"{template}#job-workers" if wants_partial(request) else template
    return render(request, partial, context)


@require_POST
@coordinator_required
def job_cancel(request: AuthenticatedHttpRequest, study_id: int, job_id: int) -> HttpResponse:
    done = "Cancelled: no new shards start; running ones finish."
    return _job_action(request, study_id, job_id, jobs.job_cancel, done)


@require_POST
@coordinator_required
def job_retry_failed(request: AuthenticatedHttpRequest, study_id: int, job_id: int) -> HttpResponse:
    done = "The failed items are queued again."
    return _job_action(request, study_id, job_id, jobs.job_retry_failed, done)


@require_GET
@coordinator_required
def held_responses(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    responses = selectors.held_responses(study=study)[:200]
    return render(
        request, "alignment_jobs/held_responses.html", {"study": study, "responses": responses}
    )


@require_POST
@coordinator_required
def response_review_view(
    request: AuthenticatedHttpRequest, study_id: int, response_id: int
) -> HttpResponse:
    response = access.response_get_for_coordinator(
        user=request.user, study_id=study_id, response_id=response_id
    )
    form = ReviewForm(request.POST)
    if form.is_valid():
        response_review(
            response=response, decision=form.cleaned_data["decision"], reviewed_by=request.user
        )
        verb = "approved" if form.cleaned_data["decision"] == "approved" else "excluded"
        messages.success(request, f"Response {response.case.external_id} / {response.arm} {verb}.")
    else:
        messages.error(request, "Choose approve or exclude.")
    return redirect("jobs:held_responses", study_id=study_id)
