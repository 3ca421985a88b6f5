"""Power and sample size for a study's primary endpoint, by simulation through its analysis.

Before physicians spend their hours, a coordinator asks: with this many cases, physicians and
raters per item, and physicians and cases as heterogeneous as ours, how likely is the primary
analysis to find the effect we expect, and what is the smallest effect it would find 80% of the
time? The answer is simulated, not read off a formula: seeded studies of the planned shape are
drawn from ``crossed_simulation`` (rater taste and case effects as given) and each is analysed
by exactly the clustered estimator the report's primary endpoint uses; the power is the share
that reject at the plan's alpha, with its Monte Carlo error.

The effect is given on the scale the report shows: for a preference endpoint, the share of
decisive judgments won by the first arm (0.5: no difference), converted to the simulator's
strength difference through the population share (a ratio of expectations over rater taste and
case effects); for a Likert endpoint, the population mean score difference in points (after
rounding to the 1-5 scale), converted to the latent shift by quadrature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import pandas as pd
from scipy import optimize, stats

from clinic_eval.statistics import crossed_simulation as sim
from clinic_eval.statistics import paired

TARGET_POWER = 0.8
CURVE_FACTORS = (0.25, 0.5, 1.0, 1.5, 2.0)
MDE_STEPS = 7
PRIMARY_PAIR = ("A", "B")
# Simulated scores centre on 3 of 1-5, so a mean difference near 2 points is the most there is.
LIKERT_LARGEST = 1.8


@dataclass(frozen=True)
class PlannerInputs:
    kind: Literal["preference", "likert"]
    effect: float
    cases: int
    raters: int
    raters_per_item: int
    rater_taste: float = 0.0
    case_effect: float = 0.0
    pairs_per_case: int = 1  # comparisons per case in the design, for the physician-hours
    repeat_fraction: float = 0.0
    alpha: float = 0.05
    simulations: int = 500
    seed: int = 0
    seconds_per_item: float = 90.0
    tie: float = 0.3
    both_bad: float = 0.05

    def check(self) -> list[str]:
        """Every reason the inputs cannot be planned with, in words a form can show."""
        problems = []
        if self.kind == "preference" and not 0.0 < self.effect < 1.0:
            problems.append("the expected win rate must lie strictly between 0 and 1")
        if self.kind == "likert" and not -LIKERT_LARGEST <= self.effect <= LIKERT_LARGEST:
            problems.append(
                f"the expected Likert difference must lie between -{LIKERT_LARGEST} and "
                f"{LIKERT_LARGEST} points (the simulated arms start mid-scale on 1-5)"
            )
        if self.cases < 3:
            problems.append("at least 3 cases are needed")
        if self.raters < 3:
            problems.append("at least 3 physicians are needed for an analysis that generalises")
        if not 1 <= self.raters_per_item <= self.raters:
            problems.append("raters per item must be between 1 and the number of physicians")
        if not 0.0 <= self.rater_taste <= 3.0 or not 0.0 <= self.case_effect <= 3.0:
            problems.append("heterogeneity standard deviations must lie between 0 and 3")
        if not 100 <= self.simulations <= 5000:
            problems.append("simulations must be between 100 and 5,000")
        if self.cases * self.raters_per_item > 2_000_000:
            problems.append("the planned study is too large to simulate here")
        return problems


@dataclass(frozen=True)
class PowerPoint:
    cases: int
    effect: float
    power: float
    mc_error: float


@dataclass(frozen=True)
class PlannerResult:
    power: float
    mc_error: float
    simulations: int
    minimum_detectable_effect: float | None
    mde_note: str
    curve: list[PowerPoint]
    items_per_rater: float
    seats: int
    physician_hours: float
    seconds_per_item: float
    estimator: str
    inputs: dict[str, object] = field(default_factory=dict)


def _shape(inputs: PlannerInputs, cases: int) -> sim.StudyShape:
    return sim.StudyShape(
        cases=cases,
        raters=inputs.raters,
        raters_per_item=inputs.raters_per_item,
        arms=PRIMARY_PAIR,
        pairs=(PRIMARY_PAIR,),
        tie=inputs.tie,
        both_bad=inputs.both_bad,
    )


def _heterogeneity(inputs: PlannerInputs) -> sim.Heterogeneity:
    return sim.Heterogeneity(rater_taste=inputs.rater_taste, case_effect=inputs.case_effect)


def planted_effects(inputs: PlannerInputs, effect: float) -> sim.Effects:
    """The simulator's effects that give ``effect`` on the report's scale."""
    heterogeneity = _heterogeneity(inputs)
    shape = _shape(inputs, inputs.cases)
    if inputs.kind == "preference":

        def gap(strength: float) -> float:
            planted = sim.Effects(strength={"A": strength})
            return sim.true_decisive_share(shape, heterogeneity, planted, PRIMARY_PAIR) - effect

        strength = optimize.brentq(gap, -15.0, 15.0, xtol=1e-10)
        return sim.Effects(strength={"A": strength})
    sd = math.sqrt(
        heterogeneity.rater_taste**2
        + heterogeneity.case_effect**2
        + heterogeneity.rater_severity**2
        + heterogeneity.case_difficulty**2
        + 1.0
    )

    def mean_score(shift: float) -> float:
        # E[clip(round(X), 1, 5)] = 1 + sum over k of P(X >= k + 1/2), X ~ N(3 + shift, sd^2).
        return 1.0 + float(np.sum(stats.norm.sf((np.arange(1, 5) + 0.5 - 3.0 - shift) / sd)))

    baseline = mean_score(0.0)
    shift = optimize.brentq(lambda s: mean_score(s) - baseline - effect, -30.0, 30.0, xtol=1e-10)
    return sim.Effects(likert={"A": shift})


def null_effect(kind: str) -> float:
    return 0.5 if kind == "preference" else 0.0


def power_at(inputs: PlannerInputs, *, cases: int, effect: float, seed: int) -> PowerPoint:
    """Power of the primary analysis for ``cases`` cases and a true ``effect``."""
    studies = sim.simulate_studies(
        _shape(inputs, cases),
        _heterogeneity(inputs),
        planted_effects(inputs, effect),
        studies=inputs.simulations,
        seed=seed,
    )
    if inputs.kind == "preference":
        result = sim.preference_shares(studies, confidence=1 - inputs.alpha)
    else:
        result = sim.likert_differences(studies, confidence=1 - inputs.alpha)
    rejected = result.p_value[:, 0] < inputs.alpha
    power = float(np.mean(rejected))
    return PowerPoint(
        cases=cases,
        effect=effect,
        power=power,
        mc_error=math.sqrt(max(power * (1 - power), 1e-12) / inputs.simulations),
    )


def plan(
    inputs: PlannerInputs, progress: Callable[[int, int], None] | None = None
) -> PlannerResult:
    """Power at the planned design, the power curve over cases, and the minimum detectable
    effect at 80% power, all through the primary analysis; seeded, so the same inputs give the
    same numbers. ``progress(done, total)`` is called after each batch of simulated studies."""
    problems = inputs.check()
    if problems:
        raise ValueError("; ".join(problems))
    total = len(CURVE_FACTORS) + MDE_STEPS + 2
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done, total), total)

    # One seed for every batch: common random numbers make the curves smooth and monotone.
    seed = inputs.seed
    curve = []
    for cases in sorted({max(3, int(round(inputs.cases * f))) for f in CURVE_FACTORS}):
        curve.append(power_at(inputs, cases=cases, effect=inputs.effect, seed=seed))
        tick()
    at_design = next(p for p in curve if p.cases == max(3, int(round(inputs.cases))))
    mde, note = _minimum_detectable_effect(inputs, seed, tick)
    if progress is not None:
        progress(total, total)
    seats = int(
        math.ceil(
            inputs.cases
            * inputs.pairs_per_case
            * inputs.raters_per_item
            * (1 + inputs.repeat_fraction)
        )
    )
    return PlannerResult(
        power=at_design.power,
        mc_error=at_design.mc_error,
        simulations=inputs.simulations,
        minimum_detectable_effect=mde,
        mde_note=note,
        curve=curve,
        items_per_rater=seats / inputs.raters,
        seats=seats,
        physician_hours=seats * inputs.seconds_per_item / 3600,
        seconds_per_item=inputs.seconds_per_item,
        estimator="the primary analysis: two-way cluster-robust, t with Satterthwaite df",
        inputs={name: getattr(inputs, name) for name in inputs.__dataclass_fields__},
    )


def _minimum_detectable_effect(
    inputs: PlannerInputs, seed: int, tick: Callable[[], None]
) -> tuple[float | None, str]:
    """The smallest effect, in the direction of the expected one, with 80% power: found by
    bisection on the effect scale with the same simulated studies at every step."""
    null = null_effect(inputs.kind)
    direction = 1.0 if inputs.effect >= null else -1.0
    largest = 0.49 if inputs.kind == "preference" else LIKERT_LARGEST  # distance from the null
    low, high = 0.0, largest
    top = power_at(inputs, cases=inputs.cases, effect=null + direction * high, seed=seed)
    tick()
    if top.power < TARGET_POWER:
        return None, (
            f"even an effect of {null + direction * high:.2f} is found less than 80% of the "
            "time with this design"
        )
    for _ in range(MDE_STEPS):
        middle = (low + high) / 2
        point = power_at(inputs, cases=inputs.cases, effect=null + direction * middle, seed=seed)
        tick()
        if point.power >= TARGET_POWER:
            high = middle
        else:
            low = middle
    tick()
    return null + direction * high, (f"bisection to within {(high - low):.3f} of the effect scale")


@dataclass(frozen=True)
class Heterogeneity:
    """Rater taste and case effect SDs per arm, as the simulator takes them, estimated from a
    closed study by the mixed model with crossed random intercepts: the pair's rater and case
    intercepts have variance 2 x (per-arm SD)^2."""

    rater_taste: float
    case_effect: float
    source: str
    rows: int


def heterogeneity_from_tables(
    judgments: pd.DataFrame,
    ratings: pd.DataFrame,
    kind: str,
    arms: tuple[str, str] | None = None,
    dimension: str = "",
) -> Heterogeneity:
    """Estimate heterogeneity from a study's judgments (preference) or ratings (Likert) on one
    arm pair (``arms``, else the pair with the most judgments)."""
    from clinic_eval.statistics import clustered, mixed

    if kind == "preference":
        decisive = judgments[judgments["outcome"].isin(["a", "b"])]
        if decisive.empty:
            raise ValueError("the study has no decisive judgments")
        pair_key = decisive[["arm_a", "arm_b"]].apply(lambda r: tuple(sorted(r)), axis=1)
        # pair_key holds sorted (arm, arm) tuples; pandas types idxmax as any Hashable.
        chosen = (
            tuple(sorted(arms)) if arms else cast(tuple[str, str], pair_key.value_counts().idxmax())
        )
        rows = decisive[pair_key == chosen]
        if rows.empty:
            raise ValueError(f"the study compared no {chosen[0]} with {chosen[1]}")
        won = np.where(rows["arm_a"] == chosen[0], rows["outcome"] == "a", rows["outcome"] == "b")
        fit = mixed.glmm_logit(
            won.astype(float),
            np.ones((len(rows), 1)),
            clustered.codes(rows["case_id"]),
            clustered.codes(rows["rater_id"]),
        )
        source = (
            f"logistic mixed model on {len(rows)} decisive judgments, {chosen[0]} vs {chosen[1]}"
        )
    else:
        dimension = dimension or sorted(ratings["dimension"].unique())[0]
        all_arms = sorted(ratings["arm"].unique())
        chosen = tuple(sorted(arms)) if arms else tuple(all_arms[:2])
        wide = paired.score_tables(ratings, list(chosen), [dimension])[dimension].dropna()
        if wide.empty:
            raise ValueError(f"no physician scored both {chosen[0]} and {chosen[1]}")
        fit = mixed.lmm(
            (wide[chosen[0]] - wide[chosen[1]]).to_numpy(),
            np.ones((len(wide), 1)),
            clustered.codes(wide.index.get_level_values("case_id")),
            clustered.codes(wide.index.get_level_values("rater_id")),
        )
        rows = wide
        source = (
            f"linear mixed model on {len(wide)} paired {dimension} scores, "
            f"{chosen[0]} vs {chosen[1]}"
        )
    return Heterogeneity(
        rater_taste=float(fit.sd_rater / math.sqrt(2)),
        case_effect=float(fit.sd_case / math.sqrt(2)),
        source=source,
        rows=len(rows),
    )
