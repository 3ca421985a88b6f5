"""Simulated studies with planted effects, for calibration tests, benchmarks and the demo."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from clinic_eval.statistics.report import StudyTables

DIMENSIONS = ("reasoning_clarity", "treatment_feasibility")
STRATEGIES = ("IUI", "IVF", "ICSI", "PGT-A")
LAYERS = {"art_strategy": {"title": "ART strategy", "multi": False, "labels": list(STRATEGIES)}}


def simulate_study(
    *,
    judgments: int,
    strengths: Mapping[str, float],
    accuracy: Mapping[str, float] | None = None,
    hallucination: Mapping[str, float] | None = None,
    raters: int = 20,
    cases: int | None = None,
    tie_parameter: float = 0.3,
    both_bad: float = 0.05,
    seed: int = 0,
) -> StudyTables:
    """Pairwise judgments from a Davidson model with the given log-strengths, plus ratings.

    Each judgment shows two distinct arms on random sides; both responses get a Likert score
    per dimension (higher for stronger arms) and a hallucination flag. Predictions are correct
    with each arm's ``accuracy``, so accuracy and preference can be planted to disagree.
    """
    rng = np.random.default_rng(seed)
    arms = sorted(strengths)
    theta = np.array([strengths[a] for a in arms])
    k = len(arms)
    cases = cases or max(1, judgments // 4)
    case = rng.integers(0, cases, judgments)
    rater = rng.integers(0, raters, judgments)
    first = rng.integers(0, k, judgments)
    second = (first + rng.integers(1, k, judgments)) % k
    pi_a, pi_b = np.exp(theta[first]), np.exp(theta[second])
    tie = tie_parameter * np.sqrt(pi_a * pi_b)
    total = pi_a + pi_b + tie
    draw = rng.random(judgments) * total
    outcome = np.where(draw < pi_a, "a", np.where(draw < pi_a + pi_b, "b", "tie"))
    outcome = np.where(rng.random(judgments) < both_bad, "both_bad", outcome)
    a_left = rng.random(judgments) < 0.5
    arm_a, arm_b = np.array(arms)[first], np.array(arms)[second]
    judgment_table = pd.DataFrame(
        {
            "case_id": case,
            "rater_id": rater,
            "arm_a": arm_a,
            "arm_b": arm_b,
            "outcome": outcome,
            "left_arm": np.where(a_left, arm_a, arm_b),
            "right_arm": np.where(a_left, arm_b, arm_a),
        }
    )

    shown = pd.DataFrame(
        {
            "case_id": np.concatenate([case, case]),
            "rater_id": np.concatenate([rater, rater]),
            "arm": np.concatenate([arm_a, arm_b]),
            "strength": np.concatenate([theta[first], theta[second]]),
        }
    ).drop_duplicates(["case_id", "rater_id", "arm"])
    rating_parts = []
    for dimension in DIMENSIONS:
        noise = rng.normal(0, 1, len(shown))
        score = np.clip(np.rint(3 + shown["strength"].to_numpy() + noise), 1, 5).astype(int)
        rating_parts.append(
            shown[["case_id", "rater_id", "arm"]].assign(dimension=dimension, score=score)
        )
    ratings = pd.concat(rating_parts, ignore_index=True)

    rates = hallucination or dict.fromkeys(arms, 0.1)
    flagged = rng.random(len(shown)) < shown["arm"].map(rates).to_numpy()
    kind = np.where(flagged, np.where(rng.random(len(shown)) < 0.5, "factual", "reasoning"), "none")
    flags = shown[["case_id", "rater_id", "arm"]].assign(kind=kind)

    truth_labels = rng.choice(STRATEGIES, cases)
    truth = pd.DataFrame(
        {
            "case_id": np.arange(cases),
            "stratum": np.where(rng.random(cases) < 0.7, "General", "Confusion"),
            "art_strategy": truth_labels,
        }
    )
    correct_rate = accuracy or dict.fromkeys(arms, 0.7)
    prediction_parts = []
    for arm in arms:
        right = rng.random(cases) < correct_rate[arm]
        wrong = rng.choice(STRATEGIES, cases)
        prediction_parts.append(
            pd.DataFrame(
                {
                    "case_id": np.arange(cases),
                    "arm": arm,
                    "art_strategy": np.where(right, truth_labels, wrong),
                }
            )
        )
    predictions = pd.concat(prediction_parts, ignore_index=True)
    return StudyTables(
        judgments=judgment_table,
        ratings=ratings,
        flags=flags,
        predictions=predictions,
        truth=truth,
    )
