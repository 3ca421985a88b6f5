"""Bradley-Terry (Davidson ties) intervals that hold for physicians and cases.

Each bootstrap replicate resamples cases and raters independently (Owen 2007, "The pigeonhole
bootstrap", Ann Appl Stat 1:386): a judgment's weight is the number of times its case was drawn
times the number of times its rater was drawn, and the model is refitted on the weighted counts.
Owen shows this resampling overstates the variance: by linearisation its variance is
``V_case + V_rater + V_cell`` where the two-way cluster-robust variance is
``V_case + V_rater - V_cell``, so with little heterogeneity the intervals would cover about 99%.
The replicates' deviations from the full-data estimate are therefore rescaled, per arm, so that
the percentile interval is as wide as the two-way cluster-robust t interval of the strength
(variance from its influence values, ``clustered.crossed_variance``, with the same small-sample
t reference as every other clustered analysis); the bootstrap gives the interval its
asymmetry around the estimate. Each bound comes with its
Monte Carlo error (half the distance between the order statistics one binomial standard
deviation either side of it).

Replicates are refitted together: Newton's method on all of them at once (the Davidson
log-likelihood is concave in the log-strengths and the log tie parameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from clinic_eval.statistics import clustered
from clinic_eval.statistics.bradley_terry import BTResult
from clinic_eval.statistics.crossed import CodedJudgments, code_judgments

ESTIMATOR = (
    "Bradley-Terry (Davidson ties); two-way bootstrap resampling cases and raters, "
    "rescaled to the two-way cluster-robust variance, t reference"
)


@dataclass(frozen=True)
class StrengthInterval:
    estimate: float
    low: float
    high: float
    mc_error_low: float
    mc_error_high: float
    se: float
    df: float


def _pair_index(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(k, 1)


def _loglik_parts(
    theta: np.ndarray, log_nu: np.ndarray, w_ij: np.ndarray, w_ji: np.ndarray, t_ij: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per replicate: log-likelihood, and the model probabilities per pair (i, j, tie)."""
    k = theta.shape[1]
    i, j = _pair_index(k)
    a, b = theta[:, i], theta[:, j]
    c = log_nu[:, None] + (a + b) / 2
    log_d = np.logaddexp(np.logaddexp(a, b), c)
    p_i, p_j, p_t = np.exp(a - log_d), np.exp(b - log_d), np.exp(c - log_d)
    n_ij = w_ij + w_ji + t_ij
    tie_term = np.where(t_ij > 0, t_ij * c, 0.0)
    ll = np.sum(w_ij * a + w_ji * b + tie_term - n_ij * log_d, axis=1)
    return ll, p_i, p_j, p_t


def _local_information(
    p_i: np.ndarray, p_j: np.ndarray, p_t: np.ndarray, n: np.ndarray | float
) -> list[list[np.ndarray]]:
    """Information of (theta_i, theta_j, log nu) from n judgments of one pair: the covariance
    of the outcome indicator mapped through z = (a, b, log nu + (a + b) / 2)."""
    m = (p_i + p_t / 2, p_j + p_t / 2, p_t)
    second = (
        (p_i + p_t / 4, p_t / 4, p_t / 2),
        (p_t / 4, p_j + p_t / 4, p_t / 2),
        (p_t / 2, p_t / 2, p_t),
    )
    return [[n * (second[u][v] - m[u] * m[v]) for v in range(3)] for u in range(3)]


def fit_many(
    wins: np.ndarray,
    ties: np.ndarray,
    start: tuple[np.ndarray, float],
    use_ties: bool,
    iterations: int = 60,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit Davidson's model to B count tables at once.

    ``wins`` is (B, k, k) with ``wins[b, i, j]`` = times i beat j; ``ties`` (B, k, k)
    symmetric. Returns centred log-strengths (B, k), tie parameters (B,) and a converged
    mask; a replicate whose maximum does not exist (an arm never wins or never loses)
    diverges and is reported as not converged.
    """
    count, k = wins.shape[0], wins.shape[1]
    i, j = _pair_index(k)
    w_ij, w_ji = wins[:, i, j], wins[:, j, i]
    t_ij = ties[:, i, j] if use_ties else np.zeros_like(w_ij)
    fit_nu = use_ties and start[1] > 0
    n_ij = w_ij + w_ji + t_ij
    # Parameters: theta_1..theta_{k-1} (theta_0 = 0), then log nu when it is fitted.
    free = k - 1 + (1 if fit_nu else 0)
    theta0 = np.asarray(start[0]) - start[0][0]
    params = np.tile(
        np.concatenate([theta0[1:], [math.log(start[1])] if fit_nu else []]), (count, 1)
    )

    def unpack(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.concatenate([np.zeros((p.shape[0], 1)), p[:, : k - 1]], axis=1)
        log_nu = p[:, k - 1] if fit_nu else np.full(p.shape[0], -np.inf)
        return theta, log_nu

    theta, log_nu = unpack(params)
    ll, p_i, p_j, p_t = _loglik_parts(theta, log_nu, w_ij, w_ji, t_ij)
    done = np.zeros(count, bool)
    for _ in range(iterations):
        # Gradient and Hessian in (theta_i, theta_j, log nu) per pair, scattered to params.
        g_a = w_ij + t_ij / 2 - n_ij * (p_i + p_t / 2)
        g_b = w_ji + t_ij / 2 - n_ij * (p_j + p_t / 2)
        grad_full = np.zeros((count, k + 1))
        for p, (first, second) in enumerate(zip(i, j, strict=True)):
            grad_full[:, first] += g_a[:, p]
            grad_full[:, second] += g_b[:, p]
        grad_full[:, k] = np.sum(t_ij - n_ij * p_t, axis=1)
        local = _local_information(p_i, p_j, p_t, n_ij)
        hess_full = np.zeros((count, k + 1, k + 1))
        for p, (first, second) in enumerate(zip(i, j, strict=True)):
            slots = (first, second, k)
            for u in range(3):
                for v in range(3):
                    hess_full[:, slots[u], slots[v]] -= local[u][v][:, p]
        keep = list(range(1, k)) + ([k] if fit_nu else [])
        grad = grad_full[:, keep]
        hess = hess_full[:, keep][:, :, keep]
        # A replicate whose maximum does not exist drifts off; a tiny ridge keeps the solve
        # defined, and such a replicate is caught by the bound below.
        step = np.linalg.solve(-hess + 1e-12 * np.eye(free), grad[..., None])[..., 0]
        step = np.where(done[:, None], 0.0, step)
        scale = np.ones(count)
        for _ in range(30):
            theta_new, log_nu_new = unpack(params + scale[:, None] * step)
            ll_new, *_ = _loglik_parts(theta_new, log_nu_new, w_ij, w_ji, t_ij)
            worse = ~(ll_new >= ll - 1e-10 * (1 + np.abs(ll))) & ~done
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        params = params + scale[:, None] * step
        theta, log_nu = unpack(params)
        ll, p_i, p_j, p_t = _loglik_parts(theta, log_nu, w_ij, w_ji, t_ij)
        done |= np.max(np.abs(scale[:, None] * step), axis=1) < 1e-9
        if done.all():
            break
    converged = done & np.all(np.abs(params) < 25, axis=1) & np.isfinite(ll)
    nu = np.exp(log_nu) if fit_nu else np.zeros(count)
    return theta - theta.mean(axis=1, keepdims=True), nu, converged


def influence(
    point: BTResult, ia: np.ndarray, ib: np.ndarray, outcome: np.ndarray, use_ties: bool
) -> np.ndarray:
    """Each judgment's influence on the centred log-strengths, (n, k): ``C H^-1 s_i``."""
    k = len(point.arms)
    theta = np.asarray(point.strengths)
    fit_nu = use_ties and point.tie_parameter > 0
    log_nu = math.log(point.tie_parameter) if fit_nu else -math.inf
    keep = outcome <= (2 if use_ties else 1)
    a, b, o = ia[keep], ib[keep], outcome[keep]
    z = np.stack([theta[a], theta[b], log_nu + (theta[a] + theta[b]) / 2], axis=1)
    p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    observed = np.zeros_like(p)
    observed[np.arange(len(o)), o] = 1.0
    residual = observed - p  # d loglik / dz
    n = len(o)
    score = np.zeros((n, k + 1))
    score[np.arange(n), a] += residual[:, 0] + residual[:, 2] / 2
    score[np.arange(n), b] += residual[:, 1] + residual[:, 2] / 2
    score[:, k] = residual[:, 2]
    local = _local_information(p[:, 0], p[:, 1], p[:, 2], 1.0)
    info = np.zeros((k + 1, k + 1))
    index = [a, b, np.full(n, k)]
    for u in range(3):
        for v in range(3):
            np.add.at(info, (index[u], index[v]), local[u][v])
    free = list(range(1, k)) + ([k] if fit_nu else [])
    solved = np.linalg.solve(info[np.ix_(free, free)], score[:, free].T).T
    full = np.zeros((n, k))
    full[:, 1:] = solved[:, : k - 1]
    result = np.zeros((len(ia), k))
    result[keep] = full - full.mean(axis=1, keepdims=True)
    return result


def _resample_counts(rng: np.random.Generator, units: int, replicates: int) -> np.ndarray:
    """How often each unit is drawn when ``units`` are resampled with replacement."""
    counts = np.empty((replicates, units))
    for row in range(replicates):
        # One bincount per replicate stays in cache; one over all replicates at once does not.
        counts[row] = np.bincount(rng.integers(0, units, units), minlength=units)
    return counts


def bradley_terry_two_way(
    judgments: pd.DataFrame | CodedJudgments,
    point: BTResult,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    use_ties: bool = True,
) -> dict[str, object]:
    """Two-way bootstrap intervals for the log-strengths of ``point`` (module doc), with the
    one-way (case-clustered) and independent-judgment Wald intervals as sensitivity."""
    coded = judgments if isinstance(judgments, CodedJudgments) else code_judgments(judgments)
    arms, ia, ib, outcome = coded.arms, coded.ia, coded.ib, coded.outcome
    if tuple(arms) != tuple(point.arms):
        raise ValueError("the point fit is for other arms")
    k = len(arms)
    case, rater = coded.case, coded.rater
    n_cases, n_raters = coded.cases, coded.raters
    reason = clustered.too_few_clusters(n_cases, n_raters)
    base = {"estimator": ESTIMATOR, "generalises_to": clustered.GENERALISES_TO}
    if reason:
        return {**base, "not_estimable": reason}
    used = outcome <= (2 if use_ties else 1)
    # Each judgment as a cell of the (winner, loser) or tie tables, collapsed per
    # (case, rater, cell): the replicate weight is the same for all of them.
    winner = np.where(outcome == 1, ib, ia)
    loser = np.where(outcome == 1, ia, ib)
    cell = np.where(
        outcome == 2, k * k + np.minimum(ia, ib) * k + np.maximum(ia, ib), winner * k + loser
    )
    cells = 2 * k * k
    # Judgment counts by case (rows) and (rater, cell) (columns): a replicate's tables are
    # sum over cases and raters of case weight x rater weight x count.
    counts = sparse.csr_matrix(
        (np.ones(int(used.sum())), (case[used], rater[used] * cells + cell[used])),
        shape=(n_cases, n_raters * cells),
    )
    counts.sum_duplicates()
    rng = np.random.default_rng(seed)
    start = (np.asarray(point.strengths), point.tie_parameter)
    by_case = counts.T.tocsr()
    replicates, skipped = [], 0
    # Replicates weighted at once, as many as keep the dense intermediate near 20 million cells.
    block = int(
        max(1, min(250, 20_000_000 // max(n_raters * cells, 1), 5_000_000 // max(n_cases, 1)))
    )
    for first in range(0, n_boot, block):
        size = min(block, n_boot - first)
        case_weight = _resample_counts(rng, n_cases, size)
        rater_weight = _resample_counts(rng, n_raters, size)
        by_rater = np.asarray(by_case @ case_weight.T).reshape(n_raters, cells, size)
        tables = np.einsum("rcb,br->bc", by_rater, rater_weight)
        wins = tables[:, : k * k].reshape(size, k, k)
        upper = tables[:, k * k :].reshape(size, k, k)
        ties = upper + upper.transpose(0, 2, 1)
        seen = ((wins + wins.transpose(0, 2, 1) + ties).sum(axis=2) > 0).all(axis=1)
        theta, _, converged = fit_many(wins, ties, start, use_ties)
        ok = seen & converged
        skipped += int((~ok).sum())
        replicates.append(theta[ok])
    draws = np.concatenate(replicates) if replicates else np.zeros((0, k))
    if len(draws) < 2:
        return {**base, "not_estimable": "no bootstrap replicate could be fitted"}

    psi = influence(point, ia, ib, outcome, use_ties)
    rows = np.flatnonzero(used)
    # Every arm's influence values live on the same rows: one clustering serves them all.
    design = clustered.crossed_design(np.zeros(rows.size, np.int64), case[rows], rater[rows], 1)
    parts = [clustered.crossed_variance(psi[rows, index], design=design) for index in range(k)]
    variance = clustered.CrossedVariance(
        **{
            field: np.concatenate([getattr(part, field) for part in parts])
            for field in clustered.CrossedVariance.__dataclass_fields__
        }
    )
    alpha = 1 - confidence
    strengths: dict[str, dict[str, float]] = {}
    case_only: dict[str, dict[str, float]] = {}
    independent: dict[str, dict[str, float]] = {}
    boot_count = len(draws)
    for index, arm in enumerate(arms):
        estimate = point.strengths[index]
        deviation = np.sort(draws[:, index] - estimate)
        se = float(math.sqrt(max(variance.variance[index], 0.0)))
        df = float(variance.df[index])
        width = 2 * float(clustered.t_quantile(confidence, df)) * se
        quantiles, errors = [], []
        for level in (alpha / 2, 1 - alpha / 2):
            position = level * (boot_count - 1)
            offset = math.sqrt(boot_count * level * (1 - level))
            lower = int(max(0, math.floor(position - offset)))
            upper = int(min(boot_count - 1, math.ceil(position + offset)))
            quantiles.append(float(np.quantile(deviation, level)))
            errors.append(float(deviation[upper] - deviation[lower]) / 2)
        spread = quantiles[1] - quantiles[0]
        if spread > 0 and quantiles[0] <= 0 <= quantiles[1]:
            scale = width / spread
            low, high = estimate + scale * quantiles[0], estimate + scale * quantiles[1]
        else:
            scale = 0.0
            low, high = estimate - width / 2, estimate + width / 2
        case_se = float(math.sqrt(max(variance.variance_case[index], 0.0)))
        case_q = float(clustered.t_quantile(confidence, max(n_cases - 1, 1)))
        independent_se = float(math.sqrt(max(variance.variance_cell[index], 0.0)))
        z = float(clustered.t_quantile(confidence, np.inf))
        case_only[arm] = {
            "estimate": estimate,
            "low": estimate - case_q * case_se,
            "high": estimate + case_q * case_se,
        }
        independent[arm] = {
            "estimate": estimate,
            "low": estimate - z * independent_se,
            "high": estimate + z * independent_se,
        }
        strengths[arm] = {
            "estimate": estimate,
            "low": low,
            "high": high,
            "mc_error_low": scale * errors[0],
            "mc_error_high": scale * errors[1],
            "se": se,
            "df": df,
        }
    return {
        **base,
        "strengths": strengths,
        "bootstrap": {"replicates": n_boot, "skipped": skipped},
        "case_clustered": {
            "strengths": case_only,
            "estimator": "Wald, clustered by case only",
            "generalises_to": "cases like these, rated by these physicians",
        },
        "independent": {
            "strengths": independent,
            "estimator": "Wald, each judgment independent",
            "generalises_to": clustered.CONDITIONAL,
        },
    }
