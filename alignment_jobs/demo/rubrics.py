"""The demo's rubric studies: criteria drafted by a tiny local model, then refined by physicians.

The tiny model is a random-init Llama, so its drafts are gibberish on purpose: they show the
drafting path end to end, and why ClinAlign has physicians verify every draft. In the closed
study, simulated physicians replace the gibberish with criteria written from each case's
reference decision (through the same services a physician's browser calls, so every change is
recorded), verify, and grade blinded responses; a tiny grader model grades the same criteria.
"""

from __future__ import annotations

import importlib.util
import random
import secrets
from dataclasses import dataclass

from django.conf import settings

from alignment_jobs.demo.tiny_models import build_tiny_models
from alignment_jobs.generation import specs
from alignment_jobs.rubric_jobs import drafting, grading
from clinic_eval import synthetic
from clinic_eval.demo.study import demo_import, demo_user
from clinic_eval.design import services as design_services
from clinic_eval.models import (
    Arm,
    CaseRubric,
    DataImport,
    Response,
    RubricCriterion,
    Study,
    User,
)
from clinic_eval.rating import services as rating_services
from clinic_eval.rubrics import selectors
from clinic_eval.rubrics import services as rubrics_services
from clinic_eval.rubrics.services import CriterionInput
from clinic_eval.studies import services as studies_services

VERIFY_TITLE = "Demo: verify rubric drafts from a tiny local model (synthetic cases)"
VERIFY_QUESTION = (
    "Criteria drafted by a random-init tiny Llama from each case and its reference decision. "
    "Physicians: edit, delete or add criteria until they are right, then verify."
)
GRADED_TITLE = "Demo (closed): rubric grading, SFT vs GRPO, simulated physicians and tiny grader"
GRADED_QUESTION = (
    "Blinded criterion grading of two simulated arms. Rubrics were drafted by a tiny local "
    "model and rewritten and verified by simulated physicians; a tiny grader model graded the "
    "same criteria, so its agreement with the physicians can be checked (it should be near "
    "chance: it is random-init)."
)
DRAFTER = "Drafter-tiny"
GRADER = "Grader-tiny"
GRADED_ARMS = ("SFT-sim", "GRPO-sim")
SIMULATED_RUBRIC_RATERS = tuple(f"sim-grader-{i:02d}" for i in range(1, 4))
VERIFY_CASES = 6
GRADED_CASES = 24
DRAFT_MAX_TOKENS = 48
# How often a simulated physician's call on a criterion goes the other way.
GRADING_NOISE = 0.08
# Planted effect: SFT explains its plans more plainly (the paradox's "clearer reasoning").
PLAIN_LANGUAGE = {"SFT-sim": 0.85, "GRPO-sim": 0.45}


@dataclass(frozen=True)
class DemoRubrics:
    verify_study: Study | None
    graded_study: Study | None
    skipped: str = ""


def _model_arm(study: Study, label: str, base: str, description: str) -> Arm:
    arm = studies_services.arm_create(
        study=study, label=label, kind=Arm.Kind.MODEL, description=description
    )
    specs.spec_save(
        arm=arm,
        base_model_path=base,
        adapter_path="",
        max_tokens=DRAFT_MAX_TOKENS,
        temperature=0.7,
        seed=study.seed,
    )
    return arm


def _study_with_cases(title: str, question: str, coordinator: User, cases: list) -> Study:
    study = studies_services.study_create(title=title, question=question, created_by=coordinator)
    demo_import(study, coordinator, DataImport.Kind.CASES, cases, "synthetic-cases")
    return study


def _draft(study: Study, drafter: Arm) -> None:
    outcome = drafting.rubric_draft_run(
        arm_id=drafter.pk,
        case_ids=list(study.cases.order_by("external_id").values_list("pk", flat=True)),
        engine="transformers",
        max_tokens=DRAFT_MAX_TOKENS,
    )
    if outcome.failed:
        raise RuntimeError(f"the tiny drafter stored no rubric for {sorted(outcome.failed)}")


def demo_rubric_seed(*, coordinator: User, physicians: list[User], seed: int = 1) -> DemoRubrics:
    if importlib.util.find_spec("torch") is None:
        return DemoRubrics(None, None, skipped="torch is not installed (pip install -e '.[ml]')")
    existing = Study.objects.filter(title=VERIFY_TITLE).first()
    if existing is not None:
        return DemoRubrics(existing, Study.objects.filter(title=GRADED_TITLE).first())
    base = str(build_tiny_models(settings.VAR_DIR / "models" / "tiny").base)
    cases = synthetic.generate_cases(n=GRADED_CASES, seed=seed + 100)
    verify = _verification_study(coordinator, physicians, cases[:VERIFY_CASES], base)
    graded = _graded_study(coordinator, cases, base, seed)
    return DemoRubrics(verify, graded)


def _verification_study(coordinator: User, physicians: list[User], cases: list, base: str) -> Study:
    study = _study_with_cases(VERIFY_TITLE, VERIFY_QUESTION, coordinator, cases)
    drafter = _model_arm(study, DRAFTER, base, "Drafts rubrics: the tiny random-init Llama.")
    _draft(study, drafter)
    design_services.study_design_update(
        study=study,
        design=study.design | {"mode": "rubric", "arm_sets": [], "rubric_verifiers": 1},
        rubric=study.rubric,
        analysis_plan=study.analysis_plan,
        rater_ids=[physician.pk for physician in physicians],
    )
    return study


# --- The closed, simulated study -----------------------------------------------------------


def reference_criteria(case: dict) -> list[CriterionInput]:
    """What a simulated physician writes for a case, from its reference decision."""
    truth = case["ground_truth"]
    strategy = truth["art_strategy"]
    diagnosis = ", ".join(d.replace("_", " ") for d in truth["diagnosis"])
    wrong = "IUI" if strategy != "IUI" else "IVF"
    return [
        CriterionInput(f"Recommends {strategy} as the treatment strategy", 5, "accuracy"),
        CriterionInput(f"Names the working diagnosis: {diagnosis}", 3, "accuracy"),
        CriterionInput(f"Chooses a {truth['protocol']} protocol", 2, "completeness"),
        CriterionInput(f"Starts stimulation in the {truth['dose_band']} band", 1, "completeness"),
        CriterionInput(
            "Explains the plan in words the patient can follow",
            2,
            "communication_quality",
            level=RubricCriterion.Level.CLUSTER,
        ),
        CriterionInput(f"Recommends {wrong} instead", -4, "accuracy"),
    ]


def _rewrite_and_verify(study: Study, cases: list, author: User, verifier: User) -> None:
    by_id = {case["case_id"]: case for case in cases}
    for rubric in CaseRubric.objects.filter(study=study).select_related("case"):
        # The drafter wrote one rubric per case here, never a stratum rubric.
        assert rubric.case is not None
        drafted = list(rubric.criteria.all())
        for written in reference_criteria(by_id[rubric.case.external_id]):
            rubrics_services.criterion_add(rubric=rubric, author=author, data=written)
        for criterion in drafted:
            rubrics_services.criterion_delete(criterion=criterion, author=author)
        rubric.refresh_from_db()
        rubrics_services.rubric_verify(rubric=rubric, physician=verifier, version=rubric.version)


def simulated_verdict(
    rng: random.Random, criterion: RubricCriterion, response: Response, arm: str
) -> bool:
    """Whether the criterion holds for the response, read off its parsed decision, with noise."""
    decision = response.parsed_decision or {}
    text = criterion.text
    if criterion.axis == "communication_quality":
        truth = rng.random() < PLAIN_LANGUAGE.get(arm, 0.6)
    elif text.startswith("Recommends"):
        # Also the negative "Recommends X instead": met means the wrong strategy was chosen.
        truth = text.split()[1] == decision.get("art_strategy")
    elif text.startswith("Names the working diagnosis"):
        named = {d.replace("_", " ") for d in decision.get("diagnosis") or []}
        truth = set(text.split(": ", 1)[1].split(", ")) <= named
    elif text.startswith("Chooses a"):
        truth = text.removeprefix("Chooses a ").removesuffix(" protocol") == decision.get(
            "protocol"
        )
    else:
        truth = text.split(" band")[0].split("the ")[-1] == decision.get("dose_band")
    return truth if rng.random() >= GRADING_NOISE else not truth


def _graded_study(coordinator: User, cases: list, base: str, seed: int) -> Study:
    study = _study_with_cases(GRADED_TITLE, GRADED_QUESTION, coordinator, cases)
    # A fixed design seed, so every demo shows the same numbers (studies draw a random one).
    Study.objects.filter(pk=study.pk).update(seed=seed)
    study.refresh_from_db()
    responses = [
        r
        for r in synthetic.generate_simulated_responses(cases, seed=seed)
        if r["arm"] in GRADED_ARMS
    ]
    for label in GRADED_ARMS:
        studies_services.arm_create(
            study=study, label=label, kind=Arm.Kind.IMPORTED, description="Simulated, not a model."
        )
    demo_import(study, coordinator, DataImport.Kind.RESPONSES, responses, "simulated-responses")
    drafter = _model_arm(study, DRAFTER, base, "Drafts rubrics: the tiny random-init Llama.")
    grader = _model_arm(study, GRADER, base, "Grades criteria: the tiny random-init Llama.")
    _draft(study, drafter)
    raters = [
        demo_user(name, secrets.token_urlsafe(24), role=User.Role.PHYSICIAN)
        for name in SIMULATED_RUBRIC_RATERS
    ]
    design_services.study_design_update(
        study=study,
        design=study.design
        | {
            "mode": "rubric",
            "arm_sets": [[label] for label in GRADED_ARMS],
            "raters_per_item": 2,
            "rubric_verifiers": 1,
        },
        rubric=study.rubric,
        analysis_plan=study.analysis_plan,
        rater_ids=[rater.pk for rater in raters],
    )
    _rewrite_and_verify(study, cases, author=raters[0], verifier=raters[1])
    design_services.study_transition(study=study, to_status=Study.Status.READY)
    design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    _grade_as_simulated_physicians(study, raters, seed)
    grading.rubric_grade_run(
        grader_arm_id=grader.pk,
        response_ids=list(
            Response.objects.filter(case__study=study, arm__label__in=GRADED_ARMS).values_list(
                "pk", flat=True
            )
        ),
        engine="transformers",
    )
    design_services.study_transition(study=study, to_status=Study.Status.CLOSED)
    Study.objects.filter(pk=study.pk).update(simulated_ratings=True)
    User.objects.filter(pk__in=[r.pk for r in raters]).update(is_active=False)
    return study


def _grade_as_simulated_physicians(study: Study, raters: list[User], seed: int) -> int:
    """Every simulated physician grades their whole queue through the real service."""
    responses = Response.objects.filter(case__study=study).select_related("arm", "case")
    by_pk = {response.pk: response for response in responses}
    stored = 0
    for rater in raters:
        rng = random.Random(f"{seed}:{rater.username}")
        while (seat := rating_services.assignment_next(rater=rater, study=study)) is not None:
            shown = [by_pk[pk] for pk in seat.shown_order]
            criteria = selectors.case_criteria(case=shown[0].case)
            grades = tuple(
                rating_services.GradeInput(
                    position=position,
                    criterion=number,
                    met=simulated_verdict(rng, criterion, response, response.arm.label),
                )
                for position, response in enumerate(shown)
                for number, criterion in enumerate(criteria, 1)
            )
            data = rating_services.JudgmentInput(preference="", ratings=(), grades=grades)
            rating_services.judgment_record(assignment=seat, rater=rater, data=data)
            stored += 1
    return stored
