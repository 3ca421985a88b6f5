"""An open study ready for rating, built through the real services (no design rows by hand).

Arm, response and case primary keys start far above anything a page prints for another
reason (scores 1-5, counts), so a blinding scan can look for them as whole numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

from clinic_eval.config import default_analysis_plan, default_design, default_rubric
from clinic_eval.design import services as design_services
from clinic_eval.models import Arm, Assignment, Case, Response, Study, User
from clinic_eval.rating import services as rating_services
from clinic_eval.rubrics import services as rubrics_services
from clinic_eval.studies import services as studies_services
from tests.support.factories import CaseFactory, UserFactory

ARM_LABELS = ("SFT-arm-q7", "GRPO-arm-k3", "DPO-arm-z9")
ORIGINAL_LABEL = "Original-arm-p4"
BASE_PK = 7_340_000


@dataclass
class OpenStudy:
    study: Study
    raters: list[User]
    arms: list[Arm]
    cases: list[Case]
    responses: list[Response] = field(default_factory=list)


def physicians(n: int, prefix: str = "rater") -> list[User]:
    return [UserFactory(username=f"{prefix}-{i:02d}", role=User.Role.PHYSICIAN) for i in range(n)]


def open_study(
    *,
    coordinator: User,
    raters: Sequence[User],
    n_cases: int = 6,
    labels: Sequence[str] = (*ARM_LABELS[:2], ORIGINAL_LABEL),
    mode: str = "pairwise",
    raters_per_item: int = 2,
    texts: dict[str, str] | None = None,
    authors: dict[int, User] | None = None,
    title: str = "Blinded rating test",
    analysis_plan: dict | None = None,
    open_it: bool = True,
    **design: object,
) -> OpenStudy:
    study = studies_services.study_create(title=title, created_by=coordinator)
    arms = []
    for offset, label in enumerate(labels):
        kind = Arm.Kind.PHYSICIAN_ORIGINAL if label == ORIGINAL_LABEL else Arm.Kind.IMPORTED
        arms.append(
            Arm.objects.create(
                pk=BASE_PK + 900 + offset + 10 * Arm.objects.count(),
                study=study,
                label=label,
                kind=kind,
            )
        )
    cases, responses = [], []
    next_pk = BASE_PK + 1000 * (Response.objects.count() + 1)
    for index in range(n_cases):
        author = (authors or {}).get(index)
        case = CaseFactory(
            study=study,
            original_author=author,
            original_author_ref=author.username if author else "",
        )
        cases.append(case)
        for arm in arms:
            text = (texts or {}).get(arm.label, f"**Plan** for case {index}: IVF, then review.")
            responses.append(
                Response.objects.create(
                    pk=next_pk, case=case, arm=arm, raw_text=text, display_text=text
                )
            )
            next_pk += 1
    arm_sets = (
        [list(pair) for pair in combinations(labels, 2)] if mode == "pairwise" else [list(labels)]
    )
    config = default_design() | {
        "mode": mode,
        "best_of_n": len(labels) if mode == "best_of_n" else 3,
        "arm_sets": arm_sets,
        "raters_per_item": raters_per_item,
        **design,
    }
    design_services.study_design_update(
        study=study,
        design=config,
        rubric=default_rubric(),
        analysis_plan=default_analysis_plan() | (analysis_plan or {}),
        rater_ids=[r.pk for r in raters],
    )
    study = design_services.study_transition(study=study, to_status=Study.Status.READY)
    if open_it:
        study = design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    return OpenStudy(study=study, raters=list(raters), arms=arms, cases=cases, responses=responses)


def full_answer(positions: int = 2, preference: str = "A", **extra: object) -> dict[str, str]:
    """A complete rating form POST for the default rubric."""
    data = {"preference": preference, "rationale": "Clearer plan.", "revision": "0"}
    for position in range(positions):
        letter = "ABCDEFGH"[position]
        data[f"{letter}-reasoning_clarity"] = "4"
        data[f"{letter}-treatment_feasibility"] = "3"
        data[f"{letter}-hallucination"] = "none"
    data.update({k: str(v) for k, v in extra.items()})
    return data


def judgment_input(positions: int = 2, preference: str = "A") -> rating_services.JudgmentInput:
    return rating_services.JudgmentInput(
        preference=preference,
        rationale="Clearer plan.",
        ratings=tuple(
            rating_services.RatingInput(
                position=p,
                scores={"reasoning_clarity": 4, "treatment_feasibility": 3},
                hallucination="none",
            )
            for p in range(positions)
        ),
    )


# --- Rubric mode ------------------------------------------------------------------------------

# Positive criteria, then one undesirable one (negative points: "met" means it occurred).
CASE_CRITERIA = (
    ("Recommends IVF for bilateral tubal occlusion", 5),
    ("Explains the plan in plain words", 3),
    ("Suggests IUI despite blocked tubes", -4),
)
STRATUM_CRITERIA = (
    ("Orders a semen analysis", 2),
    ("Skips the ovarian reserve work-up", -2),
)


def open_rubric_study(
    *,
    coordinator: User,
    raters: Sequence[User],
    n_cases: int = 4,
    labels: Sequence[str] = ARM_LABELS[:2],
    arm_sets: Sequence[Sequence[str]] | None = None,
    strata: Sequence[str] | None = None,
    case_rubrics: Sequence[int] | None = None,
    unverified_case_rubrics: Sequence[int] = (),
    stratum_rubrics: Sequence[str] = (),
    raters_per_item: int = 1,
    **design: object,
) -> OpenStudy:
    """An open rubric-mode study, built through the real services.

    ``arm_sets`` defaults to each arm on its own. Case ``i`` is in stratum ``strata[i]``
    ("General" by default). ``case_rubrics`` (default: every case) get their own rubric of
    ``CASE_CRITERIA``, verified by the first rater; ``unverified_case_rubrics`` get one nobody
    verified; each of ``stratum_rubrics`` gets a verified rubric of ``STRATUM_CRITERIA``.
    """
    from clinic_eval.models import CaseRubric

    study = studies_services.study_create(title="Rubric grading test", created_by=coordinator)
    arms = [
        Arm.objects.create(
            pk=BASE_PK + 900 + offset + 10 * Arm.objects.count(),
            study=study,
            label=label,
            kind=Arm.Kind.IMPORTED,
        )
        for offset, label in enumerate(labels)
    ]
    cases, responses = [], []
    next_pk = BASE_PK + 1000 * (Response.objects.count() + 1)
    for index in range(n_cases):
        case = CaseFactory(study=study, stratum=strata[index] if strata else "General")
        cases.append(case)
        for arm in arms:
            text = f"**Plan** for case {index}: IVF, then review."
            responses.append(
                Response.objects.create(
                    pk=next_pk, case=case, arm=arm, raw_text=text, display_text=text
                )
            )
            next_pk += 1
    config = default_design() | {
        "mode": "rubric",
        "arm_sets": [list(s) for s in arm_sets] if arm_sets else [[label] for label in labels],
        "raters_per_item": raters_per_item,
        **design,
    }
    design_services.study_design_update(
        study=study,
        design=config,
        rubric=default_rubric(),
        analysis_plan=default_analysis_plan(),
        rater_ids=[r.pk for r in raters],
    )

    def criteria(rows: Sequence[tuple[str, int]]) -> list[rubrics_services.CriterionInput]:
        return [rubrics_services.CriterionInput(text=text, points=points) for text, points in rows]

    verified = range(n_cases) if case_rubrics is None else case_rubrics
    for index in [*verified, *unverified_case_rubrics]:
        rubric = rubrics_services.rubric_store(
            study=study,
            case=cases[index],
            criteria=criteria(CASE_CRITERIA),
            source=CaseRubric.Source.IMPORTED,
        )
        if index in verified:
            rubrics_services.rubric_verify(
                rubric=rubric, physician=raters[0], version=rubric.version
            )
    for stratum in stratum_rubrics:
        rubric = rubrics_services.rubric_store(
            study=study,
            stratum=stratum,
            criteria=criteria(STRATUM_CRITERIA),
            source=CaseRubric.Source.IMPORTED,
        )
        rubrics_services.rubric_verify(rubric=rubric, physician=raters[0], version=rubric.version)
    design_services.study_transition(study=study, to_status=Study.Status.READY)
    study = design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    return OpenStudy(study=study, raters=list(raters), arms=arms, cases=cases, responses=responses)


def full_grades(
    positions: int = 1, criteria: int = len(CASE_CRITERIA), met: str = "met", **extra: object
) -> dict[str, str]:
    """A complete rubric-mode form POST: every criterion of every response answered."""
    data = {"revision": "0", "rationale": ""}
    for position in range(positions):
        for number in range(1, criteria + 1):
            data[f"{'ABCDEFGH'[position]}-c{number}"] = met
    data.update({k: str(v) for k, v in extra.items()})
    return data


def take_and_rate(rater: User, study: Study, preference: str = "A") -> Assignment:
    seat = rating_services.assignment_next(rater=rater, study=study)
    assert seat is not None
    positions = len(seat.shown_order)
    rating_services.judgment_record(
        assignment=seat, rater=rater, data=judgment_input(positions, preference)
    )
    return seat
