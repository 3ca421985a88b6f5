"""The planner on the design page: a form that queues a run, and a status partial that polls
until the worker has the answer."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from clinic_eval import access
from clinic_eval.design.power import selectors as power_selectors
from clinic_eval.design.power import services
from clinic_eval.design.power.forms import PowerForm
from clinic_eval.models import PowerAnalysis, Study, User
from clinic_eval.results import plots
from clinic_eval.web.http import AuthenticatedHttpRequest
from clinic_eval.web.permissions import coordinator_required

TEMPLATE = "coordinator/_power.html"


def power_form(study: Study, user: User, data: Any = None) -> PowerForm:
    return PowerForm(
        data,
        defaults=power_selectors.planner_defaults(study=study),
        closed_studies=list(
            power_selectors.closed_studies_for_heterogeneity(user=user, exclude=study)
        ),
    )


def power_display(result: dict[str, Any] | None, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """An analysis result (or a plan's frozen summary) as the card shows it."""
    if not result:
        return None
    kind = inputs.get("kind", "preference")
    effect_unit = "win rate" if kind == "preference" else "points"

    def effect(value: Any) -> str:
        if value is None:
            return "—"
        return f"{100 * value:.1f}%" if kind == "preference" else f"{value:+.2f}"

    power = result.get("power")
    mc_error = result.get("mc_error") or 0.0
    return {
        "power": f"{100 * power:.0f}%" if power is not None else "—",
        "mc_error": f"{100 * 1.96 * mc_error:.1f}",
        "simulations": inputs.get("simulations"),
        "effect": effect(inputs.get("effect")),
        "effect_unit": effect_unit,
        "mde": effect(result.get("minimum_detectable_effect")),
        "mde_note": result.get("mde_note", ""),
        "hours": f"{result.get('physician_hours', 0):.1f}",
        "seats": result.get("seats"),
        "seconds": f"{inputs.get('seconds_per_item', 0):.0f}",
        "timing_source": inputs.get("timing_source", ""),
        "heterogeneity_source": inputs.get("heterogeneity_source", ""),
        "rater_taste": f"{inputs.get('rater_taste', 0):.2f}",
        "case_effect": f"{inputs.get('case_effect', 0):.2f}",
        "cases": inputs.get("cases"),
        "raters": inputs.get("raters"),
        "raters_per_item": inputs.get("raters_per_item"),
        "items_per_rater": f"{result.get('items_per_rater', 0):.0f}",
        "estimator": result.get("estimator", ""),
        "plot": plots.svg_data_uri(plots.power_curve_plot(result.get("curve") or [])),
    }


def power_context(study: Study, user: User, form: PowerForm | None = None) -> dict[str, Any]:
    """What the design page's planner card needs."""
    frozen = (study.analysis_plan or {}).get("power")
    latest = power_selectors.power_analysis_latest(study=study)
    return {
        "power_form": form or power_form(study, user),
        "power_analysis": latest,
        "power_result": power_display(latest.result, latest.inputs) if latest else None,
        "power_frozen": power_display(frozen, frozen.get("inputs", {})) if frozen else None,
        "power_problem": power_selectors.planner_defaults(study=study).problem,
    }


@require_POST
@coordinator_required
def study_power(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    form = power_form(study, request.user, request.POST)
    if form.is_valid():
        try:
            services.power_analysis_start(study=study, requested_by=request.user, form=form)
        except ValueError as exc:
            form.add_error(None, str(exc))
    if not request.htmx:
        if form.errors:
            # Without JavaScript the whole design page comes back, the planner's errors in it.
            from clinic_eval.design.views import render_design_page

            return render_design_page(request, study, power_form=form)
        return redirect("coordinator:study_design", study_id=study.pk)
    context = {"study": study, **power_context(study, request.user, form if form.errors else None)}
    # 200 with the errors in the card: htmx swaps only successful responses.
    return render(request, f"{TEMPLATE}#power-card", context)


@require_GET
@coordinator_required
def study_power_status(
    request: AuthenticatedHttpRequest, study_id: int, analysis_id: int
) -> HttpResponse:
    study = access.study_get_for_coordinator(user=request.user, study_id=study_id)
    try:
        analysis = power_selectors.power_analysis_get_for_coordinator(
            study=study, analysis_id=analysis_id
        )
    except PowerAnalysis.DoesNotExist:
        from django.http import Http404

        raise Http404("no such power analysis") from None
    context = {"study": study, **power_context(study, request.user), "power_analysis": analysis}
    context["power_result"] = power_display(analysis.result, analysis.inputs)
    response = render(request, f"{TEMPLATE}#power-status", context)
    if analysis.is_finished:
        return HttpResponseStopPolling(response.content)
    return response
