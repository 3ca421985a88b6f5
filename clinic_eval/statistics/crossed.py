"""The study's primary analyses with crossed clustering: preferences, Likert scores,
hallucination flags, position and length, each estimated so that it generalises to physicians
and cases like these (``clustered``), not only to the judgments collected.

Inputs are the report's tidy tables (``report.StudyTables``); outputs are DataFrames, one row
per arm pair (or arm, or dimension and pair), with the estimate, its interval, the t-test's
p-value and degrees of freedom, the clusters it rests on and which estimator ran.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from scipy import stats

from clinic_eval.statistics import clustered
from clinic_eval.statistics.clustered import CrossedEstimate, crossed_means, estimates
from clinic_eval.statistics.hallucination import flag_units
from clinic_eval.statistics.intervals import wilson_interval
from clinic_eval.statistics.paired import PAIR_KEYS, score_tables
from clinic_eval.statistics.preference import judgment_codes

ESTIMATE_FIELDS = (
    "estimate",
    "low",
    "high",
    "se",
    "df",
    "p_value",
    "cases",
    "raters",
    "design_effect",
    "rater_share",
    "note",
    "not_estimable",
)


def _columns(prefix: str, results: Sequence[CrossedEstimate]) -> dict[str, list[Any]]:
    """Flat columns ``<prefix>_<field>`` from a list of estimates (one per row)."""
    columns: dict[str, list[Any]] = {}
    for name in ESTIMATE_FIELDS:
        key = prefix if name == "estimate" else f"{prefix}_{name}"
        columns[key] = [asdict(result)[name] for result in results]
    return columns


def _labels(**extra: str) -> dict[str, str]:
    return {
        "estimator": clustered.ESTIMATOR,
        "generalises_to": clustered.GENERALISES_TO,
        **extra,
    }


# --- Preferences ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CodedJudgments:
    """Pairwise judgments as integer codes, computed once and shared by every analysis."""

    arms: tuple[str, ...]
    ia: np.ndarray
    ib: np.ndarray
    outcome: np.ndarray  # positions in preference.OUTCOMES: a, b, tie, both_bad
    case: np.ndarray
    rater: np.ndarray

    @property
    def codes(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
        """What ``preference.judgment_codes`` returns, for the per-judgment analyses."""
        return self.arms, self.ia, self.ib, self.outcome

    @property
    def cases(self) -> int:
        return int(self.case.max(initial=-1)) + 1

    @property
    def raters(self) -> int:
        return int(self.rater.max(initial=-1)) + 1


def code_judgments(judgments: pd.DataFrame) -> CodedJudgments:
    arms, ia, ib, outcome = judgment_codes(judgments)
    return CodedJudgments(
        arms=arms,
        ia=ia,
        ib=ib,
        outcome=outcome,
        case=clustered.codes(judgments["case_id"]),
        rater=clustered.codes(judgments["rater_id"]),
    )


def _coded(judgments: pd.DataFrame | CodedJudgments) -> CodedJudgments:
    return judgments if isinstance(judgments, CodedJudgments) else code_judgments(judgments)


def preference_pairs(
    judgments: pd.DataFrame | CodedJudgments, confidence: float = 0.95
) -> pd.DataFrame:
    """Per unordered arm pair (``arm_1 < arm_2``): the probability that arm_1 is preferred
    among decisive judgments, and its tie-as-half rate (ties count half, "both unacceptable"
    left out), each with a clustered interval and a t-test against 1/2."""
    coded = _coded(judgments)
    arms, ia, ib, outcome = coded.arms, coded.ia, coded.ib, coded.outcome
    k = len(arms)
    swap = ia > ib
    pair = np.where(swap, ib, ia) * k + np.where(swap, ia, ib)
    first_won = ((outcome == 0) & ~swap) | ((outcome == 1) & swap)
    case, rater = coded.case, coded.rater
    present = np.unique(pair)
    group = np.searchsorted(present, pair)
    decisive = outcome <= 1
    not_bad = outcome <= 2
    score = np.where(first_won, 1.0, np.where(outcome == 2, 0.5, 0.0))
    share = crossed_means(
        first_won[decisive].astype(float),
        group[decisive],
        case[decisive],
        rater[decisive],
        len(present),
    )
    half = crossed_means(
        score[not_bad], group[not_bad], case[not_bad], rater[not_bad], len(present)
    )
    names = np.array(arms, dtype=object)
    table = pd.DataFrame(
        {
            "arm_1": names[present // k],
            "arm_2": names[present % k],
            "decisive": share.variance.n.astype(int),
            **_columns("share_1", estimates(share, null=0.5, confidence=confidence)),
            "judgments_tie_half": half.variance.n.astype(int),
            **_columns("tie_half_1", estimates(half, null=0.5, confidence=confidence)),
        }
    )
    return table.assign(**_labels())


def win_rates(judgments: pd.DataFrame | CodedJudgments, confidence: float = 0.95) -> pd.DataFrame:
    """Per arm: the strict win rate (wins over every judgment it took part in) and the
    tie-as-half rate, with clustered intervals on the logit scale."""
    coded = _coded(judgments)
    arms, ia, ib, outcome = coded.arms, coded.ia, coded.ib, coded.outcome
    case, rater = coded.case, coded.rater
    arm = np.concatenate([ia, ib])
    won = np.concatenate([outcome == 0, outcome == 1]).astype(float)
    tied = np.concatenate([outcome == 2, outcome == 2])
    bad = np.concatenate([outcome == 3, outcome == 3])
    cases, raters = np.concatenate([case, case]), np.concatenate([rater, rater])
    strict = crossed_means(won, arm, cases, raters, len(arms))
    keep = ~bad
    half = crossed_means((won + 0.5 * tied)[keep], arm[keep], cases[keep], raters[keep], len(arms))
    table = pd.DataFrame(
        {
            "arm": list(arms),
            **_columns(
                "win_rate", estimates(strict, confidence=confidence, proportion=True, test=False)
            ),
            **_columns(
                "tie_half", estimates(half, confidence=confidence, proportion=True, test=False)
            ),
        }
    )
    return table.assign(**_labels())


def best_of_n_shares(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per arm in best-of-N tasks: the share of its showings in which it was chosen as best,
    with a clustered interval (logit scale) and the share chance would give. ``rows`` has
    ``case_id``, ``rater_id``, ``arms`` (the arms shown) and ``winner`` (None: none chosen)."""
    arm_rows, won, chance, case_labels, rater_labels = [], [], [], [], []
    for case_id, rater_id, arms, winner in zip(
        rows["case_id"], rows["rater_id"], rows["arms"], rows["winner"], strict=True
    ):
        for arm in arms:
            arm_rows.append(arm)
            won.append(1.0 if winner == arm else 0.0)
            chance.append(1 / len(arms))
            case_labels.append(case_id)
            rater_labels.append(rater_id)
    if not arm_rows:
        return pd.DataFrame()
    arm_code, names = pd.factorize(pd.Series(arm_rows, dtype=object), sort=True)
    fit = crossed_means(
        np.asarray(won),
        arm_code,
        clustered.codes(case_labels),
        clustered.codes(rater_labels),
        len(names),
    )
    shown = np.bincount(arm_code, minlength=len(names))
    return pd.DataFrame(
        {
            "arm": list(names),
            "shown": shown.astype(int),
            "chance_share": np.bincount(arm_code, np.asarray(chance), len(names)) / shown,
            **_columns("share", estimates(fit, confidence=confidence, proportion=True, test=False)),
        }
    ).assign(**_labels())


# --- Likert ---------------------------------------------------------------------------------


def likert_pairs(
    ratings: pd.DataFrame,
    arms: Sequence[str],
    dimensions: Sequence[str],
    confidence: float = 0.95,
    *,
    tables: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Per dimension and arm pair: the mean score difference arm_a - arm_b over the
    (case, rater) pairs that scored both, and the ordinal view, the net benefit P(a scored
    higher) - P(b scored higher), which uses only the order of the scores; each with a
    clustered interval and a t-test against 0."""
    tables = tables if tables is not None else score_tables(ratings, arms, dimensions)
    rows: list[dict[str, object]] = []
    values, signs, groups, case_parts, rater_parts = [], [], [], [], []
    for dimension in dimensions:
        wide = tables[dimension]
        # The wide table's index already holds integer codes of its cases and raters
        # (score_tables indexes it by PAIR_KEYS, a MultiIndex).
        index = cast(pd.MultiIndex, wide.index)
        case_code = np.asarray(index.codes[index.names.index(PAIR_KEYS[0])], dtype=np.int64)
        rater_code = np.asarray(index.codes[index.names.index(PAIR_KEYS[1])], dtype=np.int64)
        for arm_a, arm_b in itertools.combinations(arms, 2):
            a, b = wide[arm_a].to_numpy(), wide[arm_b].to_numpy()
            both = ~np.isnan(a) & ~np.isnan(b)
            difference = (a - b)[both]
            values.append(difference)
            signs.append(np.sign(difference))
            groups.append(np.full(difference.size, len(rows)))
            case_parts.append(case_code[both])
            rater_parts.append(rater_code[both])
            rows.append(
                {
                    "dimension": dimension,
                    "arm_a": arm_a,
                    "arm_b": arm_b,
                    "mean_a": float(a[both].mean()) if both.any() else math.nan,
                    "mean_b": float(b[both].mean()) if both.any() else math.nan,
                    "n_pairs": int(both.sum()),
                }
            )
    if not rows:
        return pd.DataFrame()
    group = np.concatenate(groups)
    case, rater = np.concatenate(case_parts), np.concatenate(rater_parts)
    design = clustered.crossed_design(group, case, rater, len(rows))
    difference = crossed_means(np.concatenate(values), group, case, rater, design=design)
    net = crossed_means(np.concatenate(signs), group, case, rater, design=design)
    table = pd.DataFrame(rows)
    table = table.assign(
        **_columns("mean_difference", estimates(difference, confidence=confidence)),
        **_columns("net_benefit", estimates(net, confidence=confidence)),
    )
    return table.assign(**_labels())


# --- Hallucination --------------------------------------------------------------------------


def hallucination(
    flags: pd.DataFrame,
    arms: Sequence[str],
    confidence: float = 0.95,
    *,
    units: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per arm, the share of rated responses with any hallucination flag; per arm pair, the
    difference of those shares over (case, rater) pairs that rated both (a clustered
    McNemar: Obuchowski 1998's idea with crossed clusters). Clustered intervals; the rates'
    on the logit scale."""
    units = units if units is not None else flag_units(flags)
    arm_code = pd.Index(list(arms)).get_indexer(pd.Index(units["arm"]))
    keep = arm_code >= 0
    units = units[keep].reset_index(drop=True)
    arm_code = arm_code[keep]
    case = clustered.codes(units["case_id"])
    rater = clustered.codes(units["rater_id"])
    flagged = units["any"].to_numpy(float)
    rates = crossed_means(flagged, arm_code, case, rater, len(arms))
    rate_table = pd.DataFrame(
        {
            "arm": list(arms),
            "n": rates.variance.n.astype(int),
            "count": np.bincount(arm_code, flagged, minlength=len(arms)).astype(int),
            **_columns(
                "rate", estimates(rates, confidence=confidence, proportion=True, test=False)
            ),
        }
    ).assign(**_labels())

    # (case, rater) as one integer key; each arm has at most one unit per key.
    key = case * (int(rater.max(initial=0)) + 1) + rater
    rows: list[dict[str, object]] = []
    values, groups, case_parts, rater_parts = [], [], [], []
    for index_a, index_b in itertools.combinations(range(len(arms)), 2):
        at_a, at_b = np.flatnonzero(arm_code == index_a), np.flatnonzero(arm_code == index_b)
        _, in_a, in_b = np.intersect1d(key[at_a], key[at_b], return_indices=True)
        first, second = at_a[in_a], at_b[in_b]
        difference = flagged[first] - flagged[second]
        values.append(difference)
        groups.append(np.full(difference.size, len(rows)))
        case_parts.append(case[first])
        rater_parts.append(rater[first])
        rows.append(
            {
                "arm_a": arms[index_a],
                "arm_b": arms[index_b],
                "n_pairs": int(difference.size),
                "only_a": int((difference > 0).sum()),
                "only_b": int((difference < 0).sum()),
            }
        )
    if not rows:
        return rate_table, pd.DataFrame()
    fit = crossed_means(
        np.concatenate(values),
        np.concatenate(groups),
        np.concatenate(case_parts),
        np.concatenate(rater_parts),
        len(rows),
    )
    pairs = pd.DataFrame(rows).assign(
        **_columns("difference", estimates(fit, confidence=confidence)), **_labels()
    )
    return rate_table, pairs


# --- Position and length --------------------------------------------------------------------


def position_bias(
    judgments: pd.DataFrame,
    confidence: float = 0.95,
    *,
    coded: CodedJudgments | None = None,
) -> dict[str, object]:
    """Share of decisive judgments that went to the response shown first (left), clustered;
    each rater's own share; and a chi-square test of whether raters differ in that share
    (the rater effect on position). ``judgments`` has ``left_arm`` beside the pairwise columns.
    """
    coded = coded or code_judgments(judgments)
    a_on_left = judgments["left_arm"].to_numpy() == judgments["arm_a"].to_numpy()
    decisive = coded.outcome <= 1
    left = ((coded.outcome == 0) == a_on_left)[decisive].astype(float)
    rows = judgments.loc[decisive]
    fit = crossed_means(
        left,
        np.zeros(left.size, np.int64),
        coded.case[decisive],
        coded.rater[decisive],
        1,
    )
    overall = estimates(fit, null=0.5, confidence=confidence)[0]
    per_rater = (
        pd.DataFrame({"rater": rows["rater_id"].astype(str).to_numpy(), "left": left})
        .groupby("rater", sort=True)["left"]
        .agg(["sum", "count"])
    )
    raters = []
    for rater, (wins, count) in per_rater.iterrows():
        interval = wilson_interval(wins, count, confidence)
        raters.append(
            {
                "rater": rater,
                "decisive": int(count),
                "left_wins": int(wins),
                "left_share": interval.estimate,
                "low": interval.low,
                "high": interval.high,
            }
        )
    heterogeneity: dict[str, object] = {"not_estimable": "needs two raters with decisive judgments"}
    if len(per_rater) >= 2:
        table = np.column_stack([per_rater["sum"], per_rater["count"] - per_rater["sum"]]).astype(
            float
        )
        if (table.sum(axis=0) > 0).all():
            chi2, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
            heterogeneity = {"chi2": float(chi2), "df": int(dof), "p_value": float(p_value)}
    return {
        "left_share": asdict(overall),
        "per_rater": raters,
        "rater_heterogeneity": heterogeneity,
        **_labels(),
    }


def length_adjusted(rows: pd.DataFrame, confidence: float = 0.95) -> dict[str, object]:
    """Do raters prefer the longer response, beyond what the arms' strengths explain?

    Decisive judgments only: ``logit P(a preferred) = theta_a - theta_b + gamma *
    log2(length_a / length_b)`` by maximum likelihood (a Bradley-Terry model with a length
    covariate), ``gamma`` with a two-way cluster-robust sandwich interval and t-test;
    ``exp(gamma)`` is the odds ratio of being preferred for a response twice as long.
    """
    outcome = rows["outcome"].to_numpy()
    keep = (
        np.isin(outcome, ("a", "b"))
        & (rows["length_a"].to_numpy(float) > 0)
        & (rows["length_b"].to_numpy(float) > 0)
    )
    data = rows.loc[keep]
    base = {"decisive": int(keep.sum()), **_labels()}
    if data.empty:
        return {**base, "not_estimable": "no decisive judgments with both lengths"}
    arms, ia, ib, _ = judgment_codes(data.assign(outcome=data["outcome"]))
    k = len(arms)
    n = len(data)
    design = np.zeros((n, k))
    design[np.arange(n), ia] += 1.0
    design[np.arange(n), ib] -= 1.0
    log_ratio = np.log2(data["length_a"].to_numpy(float) / data["length_b"].to_numpy(float))
    design = np.column_stack([design[:, 1:], log_ratio])  # first arm is the reference
    y = (data["outcome"].to_numpy() == "a").astype(float)
    if np.ptp(log_ratio) == 0:
        return {**base, "not_estimable": "every pair of responses has the same length ratio"}
    beta, converged = _logistic(design, y)
    if not converged:
        return {**base, "not_estimable": "the model did not converge (separation)"}
    p = 1 / (1 + np.exp(-design @ beta))
    hessian = (design * (p * (1 - p))[:, None]).T @ design
    influence = np.linalg.solve(hessian, (design * (y - p)[:, None]).T).T[:, -1]
    variance = clustered.crossed_variance(
        influence,
        np.zeros(n, np.int64),
        clustered.codes(data["case_id"]),
        clustered.codes(data["rater_id"]),
        1,
    )
    gamma = float(beta[-1])
    cases, raters = int(variance.cases[0]), int(variance.raters[0])
    reason = clustered.too_few_clusters(cases, raters)
    if reason or not variance.variance[0] > 0:
        return {**base, "log_odds_per_doubling": gamma, "not_estimable": reason or "no variance"}
    se = float(math.sqrt(variance.variance[0]))
    df = float(variance.df[0])
    q = float(clustered.t_quantile(confidence, df))
    statistic = gamma / se
    return {
        **base,
        "log_odds_per_doubling": gamma,
        "odds_ratio_per_doubling": math.exp(gamma),
        "odds_ratio_low": math.exp(gamma - q * se),
        "odds_ratio_high": math.exp(gamma + q * se),
        "se": se,
        "df": df,
        "p_value": float(2 * stats.t.sf(abs(statistic), df)),
        "cases": cases,
        "raters": raters,
        "adjusted_for": "arm strengths (Bradley-Terry)",
    }


def _logistic(design: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, bool]:
    """Logistic regression by Newton-Raphson with step halving; False if it diverges."""
    beta = np.zeros(design.shape[1])

    def loglik(b: np.ndarray) -> float:
        eta = design @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-design @ beta))
        gradient = design.T @ (y - p)
        hessian = (design * (p * (1 - p))[:, None]).T @ design
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return beta, False
        scale = 1.0
        while scale > 1e-6:
            candidate = beta + scale * step
            value = loglik(candidate)
            if value >= current - 1e-12:
                break
            scale /= 2
        beta, previous, current = candidate, current, value
        if abs(current - previous) < 1e-10 and np.max(np.abs(scale * step)) < 1e-8:
            return beta, bool(np.all(np.abs(beta) < 30))
    return beta, False
