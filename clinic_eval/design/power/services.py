"""Writes of the planner: request a power analysis, run it on a worker, freeze it into the plan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from clinic_eval.design.power.forms import PowerForm
from clinic_eval.models import PowerAnalysis, Study, User
from clinic_eval.statistics import power as power_lib
from clinic_eval.statistics.report import plain_json

# A worker that dies mid-run leaves the analysis "running"; a redelivery reruns it (the
# simulation is seeded, so the numbers are the same) up to this many times.
MAX_ATTEMPTS = 3


def _total_steps() -> int:
    return len(power_lib.CURVE_FACTORS) + power_lib.MDE_STEPS + 2


@transaction.atomic
def power_analysis_request(
    *,
    study: Study,
    requested_by: User | None,
    inputs: power_lib.PlannerInputs,
    enqueue: bool = True,
) -> PowerAnalysis:
    """Record the request and queue it for a worker once the transaction commits
    (``enqueue=False``: the caller runs it, as ``manage.py study_power`` does)."""
    from clinic_eval.design.power.tasks import power_analysis_run_task

    problems = inputs.check()
    if problems:
        raise ValueError("; ".join(problems))
    analysis = PowerAnalysis.objects.create(
        study=study,
        requested_by=requested_by,
        inputs=dataclasses.asdict(inputs),
        progress_total=_total_steps(),
    )
    if enqueue:
        transaction.on_commit(lambda: power_analysis_run_task.delay(analysis.pk))
    return analysis


def power_analysis_run(*, analysis_id: int) -> PowerAnalysis:
    """Run one analysis. Idempotent: a finished one is returned as it is, a redelivered one
    that a dead worker left running starts again from the beginning."""
    claimed = PowerAnalysis.objects.filter(
        pk=analysis_id,
        status__in=[PowerAnalysis.Status.PENDING, PowerAnalysis.Status.RUNNING],
    ).update(
        status=PowerAnalysis.Status.RUNNING,
        started_at=timezone.now(),
        attempts=F("attempts") + 1,
        progress_done=0,
    )
    analysis = PowerAnalysis.objects.get(pk=analysis_id)
    if not claimed:
        return analysis
    if analysis.attempts > MAX_ATTEMPTS:
        return _finish(analysis, error="the worker stopped several times during this analysis")
    fields = power_lib.PlannerInputs.__dataclass_fields__
    inputs = power_lib.PlannerInputs(
        **{key: value for key, value in analysis.inputs.items() if key in fields}
    )

    def progress(done: int, total: int) -> None:
        PowerAnalysis.objects.filter(pk=analysis_id).update(
            progress_done=done, progress_total=total
        )

    try:
        result = power_lib.plan(inputs, progress=progress)
    except ValueError as exc:
        return _finish(analysis, error=str(exc))
    return _finish(analysis, result=plain_json(dataclasses.asdict(result)))


def _finish(
    analysis: PowerAnalysis, *, result: dict[str, Any] | None = None, error: str = ""
) -> PowerAnalysis:
    analysis.status = PowerAnalysis.Status.FAILED if error else PowerAnalysis.Status.SUCCEEDED
    analysis.result = result
    analysis.error = error
    analysis.finished_at = timezone.now()
    if not error:
        analysis.progress_done = analysis.progress_total = _total_steps()
    analysis.save(
        update_fields=[
            "status",
            "result",
            "error",
            "finished_at",
            "progress_done",
            "progress_total",
        ]
    )
    return analysis


def power_plan_summary(analysis: PowerAnalysis) -> dict[str, Any]:
    """What the pre-registered plan keeps of an analysis (and the design hash covers)."""
    result = analysis.result or {}
    return {
        "analysis_id": analysis.pk,
        "computed_at": analysis.finished_at.isoformat() if analysis.finished_at else "",
        "inputs": analysis.inputs,
        "power": result.get("power"),
        "mc_error": result.get("mc_error"),
        "minimum_detectable_effect": result.get("minimum_detectable_effect"),
        "mde_note": result.get("mde_note"),
        "items_per_rater": result.get("items_per_rater"),
        "physician_hours": result.get("physician_hours"),
        "seats": result.get("seats"),
        "estimator": result.get("estimator"),
        "curve": result.get("curve"),
    }


def power_freeze_into_plan(*, study: Study) -> None:
    """Called when the study opens, before the design hash: the latest finished power
    analysis becomes part of the pre-registered plan (nothing when there is none)."""
    analysis = (
        study.power_analyses.filter(status=PowerAnalysis.Status.SUCCEEDED)
        .order_by("-finished_at", "-id")
        .first()
    )
    if analysis is None:
        return
    study.analysis_plan = {**study.analysis_plan, "power": power_plan_summary(analysis)}
    study.save(update_fields=["analysis_plan"])


@dataclass(frozen=True)
class StartedAnalysis:
    analysis: PowerAnalysis
    heterogeneity_source: str


def power_analysis_start(
    *,
    study: Study,
    requested_by: User,
    form: PowerForm,
    run_here: bool = False,
) -> StartedAnalysis:
    """Turn the planner form into inputs (heterogeneity estimated from a closed study when one
    was chosen, seconds per item measured) and request the run on a worker, or (``run_here``)
    run it in this process."""
    from clinic_eval.design.power import selectors
    from clinic_eval.results import exports

    values = form.heterogeneity_values()
    defaults = form.defaults
    if values is None:
        closed = form.closed_study()
        if closed is None:
            raise ValueError("choose a closed study you coordinate")
        _, tables = exports.study_analysis(closed, exports.ExportFilters())
        estimate = power_lib.heterogeneity_from_tables(
            tables.judgments,
            tables.ratings,
            defaults.kind,
            arms=_shared_pair(closed, defaults.arm_a, defaults.arm_b),
            dimension=defaults.dimension,
        )
        values = (min(estimate.rater_taste, 3.0), min(estimate.case_effect, 3.0))
        source = f"estimated from “{closed.title}”: {estimate.source}"
    else:
        heterogeneity = cast(forms.ChoiceField, form.fields["heterogeneity"])
        # PowerForm sets them as (value, label) pairs, without groups.
        labels = dict(cast("list[tuple[str, str]]", heterogeneity.choices))
        source = labels[form.cleaned_data["heterogeneity"]]
    timing = selectors.seconds_per_item(study=study, user=requested_by)
    inputs = form.inputs(
        rater_taste=values[0],
        case_effect=values[1],
        seconds_per_item=timing.seconds,
        seed=study.seed,
    )
    with transaction.atomic():
        analysis = power_analysis_request(
            study=study, requested_by=requested_by, inputs=inputs, enqueue=not run_here
        )
        analysis.inputs = {
            **analysis.inputs,
            "heterogeneity_source": source,
            "timing_source": timing.source,
        }
        analysis.save(update_fields=["inputs"])
    if run_here:
        analysis = power_analysis_run(analysis_id=analysis.pk)
    return StartedAnalysis(analysis=analysis, heterogeneity_source=source)


def _shared_pair(study: Study, arm_a: str, arm_b: str) -> tuple[str, str] | None:
    labels = set(study.arms.values_list("label", flat=True))
    return (arm_a, arm_b) if {arm_a, arm_b} <= labels else None
