"""The power planner: simulation through the primary analysis, the design page, the worker,
the command, and the figures frozen into the plan when the study opens."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from clinic_eval.design import services
from clinic_eval.design.power import services as power_services
from clinic_eval.models import PowerAnalysis, Study, User
from clinic_eval.statistics import crossed_simulation as sim
from clinic_eval.statistics import power
from tests.conftest import logged_in
from tests.support.rating_study import ARM_LABELS, ORIGINAL_LABEL, open_study, physicians

BASE = power.PlannerInputs(
    kind="preference",
    effect=0.65,
    cases=60,
    raters=8,
    raters_per_item=2,
    rater_taste=0.3,
    case_effect=0.5,
    simulations=600,
    seed=7,
)


def test_with_no_effect_the_planner_finds_the_false_positive_rate() -> None:
    point = power.power_at(BASE, cases=60, effect=0.5, seed=3)
    assert 0.02 <= point.power <= 0.08, "power at the null is the test's size"


def test_power_grows_with_the_effect_and_with_the_cases() -> None:
    small = power.power_at(BASE, cases=60, effect=0.58, seed=3).power
    large = power.power_at(BASE, cases=60, effect=0.7, seed=3).power
    assert small < large
    few = power.power_at(BASE, cases=20, effect=0.65, seed=3).power
    many = power.power_at(BASE, cases=120, effect=0.65, seed=3).power
    assert few < many


def test_the_planted_effect_is_the_requested_one_on_the_report_scale() -> None:
    shape = sim.StudyShape(cases=60, raters=8, raters_per_item=2, arms=("A", "B"))
    effects = power.planted_effects(BASE, 0.65)
    truth = sim.true_decisive_share(shape, sim.Heterogeneity(0.3, 0.5), effects, ("A", "B"))
    assert truth == pytest.approx(0.65, abs=1e-8)
    likert = dataclasses.replace(BASE, kind="likert", effect=0.4, simulations=300)
    studies = sim.simulate_studies(
        shape, sim.Heterogeneity(0.3, 0.5), power.planted_effects(likert, 0.4), studies=3000, seed=2
    )
    # Studies share physicians and cases, so 3,000 of them pin the mean to about 0.004.
    assert np.nanmean(sim.likert_differences(studies).estimate) == pytest.approx(0.4, abs=0.015)


def test_the_plan_reports_power_its_error_the_detectable_effect_and_hours() -> None:
    steps = []
    result = power.plan(
        dataclasses.replace(BASE, pairs_per_case=3, seconds_per_item=60),
        progress=lambda done, total: steps.append((done, total)),
    )
    assert 0 < result.power < 1 and 0 < result.mc_error < 0.03
    assert steps[-1][0] == steps[-1][1] and len(steps) >= 10
    mde = result.minimum_detectable_effect
    assert mde is not None and 0.5 < mde < 1
    check = power.power_at(BASE, cases=60, effect=mde, seed=BASE.seed)
    assert check.power >= 0.8
    assert result.seats == 60 * 3 * 2
    assert result.physician_hours == pytest.approx(60 * 3 * 2 * 60 / 3600)
    assert [p.cases for p in result.curve] == sorted({15, 30, 60, 90, 120})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"effect": 1.2}, "win rate must lie strictly between 0 and 1"),
        ({"raters_per_item": 9}, "raters per item must be between 1"),
        ({"raters": 2, "raters_per_item": 2}, "at least 3 physicians"),
        ({"simulations": 50}, "simulations must be between"),
        ({"kind": "likert", "effect": 3.0}, "Likert difference must lie between"),
    ],
)
def test_inputs_out_of_range_are_refused_in_words(change: dict, message: str) -> None:
    inputs = dataclasses.replace(BASE, **change)
    assert any(message in problem for problem in inputs.check())
    with pytest.raises(ValueError, match=message):
        power.plan(inputs)


def test_heterogeneity_is_estimated_from_a_study_like_the_one_simulated() -> None:
    shape = sim.StudyShape(cases=150, raters=12, raters_per_item=3, arms=("A", "B"))
    studies = sim.simulate_studies(shape, sim.Heterogeneity(0.5, 0.7), studies=1, seed=9)
    estimate = power.heterogeneity_from_tables(studies.judgments(0), pd.DataFrame(), "preference")
    assert estimate.rater_taste == pytest.approx(0.5, abs=0.25)
    assert estimate.case_effect == pytest.approx(0.7, abs=0.3)
    assert "logistic mixed model" in estimate.source


# --- The design page, the worker and the plan -----------------------------------------------


PRIMARY = {"primary": {"kind": "preference", "arm_a": ARM_LABELS[0], "arm_b": ARM_LABELS[1]}}


@pytest.fixture
def ready_study(coordinator: User) -> Study:
    built = open_study(
        coordinator=coordinator,
        raters=physicians(4),
        n_cases=30,
        analysis_plan=PRIMARY,
        open_it=False,
        labels=(*ARM_LABELS[:2], ORIGINAL_LABEL),
    )
    return built.study


def _post(client: Client, study: Study, **fields: object) -> object:
    data = {
        "effect": "0.7",
        "heterogeneity": "typical",
        "cases": "30",
        "raters_per_item": "2",
        "raters": "4",
        "items_per_rater": "",
        "simulations": "200",
        **{k: str(v) for k, v in fields.items()},
    }
    return client.post(
        reverse("coordinator:study_power", kwargs={"study_id": study.pk}),
        data,
        HTTP_HX_REQUEST="true",
    )


def test_a_coordinator_computes_power_on_the_design_page_through_the_worker(
    ready_study: Study,
    coordinator: User,
    coordinator_client: Client,
    django_capture_on_commit_callbacks: object,
) -> None:
    page = coordinator_client.get(
        reverse("coordinator:study_design", kwargs={"study_id": ready_study.pk})
    )
    assert b'id="power"' in page.content and b"Compute power" in page.content
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        response = _post(coordinator_client, ready_study)
    assert response.status_code == 200
    analysis = PowerAnalysis.objects.get(study=ready_study)
    assert analysis.status == PowerAnalysis.Status.SUCCEEDED, analysis.error
    assert analysis.progress_done == analysis.progress_total > 0
    status = coordinator_client.get(
        reverse(
            "coordinator:study_power_status",
            kwargs={"study_id": ready_study.pk, "analysis_id": analysis.pk},
        ),
        HTTP_HX_REQUEST="true",
    )
    assert status.status_code == 286, "a finished analysis stops the polling"
    html = status.content.decode()
    assert 'id="power-value"' in html and "Monte Carlo, 200 studies" in html
    assert "data:image/svg+xml;base64," in html


def test_a_running_analysis_shows_progress_and_keeps_polling(
    ready_study: Study, coordinator: User, coordinator_client: Client
) -> None:
    analysis = PowerAnalysis.objects.create(
        study=ready_study,
        inputs=dataclasses.asdict(BASE),
        status=PowerAnalysis.Status.RUNNING,
        progress_done=3,
        progress_total=12,
    )
    status = coordinator_client.get(
        reverse(
            "coordinator:study_power_status",
            kwargs={"study_id": ready_study.pk, "analysis_id": analysis.pk},
        ),
        HTTP_HX_REQUEST="true",
    )
    assert status.status_code == 200
    html = status.content.decode()
    assert 'hx-trigger="every 1s"' in html and 'value="25"' in html


def test_out_of_range_planner_inputs_get_a_clear_form_error(
    ready_study: Study, coordinator_client: Client
) -> None:
    response = _post(coordinator_client, ready_study, raters_per_item=9, effect=1.5)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Raters per item must be between 1 and the number of physicians" in html
    assert "win rate must lie strictly between 0 and 1" in html
    assert not PowerAnalysis.objects.filter(study=ready_study).exists()
    plain = Client()
    plain.force_login(ready_study.coordinators.first())
    page = plain.post(
        reverse("coordinator:study_power", kwargs={"study_id": ready_study.pk}), {"effect": "x"}
    )
    assert page.status_code == 200 and b"Enter a number." in page.content, "works without JS"


def test_the_latest_analysis_is_frozen_into_the_plan_when_the_study_opens(
    ready_study: Study, coordinator: User, coordinator_client: Client
) -> None:
    call_command("study_power", "--study", str(ready_study.pk), "--simulations", "150")
    analysis = PowerAnalysis.objects.get(study=ready_study)
    opened = services.study_transition(study=ready_study, to_status=Study.Status.OPEN)
    opened.refresh_from_db()
    frozen = opened.analysis_plan["power"]
    assert frozen["analysis_id"] == analysis.pk
    assert frozen["power"] == analysis.result["power"]
    assert len(opened.design_hash) == 64
    page = coordinator_client.get(
        reverse("coordinator:study_design", kwargs={"study_id": opened.pk})
    )
    assert b'id="power-frozen"' in page.content and b"Frozen into the plan" in page.content


def test_the_command_prints_power_and_refuses_bad_input(
    ready_study: Study, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command(
        "study_power", "--study", str(ready_study.pk), "--simulations", "150", "--effect", "0.75"
    )
    out = capsys.readouterr().out
    assert "power for an effect of 0.75 (win rate)" in out and "physician-hours" in out
    with pytest.raises(CommandError, match="Simulated studies"):
        call_command("study_power", "--study", str(ready_study.pk), "--simulations", "10")
    with pytest.raises(CommandError, match="there is no study"):
        call_command("study_power", "--study", "0")


def test_a_study_without_a_primary_endpoint_says_the_planner_cannot_run(
    coordinator: User, coordinator_client: Client
) -> None:
    built = open_study(coordinator=coordinator, raters=physicians(3), open_it=False)
    page = coordinator_client.get(
        reverse("coordinator:study_design", kwargs={"study_id": built.study.pk})
    )
    assert b'id="power-problem"' in page.content
    assert b"register a primary endpoint" in page.content


def test_an_analysis_a_dead_worker_left_running_runs_again_once_delivered(
    ready_study: Study,
) -> None:
    analysis = PowerAnalysis.objects.create(
        study=ready_study,
        inputs=dataclasses.asdict(dataclasses.replace(BASE, simulations=120)),
        status=PowerAnalysis.Status.RUNNING,
        attempts=1,
    )
    finished = power_services.power_analysis_run(analysis_id=analysis.pk)
    assert finished.status == PowerAnalysis.Status.SUCCEEDED and finished.attempts == 2
    again = power_services.power_analysis_run(analysis_id=analysis.pk)
    assert again.result == finished.result and again.attempts == 2, "a finished one is kept"


def test_coordinators_of_other_studies_cannot_see_an_analysis(
    ready_study: Study, other_coordinator: User
) -> None:
    analysis = PowerAnalysis.objects.create(study=ready_study, inputs=dataclasses.asdict(BASE))
    url = reverse(
        "coordinator:study_power_status",
        kwargs={"study_id": ready_study.pk, "analysis_id": analysis.pk},
    )
    assert logged_in(other_coordinator).get(url).status_code == 404
