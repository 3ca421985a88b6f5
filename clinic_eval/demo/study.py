"""The demo study: synthetic cases, simulated arms and demo accounts with published passwords.

Only for DEBUG installations; ``seed_demo`` and ``run_demo`` refuse to run otherwise.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass

from django.db import transaction

from clinic_eval import errors, synthetic
from clinic_eval.demo import adjudications as demo_adjudications
from clinic_eval.demo import ratings as demo_ratings
from clinic_eval.design import services as design_services
from clinic_eval.imports import services as imports_services
from clinic_eval.models import Arm, DataImport, Study, User
from clinic_eval.studies import services as studies_services

DEMO_TITLE = "Demo: ART treatment decisions, four aligned models vs physicians (synthetic)"
DEMO_QUESTION = (
    "Do physicians, rating blinded, prefer the plans of the most accurate model? "
    "All cases and responses in this study are synthetic; the four model arms are simulated "
    "text written by the generator, not model outputs."
)
# A second study, in draft, where a coordinator runs real generation jobs on tiny models;
# the first is open for rating, and an open study's responses are frozen.
DEMO_GENERATION_TITLE = "Demo: generation with tiny local models (synthetic cases)"
DEMO_GENERATION_QUESTION = (
    "A sandbox for generation jobs: four arms on a random-init tiny Llama and its LoRA "
    "adapters, built locally. Their text is noise; the point is the job machinery."
)
DEMO_CLOSED_TITLE = "Demo (closed): SFT vs GRPO vs physicians, simulated ratings"
DEMO_CLOSED_QUESTION = (
    "A finished study to show the results page: cases and responses are synthetic and the six "
    "physicians who rated it are simulated, with planted effects (raters prefer SFT-sim; "
    "GRPO-sim is the most accurate; GRPO-sim draws the most reasoning-error spans and SFT-sim "
    "the most omissions). Its spans and adjudications are simulated too. Not evidence of "
    "anything."
)
DEMO_CLOSED_CASES = 90
DEMO_SIMULATED_RATERS = tuple(f"sim-rater-{i:02d}" for i in range(1, 7))
# Two of the simulated physicians also adjudicate, each only items they did not rate. The
# rule leaves out conflicting preferences, which the simulated raters have on a third of
# their items: scores 3 points apart, or a severe-harm span or flag from one rater only.
DEMO_ADJUDICATORS = DEMO_SIMULATED_RATERS[-2:]
DEMO_ADJUDICATION = {
    "enabled": True,
    "preference_conflict": False,
    "likert_gap": 3,
    "severe_single": True,
    "adjudicators": list(DEMO_ADJUDICATORS),
}
# Both rating studies mark spans (the clinical default categories, the hallucination flag
# still asked).
DEMO_SPANS = {"enabled": True}
DEMO_COORDINATOR = ("coordinator", "demo-coordinator-pass")
# Usernames match synthetic original-decision authors, so some cases are their own.
DEMO_PHYSICIANS = (
    ("dr-01", "demo-physician-pass"),
    ("dr-02", "demo-physician-pass"),
    ("dr-03", "demo-physician-pass"),
)
# The open study: two of its three physicians rate each item, so when they disagree the third
# (who never rated it, unless the case is theirs) adjudicates it.
DEMO_OPEN_ADJUDICATION = {
    "enabled": True,
    "preference_conflict": True,
    "likert_gap": 2,
    "severe_single": True,
    "adjudicators": [username for username, _ in DEMO_PHYSICIANS],
}
# The paradox study's three-way comparison, pairwise: SFT vs GRPO vs the physician's own plan.
DEMO_PAIRS = [["GRPO-sim", "SFT-sim"], ["Physician", "SFT-sim"], ["GRPO-sim", "Physician"]]
DEMO_ITEMS_PER_RATER = 12
# The pre-registered primary endpoint of both rating studies: does SFT beat GRPO?
DEMO_PRIMARY = {"kind": "preference", "arm_a": "SFT-sim", "arm_b": "GRPO-sim", "dimension": ""}
SIMULATED_ARM_STYLES = {
    "SFT-sim": "Structured assessment, key findings, plan and rationale; clear reasoning.",
    "DPO-sim": "Warm, patient-friendly and verbose; hedges and adds counselling points.",
    "GRPO-sim": "Terse and label-first; most accurate labels, thin reasoning, higher doses.",
    "ICL-sim": "Follows a few-shot template; least accurate, occasional wrong values.",
}


@dataclass(frozen=True)
class DemoAccounts:
    study: Study
    created: bool
    accounts: tuple[tuple[str, str, str], ...]  # (role, username, password)


def demo_user(username: str, password: str, role: str) -> User:
    user = User.objects.filter(username=username).first()
    if user is None:
        return studies_services.user_create(username=username, password=password, role=role)
    return user


def demo_import(study: Study, coordinator: User, kind: str, rows: list, name: str) -> None:
    data_import = imports_services.data_import_create(
        study=study,
        kind=kind,
        filename=f"{name}.jsonl",
        content=synthetic.dumps_jsonl(rows).encode("utf-8"),
        created_by=coordinator,
    )
    data_import = imports_services.data_import_run(import_id=data_import.pk)
    if data_import.status != DataImport.Status.SUCCEEDED:
        raise errors.DomainError(f"the demo {kind} did not import: {data_import.errors[:3]}")


@transaction.atomic
def demo_seed(*, n_cases: int = 240, seed: int = 1) -> DemoAccounts:
    coordinator = demo_user(*DEMO_COORDINATOR, role=User.Role.COORDINATOR)
    for username, password in DEMO_PHYSICIANS:
        demo_user(username, password, role=User.Role.PHYSICIAN)
    accounts = (
        ("coordinator", *DEMO_COORDINATOR),
        *(("physician", username, password) for username, password in DEMO_PHYSICIANS),
    )
    existing = Study.objects.filter(title=DEMO_TITLE).first()
    if existing is not None:
        return DemoAccounts(study=existing, created=False, accounts=accounts)

    cases = synthetic.generate_cases(n=n_cases, seed=seed)
    responses = synthetic.generate_simulated_responses(cases, seed=seed)
    study = _demo_study(DEMO_TITLE, DEMO_QUESTION, coordinator, cases, responses, seed)
    sandbox = studies_services.study_create(
        title=DEMO_GENERATION_TITLE, question=DEMO_GENERATION_QUESTION, created_by=coordinator
    )
    demo_import(sandbox, coordinator, DataImport.Kind.CASES, cases, f"synthetic-cases-seed{seed}")
    design_services.study_transition(study=study, to_status=Study.Status.READY)
    design_services.study_design_update(
        study=study,
        design=study.design
        | {
            "arm_sets": DEMO_PAIRS,
            "raters_per_item": 2,
            "cases_per_rater": DEMO_ITEMS_PER_RATER,
            "repeat_fraction": 0.1,
        },
        rubric=study.rubric | {"spans": DEMO_SPANS},
        analysis_plan=study.analysis_plan
        | {"primary": DEMO_PRIMARY, "adjudication": DEMO_OPEN_ADJUDICATION},
        rater_ids=list(
            User.objects.filter(username__in=[u for u, _ in DEMO_PHYSICIANS]).values_list(
                "pk", flat=True
            )
        ),
    )
    _demo_power(study, coordinator)
    design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    _demo_closed_study(coordinator, cases[:DEMO_CLOSED_CASES], responses, seed)
    return DemoAccounts(study=study, created=True, accounts=accounts)


DEMO_POWER_SIMULATIONS = 300


def _demo_power(study: Study, coordinator: User) -> None:
    """The planner's answer for the open study's design, frozen into its plan when it opens."""
    from clinic_eval.design.power import services as power_services
    from clinic_eval.design.power.views import power_form

    study.refresh_from_db()
    form = power_form(study, coordinator)
    data = {name: form.initial.get(name) for name in form.fields}
    data |= {"effect": 0.62, "simulations": DEMO_POWER_SIMULATIONS}
    form = power_form(study, coordinator, {k: "" if v is None else v for k, v in data.items()})
    if not form.is_valid():
        raise RuntimeError(f"the demo's planner inputs are invalid: {form.errors.as_text()}")
    power_services.power_analysis_start(
        study=study, requested_by=coordinator, form=form, run_here=True
    )


def _demo_study(
    title: str, question: str, coordinator: User, cases: list, responses: list, seed: int
) -> Study:
    """A study with the simulated arms, the physician-original arm, cases and responses.

    Its design seed comes from the demo's seed, so one seed gives one demo, judgments and all.
    """
    study = studies_services.study_create(
        title=title,
        question=question,
        created_by=coordinator,
        seed=zlib.crc32(f"{seed}:{title}".encode()) % 2**31,
    )
    for label in synthetic.SIMULATED_ARMS:
        studies_services.arm_create(
            study=study,
            label=label,
            kind=Arm.Kind.IMPORTED,
            description=f"Simulated, not a model. {SIMULATED_ARM_STYLES.get(label, '')}".strip(),
        )
    studies_services.arm_create(
        study=study,
        label="Physician",
        kind=Arm.Kind.PHYSICIAN_ORIGINAL,
        description="The treating physician's original decision (synthetic).",
    )
    case_ids = {case["case_id"] for case in cases}
    responses = [r for r in responses if r["case_id"] in case_ids]
    demo_import(study, coordinator, DataImport.Kind.CASES, cases, f"synthetic-cases-seed{seed}")
    demo_import(
        study, coordinator, DataImport.Kind.RESPONSES, responses, f"simulated-responses-seed{seed}"
    )
    return study


def _demo_closed_study(coordinator: User, cases: list, responses: list, seed: int) -> Study:
    """A finished study whose physicians are simulated, so the results page is full at once:
    their judgments with marked spans, and the adjudications the plan's rule opened, most of
    them resolved before the study closed."""
    study = _demo_study(
        DEMO_CLOSED_TITLE, DEMO_CLOSED_QUESTION, coordinator, cases, responses, seed
    )
    raters = [
        demo_user(name, secrets.token_urlsafe(24), role=User.Role.PHYSICIAN)
        for name in DEMO_SIMULATED_RATERS
    ]
    design_services.study_transition(study=study, to_status=Study.Status.READY)
    design_services.study_design_update(
        study=study,
        design=study.design | {"arm_sets": DEMO_PAIRS, "raters_per_item": 2},
        rubric=study.rubric | {"spans": DEMO_SPANS},
        analysis_plan=study.analysis_plan
        | {"primary": DEMO_PRIMARY, "adjudication": DEMO_ADJUDICATION},
        rater_ids=[rater.pk for rater in raters],
    )
    design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    demo_ratings.rate_study(study=study, raters=raters, seed=seed)
    demo_adjudications.adjudicate_some(study=study, seed=seed)
    design_services.study_transition(study=study, to_status=Study.Status.CLOSED)
    Study.objects.filter(pk=study.pk).update(simulated_ratings=True)
    # Nobody signs in as a simulated physician.
    User.objects.filter(pk__in=[r.pk for r in raters]).update(is_active=False)
    return study
