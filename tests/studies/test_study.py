"""Study configuration, lifecycle and the account and study commands."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django.fixtures import Settings
from rest_framework.authtoken.models import Token

from clinic_eval.config import (
    default_design,
    default_rubric,
    validate_decision_layers,
    validate_design,
    validate_rubric,
    validate_strata,
)
from clinic_eval.demo.study import DEMO_CLOSED_TITLE, DEMO_GENERATION_TITLE, DEMO_TITLE
from clinic_eval.design import services as design_services
from clinic_eval.errors import DomainError
from clinic_eval.models import STUDY_TRANSITIONS, Arm, Study, User
from clinic_eval.studies import services as studies_services
from tests.support.factories import CaseFactory

pytestmark = pytest.mark.django_db


def test_defaults_are_valid_and_match_the_reference_study() -> None:
    rubric = default_rubric()
    validate_rubric(rubric)
    validate_design(default_design())
    assert [(d["key"], d["scale_min"], d["scale_max"]) for d in rubric["dimensions"]] == [
        ("reasoning_clarity", 1, 5),
        ("treatment_feasibility", 1, 5),
    ]
    assert rubric["hallucination"]["types"] == ["none", "factual", "reasoning"]


@pytest.mark.parametrize(
    ("validator", "value", "message"),
    [
        (validate_rubric, {"dimensions": [{"key": "Bad Key", "title": "x"}]}, "dimensions.0.key"),
        (
            validate_rubric,
            {"dimensions": [{"key": "a", "title": "x", "anchors": {"9": "x"}}]},
            "outside 1..5",
        ),
        (
            validate_rubric,
            {"dimensions": [{"key": "a", "title": "x"}, {"key": "a", "title": "y"}]},
            "unique",
        ),
        (validate_design, {"mode": "tournament"}, "mode"),
        (validate_design, {"raters_per_item": 0}, "raters_per_item"),
        (validate_design, {"typo_field": 1}, "typo_field"),
        (validate_strata, [], "strata"),
        (validate_strata, ["A", "A"], "unique"),
        (validate_decision_layers, {"x": {"title": "X", "labels": []}}, "labels"),
    ],
)
def test_bad_configuration_is_refused_with_its_location(
    validator: object, value: object, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validator(value)  # type: ignore[operator]
    assert message in " ".join(caught.value.messages)


def test_model_validation_uses_the_config_validators(study: Study) -> None:
    study.design = {"mode": "pairwise", "raters_per_item": -1}
    with pytest.raises(ValidationError, match="raters_per_item"):
        study.full_clean()


def test_every_status_can_reach_closed_and_closed_is_final() -> None:
    reachable = {Study.Status.DRAFT}
    frontier = [Study.Status.DRAFT]
    while frontier:
        for nxt in STUDY_TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(Study.Status.values)
    assert STUDY_TRANSITIONS[Study.Status.CLOSED] == ()


def test_transition_refuses_ready_without_cases(study: Study) -> None:
    with pytest.raises(DomainError, match="import cases"):
        design_services.study_transition(study=study, to_status=Study.Status.READY)
    CaseFactory(study=study)
    assert design_services.study_transition(study=study, to_status="ready").status == "ready"


def test_only_one_physician_original_arm(study: Study) -> None:
    studies_services.arm_create(study=study, label="Physician", kind=Arm.Kind.PHYSICIAN_ORIGINAL)
    with pytest.raises(DomainError, match="already has a physician"):
        studies_services.arm_create(study=study, label="Doctor", kind=Arm.Kind.PHYSICIAN_ORIGINAL)


# --- Commands -------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_user_generates_and_prints_a_password() -> None:
    output = run("create_user", "dr-lee", "--role", "physician")
    password = output.split("password: ")[1].strip()
    user = User.objects.get(username="dr-lee")
    assert user.role == User.Role.PHYSICIAN and user.check_password(password)
    assert not user.is_staff


def test_create_user_with_a_token_and_a_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct-horse-battery-staple\n"))
    output = run("create_user", "lead", "--role", "coordinator", "--password-stdin", "--token")
    user = User.objects.get(username="lead")
    assert user.is_coordinator and user.check_password("correct-horse-battery-staple")
    assert f"API token: {Token.objects.get(user=user).key}" in output
    assert "password:" not in output, "a password the user typed is never echoed"


def test_create_user_refuses_weak_passwords_and_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("123\n"))
    with pytest.raises(CommandError, match="too short"):
        run("create_user", "x", "--role", "physician", "--password-stdin")
    run("create_user", "taken", "--role", "physician")
    with pytest.raises(CommandError, match="already exists"):
        run("create_user", "TAKEN", "--role", "physician")


def test_create_study_prints_its_id(coordinator: User, physician: User) -> None:
    study_id = int(run("create_study", "--title", "T", "--coordinator", "coord"))
    assert Study.objects.get(pk=study_id).coordinators.get() == coordinator
    with pytest.raises(CommandError, match="is not a coordinator"):
        run("create_study", "--title", "T", "--coordinator", physician.username)


def test_demo_commands_refuse_without_debug(settings: Settings) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="only with DEBUG=1"):
        run("seed_demo")
    with pytest.raises(CommandError, match="only with DEBUG=1"):
        run("run_demo")


def test_seed_demo_builds_the_study_once(settings: Settings) -> None:
    settings.DEBUG = True
    first = run("seed_demo", "--cases", "60")
    second = run("seed_demo", "--cases", "60")
    assert first.startswith("Created demo study") and second.startswith("Found demo study")
    study = Study.objects.get(title=DEMO_TITLE)
    assert study.status == Study.Status.OPEN and study.cases.count() == 60
    assert len(study.design_hash) == 64
    raters = set(study.assignments.values_list("rater__username", flat=True))
    assert raters == {"dr-01", "dr-02", "dr-03"}
    sandbox = Study.objects.get(title=DEMO_GENERATION_TITLE)
    assert sandbox.status == Study.Status.DRAFT and sandbox.cases.count() == 60
    closed = Study.objects.get(title=DEMO_CLOSED_TITLE)
    assert closed.status == Study.Status.CLOSED and closed.simulated_ratings
    assert closed.judgments.count() == closed.assignments.count() > 100
    assert not User.objects.filter(username__startswith="sim-rater-", is_active=True).exists()
    # The simulated physicians differ as real ones do, so the clustered analysis is wider than
    # the per-judgment one on every pair: the page shows both, and they differ. The design
    # effect of one pair is itself estimated from six physicians and can fall below 1 by chance
    # (it does on one pair of this seed's demo); over the pairs it is well above 1.
    from clinic_eval.results import exports

    report = exports.study_report(closed)
    clustered = report["preference"]["clustered"]["pairwise"]
    wilson = {(r["arm_1"], r["arm_2"]): r for r in report["preference"]["pairwise"]}
    assert len(clustered) == 3
    for row in clustered:
        naive = wilson[(row["arm_1"], row["arm_2"])]
        assert row["share_1_high"] - row["share_1_low"] > (
            naive["win_rate_1_high"] - naive["win_rate_1_low"]
        )
    effects = [row["share_1_design_effect"] for row in clustered]
    assert sum(effects) / len(effects) > 1.5 and max(effects) > 2
    assert report["primary"]["p_value"] > report["primary"]["sensitivity"]["p_value"]
    labels = dict(study.arms.values_list("label", "kind"))
    assert labels == {
        "SFT-sim": "imported",
        "DPO-sim": "imported",
        "GRPO-sim": "imported",
        "ICL-sim": "imported",
        "Physician": "physician_original",
    }
    for arm in study.arms.all():
        assert arm.responses.count() == 60
    assert "coordinator    password: demo-coordinator-pass" in first
    assert User.objects.get(username="dr-01").authored_cases.exists(), (
        "demo physicians authored some original decisions"
    )


def test_create_arm_command(study: Study) -> None:
    arm_id = int(run("create_arm", "--study", str(study.pk), "--label", "GRPO", "--kind", "model"))
    assert Arm.objects.get(pk=arm_id).label == "GRPO"
    with pytest.raises(CommandError, match="already has an arm labelled"):
        run("create_arm", "--study", str(study.pk), "--label", "grpo", "--kind", "imported")
    with pytest.raises(CommandError, match="no study with id 0"):
        run("create_arm", "--study", "0", "--label", "X", "--kind", "model")


def test_the_open_demo_study_sends_a_disagreement_to_its_third_physician(
    settings: Settings,
) -> None:
    """Two demo physicians who disagree on an item hand it to the third to adjudicate."""
    from clinic_eval.models import Adjudication, Assignment
    from clinic_eval.rating import services as rating_services

    settings.DEBUG = True
    run("seed_demo", "--cases", "60")
    study = Study.objects.get(title=DEMO_TITLE)
    pairs: dict[int, list[Assignment]] = {}
    for seat in Assignment.objects.filter(study=study, is_repeat=False).select_related("rater"):
        pairs.setdefault(seat.comparison_id, []).append(seat)
    shared = next(
        seats
        for seats in pairs.values()
        if {s.rater.username for s in seats} == {"dr-01", "dr-02"}
        and getattr(seats[0].comparison.case.original_author, "username", "") != "dr-03"
    )
    for seat, preferred in zip(shared, (0, 1), strict=True):
        response = seat.comparison.responses.order_by("pk")[preferred].pk
        letter = "AB"[seat.shown_order.index(response)]
        rating_services.judgment_record(
            assignment=seat,
            rater=seat.rater,
            data=rating_services.JudgmentInput(
                preference=letter,
                ratings=tuple(
                    rating_services.RatingInput(
                        position=p,
                        scores={"reasoning_clarity": 3, "treatment_feasibility": 3},
                        hallucination="none",
                    )
                    for p in range(2)
                ),
            ),
        )
    adjudication = Adjudication.objects.get(comparison_id=shared[0].comparison_id)
    assert adjudication.adjudicator is not None
    assert adjudication.adjudicator.username == "dr-03"
    assert adjudication.triggers == ["Decisive preferences disagree"]
