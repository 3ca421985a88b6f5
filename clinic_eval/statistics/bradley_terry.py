"""Bradley-Terry strengths (with Davidson's tie parameter) fitted on judgments collapsed to
counts, and the case-bootstrap interval kept as a sensitivity row (the two-way bootstrap that
resamples cases and raters is in ``two_way_bootstrap``)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, sparse
from scipy.sparse import csgraph

from clinic_eval.statistics.intervals import Interval, z_value
from clinic_eval.statistics.preference import Codes, judgment_codes


@dataclass(frozen=True)
class BTResult:
    """Bradley-Terry (Davidson) fit.

    ``strengths`` are log-strengths ``log(pi_i)`` in the order of ``arms``, centred so that they
    sum to zero (the likelihood only sees differences). ``tie_parameter`` is Davidson's ``nu``
    (0 when ties are dropped or none were observed). ``log_likelihood`` is the multinomial
    log-likelihood of the non-``both_bad`` judgments at the fitted values, without the
    combinatorial constant (so it equals the sum of per-judgment log-probabilities).
    """

    arms: tuple[str, ...]
    strengths: tuple[float, ...]
    tie_parameter: float
    log_likelihood: float
    converged: bool
    iterations: int

    def strength(self, arm: str) -> float:
        return self.strengths[self.arms.index(arm)]

    def probabilities(self, arm_i: str, arm_j: str) -> tuple[float, float, float]:
        """Model probabilities ``(P(i wins), P(j wins), P(tie))`` for one comparison."""
        a, b = self.strength(arm_i), self.strength(arm_j)
        log_tie = (
            math.log(self.tie_parameter) + (a + b) / 2 if self.tie_parameter > 0 else -math.inf
        )
        terms = np.array([a, b, log_tie])
        p_i, p_j, p_tie = np.exp(terms - np.logaddexp.reduce(terms))
        return float(p_i), float(p_j), float(p_tie)


def _unit_counts(
    unit: np.ndarray, ia: np.ndarray, ib: np.ndarray, outcome: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Collapse judgments to per-unit count tensors ``wins[u, i, j]`` and ``ties[u, i, j]``.

    ``wins[u, i, j]`` = times i beat j; ``ties`` is symmetric. Per-unit tensors make a bootstrap
    replicate a weighted sum over units instead of a re-collapse of a resampled DataFrame.
    """
    n_units = int(unit.max()) + 1 if unit.size else 0
    size = n_units * k * k
    # Outcome codes are positions in OUTCOMES: a, b, tie, both_bad.
    is_a, is_b, is_tie = outcome == 0, outcome == 1, outcome == 2

    def cells(rows: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        cell: np.ndarray = (unit[rows] * k + first[rows]) * k + second[rows]
        return cell

    winner_first = np.concatenate([cells(is_a, ia, ib), cells(is_b, ib, ia)])
    tie_cells = np.concatenate([cells(is_tie, ia, ib), cells(is_tie, ib, ia)])
    wins = np.bincount(winner_first, minlength=size).astype(float).reshape(n_units, k, k)
    ties = np.bincount(tie_cells, minlength=size).astype(float).reshape(n_units, k, k)
    return wins, ties


def _identifiable(wins: np.ndarray, ties: np.ndarray) -> bool:
    """Ford's condition: the 'beat or tied' digraph must be strongly connected.

    Otherwise some group of arms never loses (or never wins) against the rest and its strength
    runs off to infinity; a tie counts in both directions because it bounds strengths both ways.
    """
    k = wins.shape[0]
    if k < 2:
        return False
    graph = sparse.csr_matrix((wins + ties) > 0)
    n_components, _ = csgraph.connected_components(graph, directed=True, connection="strong")
    return bool(n_components == 1)


def _fit_counts(
    wins: np.ndarray,
    ties: np.ndarray,
    use_ties: bool,
    l2: float,
    start: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, float, float, bool, int]:
    """Maximum likelihood on collapsed counts; returns (theta, nu, loglik, converged, nit)."""
    k = wins.shape[0]
    upper_i, upper_j = np.triu_indices(k, 1)
    w_ij = wins[upper_i, upper_j]
    w_ji = wins[upper_j, upper_i]
    t_ij = ties[upper_i, upper_j] if use_ties else np.zeros_like(w_ij)
    n_ij = w_ij + w_ji + t_ij
    keep = n_ij > 0
    pi, pj, w_ij, w_ji, t_ij, n_ij = (x[keep] for x in (upper_i, upper_j, w_ij, w_ji, t_ij, n_ij))
    total = float(n_ij.sum())
    # nu is only estimable when ties occurred; with none its MLE is 0 (log nu -> -inf), so it is
    # fixed at 0 rather than letting the optimiser chase it.
    fit_nu = use_ties and t_ij.sum() > 0
    if fit_nu and t_ij.sum() == total:
        raise ValueError("every judgment is a tie: the tie parameter is infinite")

    def loglik_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        theta = params[:k]
        log_nu = params[k] if fit_nu else -np.inf
        a, b = theta[pi], theta[pj]
        c = log_nu + (a + b) / 2
        log_d = np.logaddexp(np.logaddexp(a, b), c)
        p_tie = np.exp(c - log_d)
        tie_term = t_ij * (log_nu + (a + b) / 2) if fit_nu else 0.0
        ll = float(np.sum(w_ij * a + w_ji * b + tie_term - n_ij * log_d))
        grad_i = w_ij + t_ij / 2 - n_ij * (np.exp(a - log_d) + p_tie / 2)
        grad_j = w_ji + t_ij / 2 - n_ij * (np.exp(b - log_d) + p_tie / 2)
        grad = np.zeros_like(params)
        grad[:k] = np.bincount(pi, grad_i, k) + np.bincount(pj, grad_j, k)
        if fit_nu:
            grad[k] = float(np.sum(t_ij - n_ij * p_tie))
        return ll, grad

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        # Scaled by the number of judgments so tolerances mean the same at any study size.
        # (sum theta)^2 pins the location (the likelihood is shift-invariant) without changing
        # the optimum; the optional ridge term is for sparse data where the MLE does not exist.
        ll, grad = loglik_and_grad(params)
        theta = params[:k]
        value = (-ll + 0.5 * l2 * float(theta @ theta)) / total + 0.5 * float(theta.sum()) ** 2
        gradient = -grad / total
        gradient[:k] += l2 * theta / total + theta.sum()
        return value, gradient

    initial = np.zeros(k + (1 if fit_nu else 0))
    if start is not None:
        # Warm start (bootstrap replicates start at the full-data fit): fewer iterations.
        initial[:k] = start[0]
        if fit_nu and start[1] > 0:
            initial[k] = math.log(start[1])
    result = optimize.minimize(
        objective,
        initial,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
    )
    theta = result.x[:k] - result.x[:k].mean()
    nu = float(math.exp(result.x[k])) if fit_nu else 0.0
    params = np.append(theta, result.x[k]) if fit_nu else theta
    ll, grad = loglik_and_grad(params)
    # L-BFGS-B sometimes reports a line-search failure once it is already at the optimum to
    # machine precision; judge convergence by the gradient itself as well.
    penalised = grad[:k] - l2 * theta
    converged = bool(result.success) or float(np.max(np.abs(penalised))) / total < 1e-6
    return theta, nu, ll, converged, int(result.nit)


def bradley_terry(
    judgments: pd.DataFrame,
    ties: Literal["davidson", "drop"] = "davidson",
    l2: float = 0.0,
    *,
    codes: Codes | None = None,
) -> BTResult:
    """Fit a Bradley-Terry model with Davidson (1970) ties by maximum likelihood.

    ``P(i beats j) = pi_i / (pi_i + pi_j + nu sqrt(pi_i pi_j))`` and
    ``P(tie) = nu sqrt(pi_i pi_j) / (same)``. Judgments are collapsed to counts per arm pair
    (wins each way, ties) and ``both_bad`` rows are excluded. ``ties="drop"`` ignores ties
    instead (classic Bradley-Terry, ``nu = 0``). The negative log-likelihood is minimised with
    L-BFGS-B using its analytic gradient; log-strengths are reported centred to sum zero.

    The MLE exists only if the "beat or tied" graph of arms is strongly connected (Ford 1957);
    otherwise a ``ValueError`` is raised unless ``l2 > 0`` adds a ridge penalty
    ``l2/2 * sum(theta^2)`` (a Gaussian prior on log-strengths), which keeps the fit finite.
    """
    if ties not in ("davidson", "drop"):
        raise ValueError(f"ties must be 'davidson' or 'drop', got {ties!r}")
    if l2 < 0:
        raise ValueError("l2 must be non-negative")
    arms, ia, ib, outcome = codes or judgment_codes(judgments)
    wins, tie_counts = _unit_counts(np.zeros(len(ia), int), ia, ib, outcome, len(arms))
    return _fit_bt(arms, wins[0], tie_counts[0], ties == "davidson", l2)


def _fit_bt(
    arms: tuple[str, ...],
    wins: np.ndarray,
    ties: np.ndarray,
    use_ties: bool,
    l2: float,
    start: tuple[np.ndarray, float] | None = None,
) -> BTResult:
    tie_graph = ties if use_ties else np.zeros_like(ties)
    if l2 == 0 and not _identifiable(wins, tie_graph):
        raise ValueError(
            "Bradley-Terry MLE does not exist: some arms never lose (or never win) against the "
            "rest; collect more comparisons or pass l2 > 0"
        )
    theta, nu, ll, converged, nit = _fit_counts(wins, ties, use_ties, l2, start)
    return BTResult(
        arms=arms,
        strengths=tuple(float(x) for x in theta),
        tie_parameter=nu,
        log_likelihood=ll,
        converged=converged,
        iterations=nit,
    )


def distinct_rows(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a non-negative whole-number matrix (any order) and each row's one."""
    top = counts.max(axis=0).astype(np.int64) + 1 if len(counts) else np.ones(0, np.int64)
    if float(np.prod(top.astype(float))) < 2**62:
        # Each row as one number in a mixed radix: hashing that beats sorting rows.
        place = np.concatenate([np.cumprod(top[::-1])[::-1][1:], [1]]).astype(np.int64)
        which, _ = pd.factorize(counts.astype(np.int64) @ place)
        distinct = np.zeros((int(which.max()) + 1 if which.size else 0, counts.shape[1]))
        distinct[which] = counts
        return distinct, which
    # Not `distinct, which` again: mypy 1.19 crashes re-binding names from np.unique's result.
    unique_rows, inverse = np.unique(counts, axis=0, return_inverse=True)
    return unique_rows, inverse.reshape(-1)


def bradley_terry_bootstrap(
    judgments: pd.DataFrame,
    n_boot: int = 200,
    by: Literal["case", "rater"] = "case",
    seed: int = 0,
    confidence: float = 0.95,
    ties: Literal["davidson", "drop"] = "davidson",
    l2: float = 0.0,
    *,
    point: BTResult | None = None,
    diagnostics: dict[str, int] | None = None,
) -> dict[str, Interval]:
    """Cluster-bootstrap percentile intervals for the Bradley-Terry log-strengths.

    Cases (or raters) are resampled with replacement and every judgment of a drawn unit comes
    along, because judgments of one case (or by one rater) are correlated and resampling single
    judgments would understate the uncertainty. Each replicate is refitted; the interval is the
    ``(1 - confidence)/2`` and ``(1 + confidence)/2`` percentiles of the replicate strengths,
    around the full-data estimate. Deterministic for a given ``seed``.

    Replicates in which the MLE does not exist (an arm never won or never lost) are skipped
    with a warning when ``l2 == 0``; if that happens often, pass ``l2 > 0``. ``point`` is
    ``bradley_terry(judgments, ties, l2)`` when the caller already has it (it is not refitted).
    ``diagnostics``, when given, receives ``replicates`` and ``skipped`` instead of the warning,
    so a report can say so next to the intervals.
    """
    if by not in ("case", "rater"):
        raise ValueError(f"by must be 'case' or 'rater', got {by!r}")
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    z_value(confidence)
    if point is None:
        point = bradley_terry(judgments, ties=ties, l2=l2)
    arms, ia, ib, outcome = judgment_codes(judgments)
    column = "case_id" if by == "case" else "rater_id"
    unit, _ = pd.factorize(judgments[column], sort=True)
    wins, tie_counts = _unit_counts(np.asarray(unit), ia, ib, outcome, len(arms))
    n_units, k = wins.shape[0], len(arms)
    use_ties = ties == "davidson"
    start = (np.asarray(point.strengths), point.tie_parameter)
    # Units with the same counts are interchangeable, so a replicate only needs how often it
    # drew a unit of each count pattern: far fewer rows than units. Draw counts and judgment
    # counts are whole numbers, so these sums are exact, the same as weighting every unit.
    per_unit = np.concatenate([wins.reshape(n_units, -1), tie_counts.reshape(n_units, -1)], 1)
    patterns, pattern_of_unit = distinct_rows(per_unit)
    rng = np.random.default_rng(seed)
    replicates = []
    skipped = 0
    for _ in range(n_boot):
        drawn = pattern_of_unit[rng.integers(0, n_units, n_units)]
        totals = np.bincount(drawn, minlength=len(patterns)).astype(float) @ patterns
        w, t = totals[: k * k].reshape(k, k), totals[k * k :].reshape(k, k)
        # An arm can vanish from a replicate entirely; its strength is then undefined.
        seen = (w + w.T + t).sum(axis=1) > 0
        if not seen.all():
            skipped += 1
            continue
        try:
            fit = _fit_bt(arms, w, t, use_ties, l2, start)
        except ValueError:
            skipped += 1
            continue
        replicates.append(fit.strengths)
    if diagnostics is not None:
        diagnostics.update(replicates=n_boot, skipped=skipped)
    elif skipped:
        warnings.warn(
            f"{skipped} of {n_boot} bootstrap replicates had no finite Bradley-Terry MLE and were "
            "skipped; intervals may be too narrow (consider l2 > 0)",
            RuntimeWarning,
            stacklevel=2,
        )
    if not replicates:
        raise ValueError("no bootstrap replicate could be fitted")
    draws = np.asarray(replicates)
    alpha = 1 - confidence
    low = np.quantile(draws, alpha / 2, axis=0)
    high = np.quantile(draws, 1 - alpha / 2, axis=0)
    return {
        arm: Interval(point.strengths[k], float(low[k]), float(high[k]))
        for k, arm in enumerate(arms)
    }
