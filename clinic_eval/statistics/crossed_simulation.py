"""Many simulated studies at once with rater and case heterogeneity, as real panels have.

Used by the calibration tests (null studies: no difference between arms in the population of
physicians and cases), the power planner (planted effects) and the benchmarks. Every study is a
balanced blinded design like the one the app freezes: each case's arm pairs are each shown to
``raters_per_item`` distinct physicians, seats dealt round the (shuffled) panel so that loads
differ by at most one.

The model, per study:

* rater taste: each physician has a preference for each arm's style, ``N(0, rater_taste^2)``
  per arm (logit scale for preferences and hallucination flags, Likert points for scores);
* case effect: each case favours each arm by ``N(0, case_effect^2)``, the same for every
  physician who reads it;
* a preference between X and Y with ``eta = strength_X - strength_Y + taste + case effect``:
  "both unacceptable" with probability ``both_bad``, else Davidson's model, X with weight
  ``exp(eta / 2)``, Y with ``exp(-eta / 2)`` and a tie with ``tie``;
* each response shown gets one Likert score per dimension, ``round(3 + likert_X + taste + case
  effect + rater severity + case difficulty + N(0, 1))`` clipped to 1..5, and a hallucination
  flag with probability ``expit(logit(hallucination_X) + taste + case effect)``.

Random effects of the three outcomes are drawn independently. All arrays are flat, one row per
judgment (or rated response), with the study index in ``study``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DIMENSIONS = ("reasoning_clarity", "treatment_feasibility")


@dataclass(frozen=True)
class StudyShape:
    cases: int
    raters: int
    raters_per_item: int
    arms: tuple[str, ...] = ("A", "B", "C")
    # Only these pairs are compared (default: every pair of arms).
    pairs: tuple[tuple[str, str], ...] = ()
    tie: float = 0.3
    both_bad: float = 0.05

    def arm_pairs(self) -> tuple[tuple[str, str], ...]:
        return self.pairs or tuple(itertools.combinations(self.arms, 2))

    def items_per_rater(self) -> float:
        return self.cases * len(self.arm_pairs()) * self.raters_per_item / self.raters


@dataclass(frozen=True)
class Heterogeneity:
    rater_taste: float = 0.0
    case_effect: float = 0.0
    rater_severity: float = 0.5
    case_difficulty: float = 0.5


@dataclass(frozen=True)
class Effects:
    """What the population truly holds: per-arm strengths (logit), Likert shifts (points) and
    hallucination rates at the median rater and case."""

    strength: Mapping[str, float] = field(default_factory=dict)
    likert: Mapping[str, float] = field(default_factory=dict)
    hallucination: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SimulatedStudies:
    studies: int
    shape: StudyShape
    # One row per judgment.
    study: np.ndarray
    case: np.ndarray
    rater: np.ndarray
    pair: np.ndarray  # index into shape.arm_pairs()
    arm_a: np.ndarray  # index into shape.arms
    arm_b: np.ndarray
    outcome: np.ndarray  # 0: a, 1: b, 2: tie, 3: both unacceptable
    a_on_left: np.ndarray
    # One row per rated response (case, rater, arm), with a score per dimension.
    response_study: np.ndarray
    response_case: np.ndarray
    response_rater: np.ndarray
    response_arm: np.ndarray
    scores: np.ndarray  # (responses, dimensions)
    flagged: np.ndarray

    def judgments(self, study: int) -> pd.DataFrame:
        """One study's judgments as the report's tidy table."""
        rows = self.study == study
        names = np.array(self.shape.arms, dtype=object)
        outcomes = np.array(["a", "b", "tie", "both_bad"], dtype=object)
        return pd.DataFrame(
            {
                "case_id": self.case[rows],
                "rater_id": self.rater[rows],
                "arm_a": names[self.arm_a[rows]],
                "arm_b": names[self.arm_b[rows]],
                "outcome": outcomes[self.outcome[rows]],
            }
        )

    def ratings(self, study: int, dimension: int = 0) -> pd.DataFrame:
        """One study's scores on one dimension as the report's tidy table."""
        rows = self.response_study == study
        names = np.array(self.shape.arms, dtype=object)
        return pd.DataFrame(
            {
                "case_id": self.response_case[rows],
                "rater_id": self.response_rater[rows],
                "arm": names[self.response_arm[rows]],
                "dimension": DIMENSIONS[dimension],
                "score": self.scores[rows, dimension],
            }
        )


def _seats(
    rng: np.random.Generator, studies: int, comparisons: int, raters: int, per_item: int
) -> np.ndarray:
    """(studies, comparisons, per_item) rater indices: distinct within a comparison, loads
    within one of each other, order shuffled per study."""
    if per_item > raters:
        raise ValueError(f"{per_item} raters per item need at least {per_item} raters")
    order = rng.permuted(np.tile(np.arange(raters), (studies, 1)), axis=1)
    # Comparisons shuffled too, so a rater's cases are not always consecutive ones.
    comparison_order = rng.permuted(np.tile(np.arange(comparisons), (studies, 1)), axis=1)
    seat = (comparison_order[:, :, None] * per_item + np.arange(per_item)) % raters
    return np.take_along_axis(order, seat.reshape(studies, -1), axis=1).reshape(
        studies, comparisons, per_item
    )


def simulate_studies(
    shape: StudyShape,
    heterogeneity: Heterogeneity,
    effects: Effects | None = None,
    *,
    studies: int,
    seed: int,
) -> SimulatedStudies:
    effects = effects or Effects()
    rng = np.random.default_rng(seed)
    arms = shape.arms
    k = len(arms)
    pairs = shape.arm_pairs()
    pair_index = np.array([[arms.index(x), arms.index(y)] for x, y in pairs])
    n_pairs = len(pairs)
    s, c, r, per = studies, shape.cases, shape.raters, shape.raters_per_item
    comparisons = c * n_pairs
    seats = _seats(rng, s, comparisons, r, per)  # (s, comparisons, per)

    study = np.repeat(np.arange(s), comparisons * per)
    comparison = np.tile(np.repeat(np.arange(comparisons), per), s)
    case = comparison // n_pairs
    pair = comparison % n_pairs
    rater = seats.reshape(-1)
    x, y = pair_index[pair, 0], pair_index[pair, 1]

    strength = np.array([effects.strength.get(a, 0.0) for a in arms])
    taste = rng.normal(0.0, heterogeneity.rater_taste, (s, r, k))
    advantage = rng.normal(0.0, heterogeneity.case_effect, (s, c, k))
    eta = (
        strength[x]
        - strength[y]
        + taste[study, rater, x]
        - taste[study, rater, y]
        + advantage[study, case, x]
        - advantage[study, case, y]
    )
    weight_a, weight_b = np.exp(eta / 2), np.exp(-eta / 2)
    draw = rng.random(eta.size) * (weight_a + weight_b + shape.tie)
    outcome = np.where(draw < weight_a, 0, np.where(draw < weight_a + weight_b, 1, 2))
    outcome = np.where(rng.random(eta.size) < shape.both_bad, 3, outcome)
    a_on_left = rng.random(eta.size) < 0.5

    # Every (case, rater, arm) the rater was shown, once.
    shown_arm = np.concatenate([x, y])
    shown = np.unique(
        ((np.tile(study, 2) * c + np.tile(case, 2)) * r + np.tile(rater, 2)) * k + shown_arm
    )
    response_arm = shown % k
    rest = shown // k
    response_rater = rest % r
    rest //= r
    response_case = rest % c
    response_study = rest // c

    likert = np.array([effects.likert.get(a, 0.0) for a in arms])
    scores = np.empty((shown.size, len(DIMENSIONS)))
    for d in range(len(DIMENSIONS)):
        taste_d = rng.normal(0.0, heterogeneity.rater_taste, (s, r, k))
        advantage_d = rng.normal(0.0, heterogeneity.case_effect, (s, c, k))
        severity = rng.normal(0.0, heterogeneity.rater_severity, (s, r))
        difficulty = rng.normal(0.0, heterogeneity.case_difficulty, (s, c))
        latent = (
            3.0
            + likert[response_arm]
            + taste_d[response_study, response_rater, response_arm]
            + advantage_d[response_study, response_case, response_arm]
            + severity[response_study, response_rater]
            + difficulty[response_study, response_case]
            + rng.normal(0.0, 1.0, shown.size)
        )
        scores[:, d] = np.clip(np.rint(latent), 1, 5)

    base = np.array([_logit(effects.hallucination.get(a, 0.08)) for a in arms])
    taste_h = rng.normal(0.0, heterogeneity.rater_taste, (s, r, k))
    advantage_h = rng.normal(0.0, heterogeneity.case_effect, (s, c, k))
    flag_logit = (
        base[response_arm]
        + taste_h[response_study, response_rater, response_arm]
        + advantage_h[response_study, response_case, response_arm]
    )
    flagged = rng.random(shown.size) < 1 / (1 + np.exp(-flag_logit))
    return SimulatedStudies(
        studies=s,
        shape=shape,
        study=study,
        case=case,
        rater=rater,
        pair=pair,
        arm_a=x,
        arm_b=y,
        outcome=outcome,
        a_on_left=a_on_left,
        response_study=response_study,
        response_case=response_case,
        response_rater=response_rater,
        response_arm=response_arm,
        scores=scores,
        flagged=flagged,
    )


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(61)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def normal_expectation(function: object, mean: float, sd: float) -> float:
    """E[f(Z)] for Z ~ N(mean, sd^2), by Gauss-Hermite quadrature (exact enough for truths)."""
    values = function(mean + sd * _NODES)  # type: ignore[operator]
    return float(np.sum(_WEIGHTS * values))


def true_decisive_share(
    shape: StudyShape, heterogeneity: Heterogeneity, effects: Effects, pair: Sequence[str]
) -> float:
    """Population share of decisive judgments won by ``pair[0]``: a ratio of expectations,
    since a judgment is more often decisive when the two responses differ more."""
    x, y = pair
    mean = effects.strength.get(x, 0.0) - effects.strength.get(y, 0.0)
    sd = math.sqrt(2 * heterogeneity.rater_taste**2 + 2 * heterogeneity.case_effect**2)

    def won(eta: np.ndarray) -> np.ndarray:
        share: np.ndarray = np.exp(eta / 2) / (np.exp(eta / 2) + np.exp(-eta / 2) + shape.tie)
        return share

    def decisive(eta: np.ndarray) -> np.ndarray:
        a, b = np.exp(eta / 2), np.exp(-eta / 2)
        share: np.ndarray = (a + b) / (a + b + shape.tie)
        return share

    return normal_expectation(won, mean, sd) / normal_expectation(decisive, mean, sd)


def true_tie_half_share(
    shape: StudyShape, heterogeneity: Heterogeneity, effects: Effects, pair: Sequence[str]
) -> float:
    """Population mean of 1 / 0.5 / 0 (win, tie, loss) for ``pair[0]``, both-bad left out,
    weighting studies' judgments equally as the estimator does."""
    x, y = pair
    mean = effects.strength.get(x, 0.0) - effects.strength.get(y, 0.0)
    sd = math.sqrt(2 * heterogeneity.rater_taste**2 + 2 * heterogeneity.case_effect**2)

    def score(eta: np.ndarray) -> np.ndarray:
        a, b = np.exp(eta / 2), np.exp(-eta / 2)
        half_share: np.ndarray = (a + 0.5 * shape.tie) / (a + b + shape.tie)
        return half_share

    return normal_expectation(score, mean, sd)


def true_hallucination_rate(heterogeneity: Heterogeneity, rate: float) -> float:
    sd = math.sqrt(heterogeneity.rater_taste**2 + heterogeneity.case_effect**2)
    return normal_expectation(lambda z: 1 / (1 + np.exp(-z)), _logit(rate), sd)


@dataclass(frozen=True)
class BatchResult:
    """One endpoint over many simulated studies: arrays of shape (studies, units), units
    being arm pairs or arms."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray

    def rejects(self, alpha: float = 0.05) -> np.ndarray:
        return self.p_value < alpha

    def covers(self, truth: np.ndarray | float) -> np.ndarray:
        return (self.low <= truth) & (truth <= self.high)


def _batch(
    values: np.ndarray,
    group: np.ndarray,
    case: np.ndarray,
    rater: np.ndarray,
    shape: tuple[int, int],
    *,
    null: float,
    confidence: float,
    proportion: bool = False,
) -> BatchResult:
    from clinic_eval.statistics.clustered import crossed_means, estimates

    fit = crossed_means(values, group, case, rater, shape[0] * shape[1])
    results = estimates(fit, null=null, confidence=confidence, proportion=proportion)

    def field_of(name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in results], dtype=float).reshape(shape)

    return BatchResult(field_of("estimate"), field_of("low"), field_of("high"), field_of("p_value"))


def preference_shares(sim: SimulatedStudies, confidence: float = 0.95) -> BatchResult:
    """Per study and pair: the share of decisive judgments won by the pair's first arm."""
    pairs = len(sim.shape.arm_pairs())
    keep = sim.outcome <= 1
    return _batch(
        (sim.outcome[keep] == 0).astype(float),
        (sim.study * pairs + sim.pair)[keep],
        sim.case[keep],
        sim.rater[keep],
        (sim.studies, pairs),
        null=0.5,
        confidence=confidence,
    )


def tie_half_shares(sim: SimulatedStudies, confidence: float = 0.95) -> BatchResult:
    pairs = len(sim.shape.arm_pairs())
    keep = sim.outcome <= 2
    score = np.where(sim.outcome == 0, 1.0, np.where(sim.outcome == 2, 0.5, 0.0))
    return _batch(
        score[keep],
        (sim.study * pairs + sim.pair)[keep],
        sim.case[keep],
        sim.rater[keep],
        (sim.studies, pairs),
        null=0.5,
        confidence=confidence,
    )


def _paired(sim: SimulatedStudies, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """For every pair of arms, the (case, rater) units that rated both: the value of the
    first arm minus the second's, and group, case and rater codes."""
    shape = sim.shape
    base = (
        sim.response_study.astype(np.int64) * shape.cases + sim.response_case
    ) * shape.raters + sim.response_rater
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for index, (x, y) in enumerate(shape.arm_pairs()):
        rows_x = np.flatnonzero(sim.response_arm == shape.arms.index(x))
        rows_y = np.flatnonzero(sim.response_arm == shape.arms.index(y))
        common, at_x, at_y = np.intersect1d(
            base[rows_x], base[rows_y], assume_unique=True, return_indices=True
        )
        parts[0].append(values[rows_x[at_x]] - values[rows_y[at_y]])
        study = common // (shape.cases * shape.raters)
        parts[1].append(study * len(shape.arm_pairs()) + index)
        parts[2].append((common // shape.raters) % shape.cases)
        parts[3].append(common % shape.raters)
    return tuple(np.concatenate(p) for p in parts)


def _paired_means(
    sim: SimulatedStudies, values: np.ndarray, confidence: float, transform: bool = False
) -> BatchResult:
    """Per study and pair: the mean of the first arm's value minus the second's (its sign,
    with ``transform``) over the (case, rater) units that rated both."""
    difference, group, case, rater = _paired(sim, values)
    return _batch(
        np.sign(difference) if transform else difference,
        group,
        case,
        rater,
        (sim.studies, len(sim.shape.arm_pairs())),
        null=0.0,
        confidence=confidence,
    )


def likert_differences(
    sim: SimulatedStudies, dimension: int = 0, confidence: float = 0.95, *, ordinal: bool = False
) -> BatchResult:
    """Per study and pair: the mean score difference (or, ``ordinal``, the net benefit)."""
    return _paired_means(sim, sim.scores[:, dimension], confidence, transform=ordinal)


def hallucination_differences(sim: SimulatedStudies, confidence: float = 0.95) -> BatchResult:
    """Per study and pair: the difference in the share of flagged responses."""
    return _paired_means(sim, sim.flagged.astype(float), confidence)


def hallucination_rates(sim: SimulatedStudies, confidence: float = 0.95) -> BatchResult:
    k = len(sim.shape.arms)
    return _batch(
        sim.flagged.astype(float),
        sim.response_study * k + sim.response_arm,
        sim.response_case,
        sim.response_rater,
        (sim.studies, k),
        null=0.0,
        confidence=confidence,
        proportion=True,
    )


def win_rates(sim: SimulatedStudies, confidence: float = 0.95) -> BatchResult:
    """Per study and arm: the strict win rate over every judgment the arm took part in."""
    k = len(sim.shape.arms)
    arm = np.concatenate([sim.arm_a, sim.arm_b])
    won = np.concatenate([sim.outcome == 0, sim.outcome == 1]).astype(float)
    study = np.concatenate([sim.study, sim.study])
    return _batch(
        won,
        study * k + arm,
        np.concatenate([sim.case, sim.case]),
        np.concatenate([sim.rater, sim.rater]),
        (sim.studies, k),
        null=0.0,
        confidence=confidence,
        proportion=True,
    )


def true_win_rate(shape: StudyShape, heterogeneity: Heterogeneity) -> float:
    """Population strict win rate of any arm when no arm differs (the null)."""
    sd = math.sqrt(2 * heterogeneity.rater_taste**2 + 2 * heterogeneity.case_effect**2)

    def win(eta: np.ndarray) -> np.ndarray:
        a, b = np.exp(eta / 2), np.exp(-eta / 2)
        share: np.ndarray = a / (a + b + shape.tie)
        return share

    return (1 - shape.both_bad) * normal_expectation(win, 0.0, sd)


def sign_test_p(sim: SimulatedStudies) -> np.ndarray:
    """The per-judgment sign test of every (study, pair): the naive test, for comparison."""
    from scipy import stats

    pairs = len(sim.shape.arm_pairs())
    group = sim.study * pairs + sim.pair
    size = sim.studies * pairs
    wins = np.bincount(group[sim.outcome == 0], minlength=size)
    losses = np.bincount(group[sim.outcome == 1], minlength=size)
    n = wins + losses
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(wins, losses), n, 0.5))
    return np.where(wins == losses, 1.0, p).reshape(sim.studies, pairs)
