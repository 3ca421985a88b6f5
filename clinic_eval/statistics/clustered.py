"""Inference that holds for physicians and cases as samples: two-way cluster-robust estimators.

Every case is judged by several physicians and every physician judges many cases, each with a
taste of their own, so judgments sharing a case or a rater are correlated; tests that treat
them as independent reject a true null far too often (see docs/statistics.md). The estimators
here target the same population quantity as the per-judgment ones (a mean, a proportion, a
regression coefficient) and estimate its variance with the two-way cluster-robust sandwich of
Cameron, Gelbach & Miller (2011, J Bus Econ Stat 29:238):

    V = V_case + V_rater - V_case&rater

each part the one-way cluster-robust variance with the small-cluster factor G / (G - 1).
With one rater per case (cases nested in raters) the case and cell parts coincide and V is the
rater-clustered variance. A V that comes out non-positive (possible when the within-cluster
correlation is negative) is replaced by the larger one-way variance, and the result says so.

The reference distribution is Student's t. Its degrees of freedom come from a Satterthwaite
approximation to the variance of V: each part is a sum of squared cluster sums, and under a
working model with random case and rater intercepts (variance components estimated by moments
from the same three parts, clipped at zero) each cluster sum's variance is known, so V's
variance is that of a weighted sum of chi-squares; the weights' spread is Carter, Schnepel &
Steigerwald's (2017, Rev Econ Stat 99:698) "effective number of clusters". With few raters and a
real rater effect this gives about (raters - 1) degrees of freedom; with no rater effect it
gives more, so the test is not needlessly conservative. ``tests/test_stats_calibration.py``
shows the result rejects a true null at 3-7% and its intervals cover at 93-97% over a grid of
null studies with rater and case heterogeneity.

Pure numpy/pandas/scipy, batched: one call estimates many groups (arm pairs, arms, simulated
studies) at once, each group analysed on its own rows.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
import pandas as pd
from scipy import sparse, stats

from clinic_eval.statistics.intervals import Interval

ESTIMATOR = (
    "two-way cluster-robust (case and rater), small-cluster factor G/(G-1), "
    "t with Satterthwaite degrees of freedom"
)
GENERALISES_TO = "physicians and cases like these"
CONDITIONAL = "these raters and cases only (each judgment treated as independent)"
# Fewer clusters than this in either dimension leave nothing to estimate that dimension's
# variance from: the analysis says so instead of printing a p-value.
MIN_CLUSTERS = 3


@dataclass(frozen=True)
class CrossedVariance:
    """Per group: the variance of an estimate from its influence values, and its parts."""

    variance: np.ndarray
    df: np.ndarray
    n: np.ndarray
    cases: np.ndarray
    raters: np.ndarray
    variance_case: np.ndarray
    variance_rater: np.ndarray
    variance_cell: np.ndarray
    # True where the two-way variance was not positive and the larger one-way one was used.
    fallback: np.ndarray


@dataclass(frozen=True)
class CrossedEstimate:
    """One clustered estimate, JSON-ready through ``report._plain``."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    statistic: float
    p_value: float
    null: float
    n: int
    cases: int
    raters: int
    # Variance relative to treating every judgment as independent (the design effect), and
    # the share of the variance that raters add beyond that.
    design_effect: float
    rater_share: float
    estimator: str = ESTIMATOR
    generalises_to: str = GENERALISES_TO
    note: str = ""
    not_estimable: str = ""

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.low, self.high)


def codes(values: pd.Series | pd.Index | np.ndarray | Sequence[Hashable]) -> np.ndarray:
    """Dense integer codes (0..k-1) of any hashable values; missing values get -1."""
    return pd.factorize(pd.Series(values), sort=False)[0].astype(np.int64)


def _clusters(
    group: np.ndarray, code: np.ndarray, groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster id per row (unique within its group), each cluster's group, clusters per group."""
    width = int(code.max(initial=0)) + 1
    key = group * width + code
    size = groups * width
    if size <= max(2**24, 8 * key.size):
        # Small key range: a bincount finds the clusters in linear time, in key order.
        present = np.flatnonzero(np.bincount(key, minlength=size))
        rank = np.zeros(size, dtype=np.int32)
        rank[present] = np.arange(present.size)
        ids, keys = rank[key], present
    else:
        ids, keys = pd.factorize(key, sort=False)
    owner = (np.asarray(keys) // width).astype(np.int64)
    return ids.astype(np.int64), owner, np.bincount(owner, minlength=groups)


def _factor(clusters: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(clusters > 1, clusters / (clusters - 1.0), np.nan)


@dataclass(frozen=True)
class CrossedDesign:
    """Which rows share a case, a rater or a cell (case and rater), per group: everything
    about the clustering that does not depend on the values, computed once and reused for
    every estimate on the same rows."""

    groups: int
    n: np.ndarray
    case_ids: np.ndarray
    rater_ids: np.ndarray
    cell_ids: np.ndarray
    case_owner: np.ndarray
    rater_owner: np.ndarray
    cell_owner: np.ndarray
    cases: np.ndarray
    raters: np.ndarray
    cells: np.ndarray
    n_c: np.ndarray  # rows per case cluster
    m_r: np.ndarray  # rows per rater cluster
    n_x: np.ndarray  # rows per cell
    cell_case: np.ndarray
    cell_rater: np.ndarray
    frobenius: np.ndarray  # per group, ||N'N||^2 (N: case x rater counts)

    @property
    def nested_cases(self) -> np.ndarray:
        """One rater per case: the case and cell clusters are the same."""
        same: np.ndarray = self.cells == self.cases
        return same

    @property
    def nested_raters(self) -> np.ndarray:
        same: np.ndarray = self.cells == self.raters
        return same


def crossed_design(
    group: np.ndarray, case: np.ndarray, rater: np.ndarray, groups: int | None = None
) -> CrossedDesign:
    group = np.asarray(group, dtype=np.int64)
    case = np.asarray(case, dtype=np.int64)
    rater = np.asarray(rater, dtype=np.int64)
    k = int(groups if groups is not None else group.max(initial=-1) + 1)
    case_ids, case_owner, cases = _clusters(group, case, k)
    rater_ids, rater_owner, raters = _clusters(group, rater, k)
    cell_ids, cell_owner, cells = _clusters(
        group, case * (int(rater.max(initial=0)) + 1) + rater, k
    )
    first_row = np.zeros(len(cell_owner), dtype=np.int64)
    first_row[cell_ids] = np.arange(len(cell_ids))
    cell_case, cell_rater = case_ids[first_row], rater_ids[first_row]
    n_x = np.bincount(cell_ids, minlength=len(cell_owner)).astype(float)
    return CrossedDesign(
        groups=k,
        n=np.bincount(group, minlength=k).astype(float),
        case_ids=case_ids,
        rater_ids=rater_ids,
        cell_ids=cell_ids,
        case_owner=case_owner,
        rater_owner=rater_owner,
        cell_owner=cell_owner,
        cases=cases,
        raters=raters,
        cells=cells,
        n_c=np.bincount(case_ids, minlength=len(case_owner)).astype(float),
        m_r=np.bincount(rater_ids, minlength=len(rater_owner)).astype(float),
        n_x=n_x,
        cell_case=cell_case,
        cell_rater=cell_rater,
        frobenius=_gram_frobenius(cell_case, cell_rater, n_x, cell_owner, k),
    )


def crossed_variance(
    influence: np.ndarray,
    group: np.ndarray | None = None,
    case: np.ndarray | None = None,
    rater: np.ndarray | None = None,
    groups: int | None = None,
    *,
    design: CrossedDesign | None = None,
) -> CrossedVariance:
    """Two-way cluster-robust variance of estimates given their influence values.

    ``influence`` holds each row's contribution to its group's estimate minus the estimate
    (for a mean: ``(y - mean) / n``); ``group``, ``case`` and ``rater`` are non-negative
    integer codes, or ``design`` is their ``crossed_design``. Returns arrays by group.
    """
    if design is None:
        if group is None or case is None or rater is None:
            raise ValueError("give group, case and rater codes, or a design")
        design = crossed_design(group, case, rater, groups)
    d = design
    k = d.groups
    influence = np.asarray(influence, dtype=float)
    factor = {
        "case": _factor(d.cases),
        "rater": _factor(d.raters),
        "cell": _factor(d.cells),
    }
    raw = {
        name: np.bincount(owner, np.bincount(ids, influence, minlength=len(owner)) ** 2, k)
        for name, ids, owner in (
            ("case", d.case_ids, d.case_owner),
            ("rater", d.rater_ids, d.rater_owner),
            ("cell", d.cell_ids, d.cell_owner),
        )
    }
    v_case, v_rater, v_cell = (factor[n_] * raw[n_] for n_ in ("case", "rater", "cell"))
    nested_cases, nested_raters = d.nested_cases, d.nested_raters
    variance = v_case + v_rater - v_cell
    variance = np.where(nested_cases, v_rater, variance)
    variance = np.where(nested_raters, v_case, variance)
    variance = np.where(nested_cases & nested_raters, v_cell, variance)
    fallback = ~(variance > 0) & np.isfinite(variance)
    variance = np.where(fallback, np.maximum(v_case, v_rater), variance)
    df = _satterthwaite_df(d, factor, raw)
    return CrossedVariance(
        variance=variance,
        df=df,
        n=d.n,
        cases=d.cases,
        raters=d.raters,
        variance_case=v_case,
        variance_rater=v_rater,
        variance_cell=v_cell,
        fallback=fallback & (variance > 0),
    )


def _satterthwaite_df(
    d: CrossedDesign, factor: dict[str, np.ndarray], raw: dict[str, np.ndarray]
) -> np.ndarray:
    """Degrees of freedom of V under a working model fitted to V's own parts (module doc).

    Working model: influence = case effect + rater effect + noise, with variances (a, b, s).
    Its expected squared cluster sums are a*sum(n_c^2) + b*sum_x(n_x^2) + s*n for the case
    part, a*sum_x(n_x^2) + b*sum(m_r^2) + s*n for the rater part and (a + b)*sum_x(n_x^2) + s*n
    for the cell part (x: the case-and-rater cells); those are solved for (a, b, s), clipped at
    zero. For Gaussian sums, Var(sum S^2) = 2 sum Cov(S_c, S_c')^2 and Cov(sum S^2, sum T^2) =
    2 sum Cov(S_c, T_r)^2, and every covariance of two cluster sums under the working model is
    a simple function of the cell counts, so V's variance follows exactly (uncentred); df =
    2 E[V]^2 / Var(V), with each part counted G / (G - 1) times more, which gives G - 1 for one
    dimension of G equal clusters.
    """
    k, n = d.groups, d.n
    case_owner, rater_owner, cell_owner = d.case_owner, d.rater_owner, d.cell_owner
    n_c, m_r, n_x = d.n_c, d.m_r, d.n_x
    cell_case, cell_rater = d.cell_case, d.cell_rater

    def per_group(owner: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(owner, values, minlength=k)

    x2, x4 = n_x**2, n_x**4
    p_c = np.bincount(cell_case, x2, minlength=len(n_c))  # sum over the case's cells of n_x^2
    q_r = np.bincount(cell_rater, x2, minlength=len(m_r))
    a_cc, a_rr = per_group(case_owner, n_c**2), per_group(rater_owner, m_r**2)
    a_xx = per_group(cell_owner, x2)
    q_case, q_rater, q_cell = (factor[name] * raw[name] for name in ("case", "rater", "cell"))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(a_cc > a_xx, (q_case - q_cell) / (a_cc - a_xx), 0.0)
        b = np.where(a_rr > a_xx, (q_rater - q_cell) / (a_rr - a_xx), 0.0)
    a = np.clip(np.nan_to_num(a), 0.0, None)
    b = np.clip(np.nan_to_num(b), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.clip(np.nan_to_num((q_cell - (a + b) * a_xx) / n), 0.0, None)

    ac, bc, sc = a[case_owner], b[case_owner], s[case_owner]
    ar, br, sr = a[rater_owner], b[rater_owner], s[rater_owner]
    ax, bx, sx = a[cell_owner], b[cell_owner], s[cell_owner]
    w_case = ac * n_c**2 + bc * p_c + sc * n_c
    w_rater = ar * q_r + br * m_r**2 + sr * m_r
    w_cell = (ax + bx) * x2 + sx * n_x
    frobenius = d.frobenius
    case_pairs = per_group(case_owner, p_c**2) - per_group(cell_owner, x4)
    rater_pairs = per_group(rater_owner, q_r**2) - per_group(cell_owner, x4)
    nx_case, mr_cell = n_c[cell_case], m_r[cell_rater]
    var_s = per_group(case_owner, w_case**2) + b**2 * (frobenius - per_group(case_owner, p_c**2))
    var_t = per_group(rater_owner, w_rater**2) + a**2 * (frobenius - per_group(rater_owner, q_r**2))
    var_u = per_group(cell_owner, w_cell**2) + a**2 * case_pairs + b**2 * rater_pairs
    cov_st = per_group(cell_owner, (n_x * (ax * nx_case + bx * mr_cell + sx)) ** 2)
    cov_su = per_group(cell_owner, (n_x * (ax * nx_case + bx * n_x + sx)) ** 2) + b**2 * rater_pairs
    cov_tu = per_group(cell_owner, (n_x * (ax * n_x + bx * mr_cell + sx)) ** 2) + a**2 * case_pairs

    f_c, f_r, f_x = factor["case"], factor["rater"], factor["cell"]
    e_c, e_r, e_x = (
        f_c * per_group(case_owner, w_case),
        f_r * per_group(rater_owner, w_rater),
        f_x * per_group(cell_owner, w_cell),
    )
    with np.errstate(invalid="ignore"):
        numerator = e_c + e_r - e_x
        half_variance = (
            f_c**3 * var_s
            + f_r**3 * var_t
            + f_x**3 * var_u
            + 2 * (f_c * f_r) ** 1.5 * cov_st
            - 2 * (f_c * f_x) ** 1.5 * cov_su
            - 2 * (f_r * f_x) ** 1.5 * cov_tu
        )
    nested_cases, nested_raters = d.nested_cases, d.nested_raters
    numerator = np.where(nested_cases, e_r, numerator)
    half_variance = np.where(nested_cases, f_r**3 * var_t, half_variance)
    numerator = np.where(nested_raters, e_c, numerator)
    half_variance = np.where(nested_raters, f_c**3 * var_s, half_variance)
    both = nested_cases & nested_raters
    numerator = np.where(both, e_x, numerator)
    half_variance = np.where(both, f_x**3 * var_u, half_variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = numerator**2 / half_variance
    # No variance anywhere in the working model (every value equal): fall back to the smaller
    # cluster count less one, the conservative textbook choice.
    smallest = np.minimum(d.cases, d.raters) - 1.0
    df = np.where(np.isfinite(df) & (df > 0), df, smallest)
    return np.clip(df, 1.0, np.maximum(n - 1.0, 1.0))


def _gram_frobenius(
    cell_case: np.ndarray, cell_rater: np.ndarray, n_x: np.ndarray, owner: np.ndarray, k: int
) -> np.ndarray:
    """Per group, the squared Frobenius norm of N'N (N: case x rater cell counts).

    Case and rater clusters are numbered across groups, so N is block diagonal by group and
    so is N'N; a sparse product computes every block at once."""
    cases = int(cell_case.max(initial=-1)) + 1
    raters = int(cell_rater.max(initial=-1)) + 1
    counts = sparse.csr_matrix((n_x, (cell_case, cell_rater)), shape=(cases, raters))
    gram = (counts.T @ counts).tocoo()
    rater_group = np.zeros(raters, dtype=np.int64)
    rater_group[cell_rater] = owner
    return np.bincount(rater_group[gram.row], gram.data**2, minlength=k)


@dataclass(frozen=True)
class CrossedMeans:
    """Per group: the mean and its crossed variance (``crossed_means``)."""

    mean: np.ndarray
    variance: CrossedVariance


def crossed_means(
    values: np.ndarray,
    group: np.ndarray,
    case: np.ndarray,
    rater: np.ndarray,
    groups: int | None = None,
    *,
    design: CrossedDesign | None = None,
) -> CrossedMeans:
    """Mean of ``values`` per group with its two-way cluster-robust variance; ``design`` is
    ``crossed_design(group, case, rater, groups)`` when the caller already has it."""
    values = np.asarray(values, dtype=float)
    group = np.asarray(group, dtype=np.int64)
    design = design or crossed_design(group, case, rater, groups)
    n = design.n
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(group, values, minlength=design.groups) / n
    influence = (values - mean[group]) / n[group]
    return CrossedMeans(mean, crossed_variance(influence, design=design))


def too_few_clusters(cases: int, raters: int) -> str:
    """The reason no clustered p-value is given, or "" when there are enough clusters."""
    if raters < MIN_CLUSTERS:
        return (
            f"only {raters} rater{'s' if raters != 1 else ''}: the clustered analysis needs at "
            f"least {MIN_CLUSTERS} physicians to generalise beyond them"
        )
    if cases < MIN_CLUSTERS:
        return (
            f"only {cases} case{'s' if cases != 1 else ''}: the clustered analysis needs at "
            f"least {MIN_CLUSTERS} cases to generalise beyond them"
        )
    return ""


def t_quantile(confidence: float, df: np.ndarray | float) -> np.ndarray:
    return np.asarray(stats.t.ppf(0.5 + confidence / 2, df), dtype=float)


def estimates(
    fit: CrossedMeans,
    *,
    null: float = 0.0,
    confidence: float = 0.95,
    proportion: bool = False,
    test: bool = True,
) -> list[CrossedEstimate]:
    """One ``CrossedEstimate`` per group.

    ``proportion``: the mean is a rate in [0, 1] and its interval is formed on the logit
    scale (delta method), so it stays inside [0, 1] and is not symmetric near the bounds; a
    rate of exactly 0 or 1 has no clustered variance, and its interval is Clopper-Pearson with
    the smaller cluster count as the effective sample size. ``test=False`` leaves the
    statistic and p-value out (a rate has no natural null).
    """
    v = fit.variance
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        design_effect = v.variance / v.variance_cell
        share = np.clip((v.variance_rater - v.variance_cell) / v.variance, 0, 1)
        se = np.sqrt(v.variance)
        q = t_quantile(confidence, v.df)
        statistic = (fit.mean - null) / se
        p_values = 2 * stats.t.sf(np.abs(statistic), v.df)
        if proportion:
            logit = np.log(fit.mean / (1 - fit.mean))
            half = q * se / (fit.mean * (1 - fit.mean))
            low, high = 1 / (1 + np.exp(-(logit - half))), 1 / (1 + np.exp(-(logit + half)))
        else:
            low, high = fit.mean - q * se, fit.mean + q * se
    results = []
    for g in range(len(fit.mean)):
        cases, raters, n = int(v.cases[g]), int(v.raters[g]), int(v.n[g])
        mean = float(fit.mean[g])
        base = _Clusters(
            null=null,
            n=n,
            cases=cases,
            raters=raters,
            design_effect=float(design_effect[g]),
            rater_share=float(share[g]),
        )
        reason = too_few_clusters(cases, raters) if n else "no observations"
        if reason:
            results.append(_empty(mean, reason, **base))
            continue
        df = float(v.df[g])
        if mean in (0.0, 1.0) and (proportion or 0.0 < null < 1.0):
            # Every observation went one way: no variance to cluster. Exact binomial inference
            # with the smaller cluster count as the sample size is the conservative answer.
            n_eff = min(cases, raters, n)
            interval = _clopper_pearson(mean * n_eff, n_eff, confidence)
            p_value = (
                float(stats.binomtest(int(mean * n_eff), n_eff, null).pvalue)
                if test and 0.0 < null < 1.0
                else math.nan
            )
            results.append(
                CrossedEstimate(
                    estimate=mean,
                    low=interval[0],
                    high=interval[1],
                    se=0.0,
                    df=df,
                    statistic=math.nan,
                    p_value=p_value,
                    note="every observation has the same value; exact binomial inference with "
                    f"an effective sample size of {n_eff} (the smaller cluster count)",
                    **base,
                )
            )
            continue
        if not v.variance[g] > 0:
            results.append(
                _empty(mean, "every observation has the same value: no variance", **base)
            )
            continue
        note = (
            "the two-way variance was not positive; the larger one-way variance is used"
            if v.fallback[g]
            else ""
        )
        results.append(
            CrossedEstimate(
                estimate=mean,
                low=float(low[g]),
                high=float(high[g]),
                se=float(se[g]),
                df=df,
                statistic=float(statistic[g]) if test else math.nan,
                p_value=float(p_values[g]) if test else math.nan,
                note=note,
                **base,
            )
        )
    return results


class _Clusters(TypedDict):
    """The fields of a CrossedEstimate that every outcome of one group shares."""

    null: float
    n: int
    cases: int
    raters: int
    design_effect: float
    rater_share: float


def _empty(estimate: float, reason: str, **base: Unpack[_Clusters]) -> CrossedEstimate:
    nan = math.nan
    return CrossedEstimate(
        estimate=estimate,
        low=nan,
        high=nan,
        se=nan,
        df=nan,
        statistic=nan,
        p_value=nan,
        not_estimable=reason,
        **base,
    )


def _clopper_pearson(successes: float, n: float, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    beta = stats.beta
    low = 0.0 if successes <= 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes >= n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def crossed_mean(
    values: np.ndarray | pd.Series,
    case: np.ndarray | pd.Series,
    rater: np.ndarray | pd.Series,
    *,
    null: float = 0.0,
    confidence: float = 0.95,
    proportion: bool = False,
) -> CrossedEstimate:
    """The mean of ``values`` with a two-way cluster-robust interval and t-test against
    ``null``; ``case`` and ``rater`` may be any hashable labels."""
    values = np.asarray(values, dtype=float)
    fit = crossed_means(values, np.zeros(len(values), np.int64), codes(case), codes(rater), 1)
    return estimates(fit, null=null, confidence=confidence, proportion=proportion)[0]
