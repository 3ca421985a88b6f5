"""Simulated physicians for the demo's closed study, rating through the real services.

The planted effects mirror the alignment paradox: raters prefer SFT-sim's plans, while
GRPO-sim's labels are the most accurate (that comes from the simulated responses themselves).
Every number on the closed study's results page is computed from these judgments by the same
code as for a real study; the page labels them as simulated.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from clinic_eval import services
from clinic_eval.models import Assignment, Response, Study, User
from clinic_eval.study_config import position_letter

# Bradley-Terry strengths, Likert means per dimension and hallucination rates per arm label.
STRENGTH = {"SFT-sim": 0.55, "GRPO-sim": -0.15, "Physician": -0.35}
LIKERT_MEAN = {
    "SFT-sim": {"reasoning_clarity": 4.1, "treatment_feasibility": 4.0},
    "GRPO-sim": {"reasoning_clarity": 3.3, "treatment_feasibility": 3.4},
    "Physician": {"reasoning_clarity": 3.5, "treatment_feasibility": 3.8},
}
HALLUCINATION = {"SFT-sim": 0.06, "GRPO-sim": 0.12, "Physician": 0.04}
TIE_SHARE = 0.08
BOTH_BAD_SHARE = 0.03


@dataclass
class SimulatedRater:
    rng: random.Random
    severity: float  # a harsh or lenient rater shifts every score
    left_lean: float  # a small pull towards response A
    offsets: dict[str, float] = field(default_factory=dict)


def _choice(rater: SimulatedRater, arms: list[str], design: dict) -> str:
    rng = rater.rng
    roll = rng.random()
    if design.get("allow_both_unacceptable", True) and roll < BOTH_BAD_SHARE:
        return "none"
    if design.get("allow_tie", True) and len(arms) == 2 and roll < BOTH_BAD_SHARE + TIE_SHARE:
        return "tie"
    weights = [math.exp(STRENGTH.get(arm, 0.0)) for arm in arms]
    weights[0] *= math.exp(rater.left_lean)
    return position_letter(rng.choices(range(len(arms)), weights=weights)[0])


def _ratings(rater: SimulatedRater, arms: list[str], rubric: dict) -> tuple:
    rng = rater.rng
    flag = rubric["hallucination"]
    ratings = []
    for position, arm in enumerate(arms):
        scores = {}
        for dimension in rubric["dimensions"]:
            mean = LIKERT_MEAN.get(arm, {}).get(dimension["key"], 3.0)
            value = round(rng.gauss(mean + rater.severity, 0.8))
            scores[dimension["key"]] = max(
                dimension["scale_min"], min(dimension["scale_max"], value)
            )
        kind = "none"
        if rng.random() < HALLUCINATION.get(arm, 0.05):
            kind = rng.choice([t for t in flag["types"] if t != "none"] or ["none"])
        ratings.append(
            services.RatingInput(
                position=position,
                scores=scores,
                hallucination=kind,
                severity=rng.choice(flag["severities"]) if kind != "none" else "",
            )
        )
    return tuple(ratings)


@transaction.atomic
def rate_study(*, study: Study, raters: list[User], seed: int) -> int:
    """Every rater rates their whole queue; returns the number of judgments stored."""
    labels = dict(Response.objects.filter(case__study=study).values_list("pk", "arm__label"))
    stored = 0
    for index, user in enumerate(raters):
        rng = random.Random(f"{seed}:{user.username}")
        rater = SimulatedRater(
            rng=rng, severity=rng.gauss(0, 0.3), left_lean=0.15 if index % 3 == 0 else 0.0
        )
        while (seat := services.assignment_next(rater=user, study=study)) is not None:
            shown = timezone.now() - timedelta(seconds=max(15.0, rng.gauss(80, 30)))
            Assignment.objects.filter(pk=seat.pk).update(first_shown_at=shown)
            seat.first_shown_at = shown
            arms = [labels[pk] for pk in seat.shown_order]
            data = services.JudgmentInput(
                preference=_choice(rater, arms, study.design),
                ratings=_ratings(rater, arms, study.rubric),
                rationale=rng.choice(["", "", "Clearer reasoning.", "More feasible plan."]),
            )
            services.judgment_record(assignment=seat, rater=user, data=data)
            stored += 1
    return stored
