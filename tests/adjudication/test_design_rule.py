"""The adjudication rule in the analysis plan: set on the design page, checked when the study
opens, then frozen and hashed with the rest of the plan."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from clinic_eval.config import default_rubric
from clinic_eval.design import services as design_services
from clinic_eval.errors import DomainError
from clinic_eval.models import Study, User
from clinic_eval.studies import services as studies_services
from tests.adjudication.world import RULE
from tests.conftest import logged_in
from tests.support.rating_study import ARM_LABELS, open_study, physicians

pytestmark = pytest.mark.django_db


def design_body(raters: list[User], **extra: object) -> dict[str, object]:
    return {
        "mode": "pairwise",
        "pairs": ["GRPO | SFT"],
        "allow_tie": "on",
        "raters_per_item": "2",
        "repeat_percent": "0",
        "idle_timeout_minutes": "20",
        "raters": [str(r.pk) for r in raters],
        "rubric": json.dumps(default_rubric()),
        "primary_kind": "preference",
        "primary_arm_a": "SFT",
        "primary_arm_b": "GRPO",
        "tests": ["sign"],
        "alpha": "0.05",
        "correction": "holm",
        **extra,
    }


def test_the_design_form_round_trips_the_rule(coordinator: User, study: Study) -> None:
    for label in ("SFT", "GRPO"):
        studies_services.arm_create(study=study, label=label, kind="imported")
    raters = physicians(3, prefix="panel")
    client = logged_in(coordinator)
    url = reverse("coordinator:study_design", args=[study.pk])
    page = client.get(url).content.decode()
    assert "<legend>Adjudication</legend>" in page and 'name="adjudicators"' in page

    body = design_body(
        raters,
        adjudication_enabled="on",
        adjudication_severe_single="on",
        adjudication_likert_gap="3",
        adjudicators=[raters[2].username, raters[0].username],
    )
    assert client.post(url, body).status_code == 302
    study.refresh_from_db()
    assert study.analysis_plan["adjudication"] == {
        "enabled": True,
        "preference_conflict": False,
        "likert_gap": 3,
        "severe_single": True,
        "adjudicators": [raters[0].username, raters[2].username],
    }

    page = client.get(url).content.decode()
    assert re.search(r'name="adjudication_enabled"[^>]*checked>', page)
    assert not re.search(r'name="adjudication_preference_conflict"[^>]*checked>', page)
    assert 'name="adjudication_likert_gap" value="3"' in page
    assert re.search(rf'name="adjudicators" value="{raters[2].username}"[^>]*checked>', page)
    assert not re.search(rf'name="adjudicators" value="{raters[1].username}"[^>]*checked>', page)
    assert client.post(url, body).status_code == 302
    study.refresh_from_db()
    assert study.analysis_plan["adjudication"]["likert_gap"] == 3

    # A blank gap switches that condition off.
    client.post(url, body | {"adjudication_likert_gap": ""})
    study.refresh_from_db()
    assert study.analysis_plan["adjudication"]["likert_gap"] is None


def test_the_form_refuses_an_adjudicator_who_is_not_a_rater(
    coordinator: User, study: Study
) -> None:
    for label in ("SFT", "GRPO"):
        studies_services.arm_create(study=study, label=label, kind="imported")
    raters = physicians(3, prefix="panel")
    client = logged_in(coordinator)
    url = reverse("coordinator:study_design", args=[study.pk])
    body = design_body(raters[:2], adjudication_enabled="on", adjudicators=[raters[2].username])
    page = client.post(url, body)
    assert page.status_code == 200
    assert f"Adjudicators must be raters on this study: {raters[2].username}" in (
        page.content.decode()
    )
    study.refresh_from_db()
    assert study.analysis_plan["adjudication"]["enabled"] is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "rubric"}, "needs a pairwise or best-of-N design"),
        ({"adjudicators": []}, "name at least one adjudicator"),
        ({"adjudicators": ["outsider-00"]}, "outsider-00 is not"),
        (
            {"preference_conflict": False, "likert_gap": None, "severe_single": False},
            "choose at least one condition",
        ),
    ],
)
def test_opening_refuses_a_rule_it_cannot_apply(
    coordinator: User, change: dict[str, object], message: str
) -> None:
    raters = physicians(3, prefix="panel")
    physicians(1, prefix="outsider")  # a physician, but not on this study
    mode = change.pop("mode", "pairwise")
    rule = {**RULE, "adjudicators": [r.username for r in raters], **change}
    built = open_study(
        coordinator=coordinator,
        raters=raters,
        labels=ARM_LABELS[:2],
        mode=mode,
        analysis_plan={"adjudication": rule},
        open_it=False,
        **({"raters_per_item": 1} if mode == "rubric" else {}),
    )
    with pytest.raises(DomainError, match=message):
        design_services.study_transition(study=built.study, to_status=Study.Status.OPEN)
    study = Study.objects.get(pk=built.study.pk)
    assert study.status == Study.Status.READY and not study.design_hash
    assert not study.assignments.exists()

    response = logged_in(coordinator).post(
        reverse("coordinator:study_transition", args=[study.pk]),
        {"to_status": "open"},
        follow=True,
    )
    assert "adjudication rule cannot be used" in response.content.decode()


def test_a_sound_rule_opens_and_is_frozen_with_the_plan(coordinator: User) -> None:
    raters = physicians(3, prefix="panel")
    plan = {"adjudication": {**RULE, "adjudicators": [raters[0].username]}}
    built = open_study(
        coordinator=coordinator, raters=raters, labels=ARM_LABELS[:2], analysis_plan=plan
    )
    study = built.study
    assert study.status == Study.Status.OPEN and study.design_hash
    assert study.plan_config.adjudication.adjudicators == [raters[0].username]
    with pytest.raises(DomainError, match="frozen"):
        design_services.study_design_update(
            study=study,
            design=study.design,
            rubric=study.rubric,
            analysis_plan={**study.analysis_plan, "adjudication": {"enabled": False}},
            rater_ids=[r.pk for r in raters],
        )
    page = logged_in(coordinator).get(reverse("coordinator:study_design", args=[study.pk]))
    html = page.content.decode()
    assert "Adjudication (pre-registered)" in html and raters[0].username in html
