"""Simulated physicians for the demo's closed study, rating through the real services.

The planted effects mirror the alignment paradox: raters prefer SFT-sim's plans, while
GRPO-sim's labels are the most accurate (that comes from the simulated responses themselves).
The simulated physicians differ as real ones do (each has a taste for each arm's style, each
case favours some arms), so the clustered analyses and the per-judgment ones disagree visibly.
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

from clinic_eval.config import position_letter
from clinic_eval.demo import spans as demo_spans
from clinic_eval.models import Assignment, Response, Study, User
from clinic_eval.rating import services

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
# Real panels differ: each physician has a taste for each arm's style and each case favours
# some arms (standard deviations, on the preference logit scale and in Likert points). With
# these the clustered intervals are visibly wider than the per-judgment ones, as they should be.
RATER_TASTE = 0.5
CASE_EFFECT = 0.7
LIKERT_TASTE = 0.4
LIKERT_CASE_EFFECT = 0.5


@dataclass
class SimulatedRater:
    rng: random.Random
    severity: float  # a harsh or lenient rater shifts every score
    left_lean: float  # a small pull towards response A
    # Per arm: this physician's taste for its style, on preferences and on scores.
    taste: dict[str, float] = field(default_factory=dict)
    likert_taste: dict[str, float] = field(default_factory=dict)


@dataclass
class CaseEffects:
    """Per (case, arm): how much this case favours the arm, the same for every physician.
    Keyed by the case's external id, so the same seed gives the same study in any database."""

    seed: int
    preference: dict[tuple[str, str], float] = field(default_factory=dict)
    likert: dict[tuple[str, str], float] = field(default_factory=dict)

    def of(self, case_id: str, arm: str) -> tuple[float, float]:
        key = (case_id, arm)
        if key not in self.preference:
            rng = random.Random(f"{self.seed}:case:{case_id}:{arm}")
            self.preference[key] = rng.gauss(0, CASE_EFFECT)
            self.likert[key] = rng.gauss(0, LIKERT_CASE_EFFECT)
        return self.preference[key], self.likert[key]


def _choice(rater: SimulatedRater, arms: list[str], design: dict, effects: list[float]) -> str:
    rng = rater.rng
    roll = rng.random()
    if design.get("allow_both_unacceptable", True) and roll < BOTH_BAD_SHARE:
        return "none"
    if design.get("allow_tie", True) and len(arms) == 2 and roll < BOTH_BAD_SHARE + TIE_SHARE:
        return "tie"
    weights = [
        math.exp(STRENGTH.get(arm, 0.0) + rater.taste.get(arm, 0.0) + effect)
        for arm, effect in zip(arms, effects, strict=True)
    ]
    weights[0] *= math.exp(rater.left_lean)
    return position_letter(rng.choices(range(len(arms)), weights=weights)[0])


def _ratings(rater: SimulatedRater, arms: list[str], rubric: dict, effects: list[float]) -> tuple:
    rng = rater.rng
    flag = rubric["hallucination"]
    ratings = []
    for position, (arm, effect) in enumerate(zip(arms, effects, strict=True)):
        scores = {}
        shift = rater.severity + rater.likert_taste.get(arm, 0.0) + effect
        for dimension in rubric["dimensions"]:
            mean = LIKERT_MEAN.get(arm, {}).get(dimension["key"], 3.0)
            value = round(rng.gauss(mean + shift, 0.8))
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
    """Every rater rates their whole queue, marking spans where the rubric asks for them;
    returns the number of judgments stored."""
    study = Study.objects.get(pk=study.pk)  # as designed and opened, not as first created
    responses = Response.objects.filter(case__study=study).values_list(
        "pk", "arm__label", "case__external_id", "display_text", "case__fields"
    )
    labels = {pk: label for pk, label, *_ in responses}
    case_of = {pk: case_id for pk, _, case_id, *_ in responses}
    texts = {
        pk: demo_spans.ShownText(arm=label, case_id=case_id, text=text, fields=fields)
        for pk, label, case_id, text, fields in responses
    }
    arm_labels = sorted(set(labels.values()))
    cases = CaseEffects(seed=seed)
    rubric = study.rubric_config
    span_config = rubric.spans
    pull = demo_spans.CasePull(seed=seed)
    stored = 0
    for index, user in enumerate(raters):
        rng = random.Random(f"{seed}:{user.username}")
        rater = SimulatedRater(
            rng=rng,
            severity=rng.gauss(0, 0.3),
            left_lean=0.15 if index % 3 == 0 else 0.0,
            taste={arm: rng.gauss(0, RATER_TASTE) for arm in arm_labels},
            likert_taste={arm: rng.gauss(0, LIKERT_TASTE) for arm in arm_labels},
        )
        eye = demo_spans.SpanEye.of(
            seed=seed, username=user.username, categories=[c.key for c in span_config.categories]
        )
        while (seat := services.assignment_next(rater=user, study=study)) is not None:
            shown = timezone.now() - timedelta(seconds=max(15.0, rng.gauss(80, 30)))
            Assignment.objects.filter(pk=seat.pk).update(first_shown_at=shown)
            seat.first_shown_at = shown
            arms = [labels[pk] for pk in seat.shown_order]
            effects = [cases.of(case_of[pk], labels[pk]) for pk in seat.shown_order]
            # The same draws, in the same order, as before spans existed.
            preference = _choice(rater, arms, study.design, [e[0] for e in effects])
            ratings = _ratings(rater, arms, study.rubric, [e[1] for e in effects])
            rationale = rng.choice(["", "", "Clearer reasoning.", "More feasible plan."])
            # Spans draw from their own generators, so the ratings are those of a study
            # without spans, whatever the rubric says.
            spans = demo_spans.simulated_spans(
                key=f"{seed}:spans:{user.username}",
                shown=[texts[pk] for pk in seat.shown_order],
                ratings=ratings,
                eye=eye,
                pull=pull,
                config=span_config,
                flag_severities=rubric.hallucination.severities,
            )
            data = services.JudgmentInput(
                preference=preference, ratings=ratings, rationale=rationale, spans=spans
            )
            services.judgment_record(assignment=seat, rater=user, data=data)
            stored += 1
    return stored
