"""Pairwise and best-of-N preference statistics for blinded physician comparisons of model arms.

Input shapes (pandas DataFrames, one row per judgment):

* pairwise judgments: ``case_id``, ``rater_id``, ``arm_a``, ``arm_b``, ``outcome`` with outcome in
  ``{"a", "b", "tie", "both_bad"}``; ``"both_bad"`` means the rater found neither response
  acceptable, which is not a statement about which one is better;
* best-of-N rows: ``case_id``, ``rater_id``, ``arms`` (a tuple of the arms shown), ``winner``;
* position rows: ``left_arm``, ``right_arm``, ``outcome`` in
  ``{"left", "right", "tie", "both_bad"}``;
* length rows: ``length_a``, ``length_b``, ``outcome`` (as for pairwise judgments).

Everything here is pure (arrays and DataFrames in, frozen dataclasses or DataFrames out) and has
no Django import, so it can be used from notebooks and tested without a database.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, sparse, stats
from scipy.sparse import csgraph

from clinic_eval.statistics.intervals import Interval, wilson_interval, z_value

OUTCOMES: tuple[str, ...] = ("a", "b", "tie", "both_bad")
POSITION_OUTCOMES: tuple[str, ...] = ("left", "right", "tie", "both_bad")
JUDGMENT_COLUMNS: tuple[str, ...] = ("case_id", "rater_id", "arm_a", "arm_b", "outcome")


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class PositionBias:
    """Share of decisive judgments that went to the left-hand (first shown) response."""

    decisive: int
    left_wins: int
    right_wins: int
    ties: int
    both_bad: int
    left_share: Interval
    p_value: float


@dataclass(frozen=True)
class LengthPreference:
    """Whether raters prefer the longer response among decisive judgments.

    ``longer_share`` counts only decisive judgments whose two lengths differ (``unequal``);
    ``spearman_rho`` uses all ``decisive`` judgments, correlating ``length_a - length_b`` with
    ``+1`` (a won) / ``-1`` (b won).
    """

    decisive: int
    unequal: int
    longer_wins: int
    longer_share: Interval
    p_value: float
    spearman_rho: float
    spearman_p: float


# --------------------------------------------------------------------------------------------
# Proportions and the sign test
# --------------------------------------------------------------------------------------------


def sign_test(wins_a: int, wins_b: int) -> float:
    """Exact two-sided sign test of ``P(a beats b) = 1/2`` on decisive judgments only.

    Ties and ``both_bad`` must already be excluded by the caller: they carry no information about
    which arm is better. Under p = 1/2 the binomial is symmetric, so the two-sided p-value (sum of
    outcomes at most as likely as the observed one) is ``2 * P(X <= min(a, b))``, capped at 1.
    """
    if wins_a < 0 or wins_b < 0:
        raise ValueError("win counts must be non-negative")
    n = int(wins_a) + int(wins_b)
    if n == 0:
        return 1.0
    if wins_a == wins_b:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(wins_a, wins_b), n, 0.5)))


# --------------------------------------------------------------------------------------------
# Win rates
# --------------------------------------------------------------------------------------------


def judgment_codes(
    judgments: pd.DataFrame,
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Validate pairwise judgments and code them in one pass over the columns.

    Returns the arm names (as strings, sorted), arm_a and arm_b as positions in them, and the
    outcome as a position in OUTCOMES (a, b, tie, both_bad).
    """
    missing = [c for c in JUDGMENT_COLUMNS if c not in judgments.columns]
    if missing:
        raise ValueError(f"judgments lack columns {missing}")
    n = len(judgments)
    both = pd.concat([judgments["arm_a"], judgments["arm_b"]], ignore_index=True)
    raw, uniques = pd.factorize(both)
    if (raw < 0).any():
        raise ValueError("arm_a and arm_b must not be missing")
    outcome = pd.Index(OUTCOMES).get_indexer(pd.Index(judgments["outcome"]))
    if (outcome < 0).any():
        bad = set(judgments["outcome"].unique()) - set(OUTCOMES)
        raise ValueError(f"unknown outcomes {sorted(map(str, bad))}; expected {OUTCOMES}")
    if (raw[:n] == raw[n:]).any():
        raise ValueError("an arm cannot be compared with itself")
    # Arms are compared as strings (astype(str)), so 1 and "1" are one arm.
    names = pd.Index(uniques).astype(str).tolist()
    arms = tuple(sorted(set(names)))
    position = np.array([arms.index(name) for name in names], dtype=int)
    index = position[raw] if n else np.zeros(0, int)
    return arms, index[:n], index[n:], outcome


Codes = tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]


def win_rates(
    judgments: pd.DataFrame, confidence: float = 0.95, *, codes: Codes | None = None
) -> pd.DataFrame:
    """Per-arm tallies and win rates, one row per arm (index ``arm``, sorted).

    Columns:

    * ``comparisons``: every judgment the arm took part in, ``both_bad`` included;
    * ``wins``, ``losses``, ``ties``, ``both_bad`` (these sum to ``comparisons``);
    * ``win_rate = wins / comparisons`` with Wilson ``win_rate_low`` / ``win_rate_high``: the
      strict rate, in which a tie or a both-unacceptable judgment is not a win;
    * ``tie_half_rate = (wins + 0.5 * ties) / (wins + losses + ties)`` with a Wilson interval on
      that denominator (fractional successes): ``both_bad`` is left out of the denominator
      because it says nothing about which of the two responses was better.

    Rates are nan where their denominator is 0. ``codes`` is ``judgment_codes(judgments)``
    when the caller already has it.
    """
    arms, ia, ib, outcome = codes or judgment_codes(judgments)
    k = len(arms)

    def tally(first: int, second: int) -> np.ndarray:
        # Judgments with outcome `first` for arm_a, plus those with `second` for arm_b.
        return np.bincount(ia[outcome == first], minlength=k) + np.bincount(
            ib[outcome == second], minlength=k
        )

    counts = pd.DataFrame(
        {"wins": tally(0, 1), "losses": tally(1, 0), "ties": tally(2, 2), "both_bad": tally(3, 3)},
        index=pd.Index(arms, name="arm"),
    ).astype(int)
    counts.insert(0, "comparisons", counts[["wins", "losses", "ties", "both_bad"]].sum(axis=1))
    rows = []
    for _, row in counts.iterrows():
        strict = wilson_interval(row["wins"], row["comparisons"], confidence)
        tied_n = row["wins"] + row["losses"] + row["ties"]
        half = wilson_interval(row["wins"] + 0.5 * row["ties"], tied_n, confidence)
        rows.append(
            {
                "win_rate": strict.estimate,
                "win_rate_low": strict.low,
                "win_rate_high": strict.high,
                "tie_half_rate": half.estimate,
                "tie_half_low": half.low,
                "tie_half_high": half.high,
            }
        )
    return pd.concat([counts, pd.DataFrame(rows, index=counts.index)], axis=1)


def pairwise_win_rates(
    judgments: pd.DataFrame, confidence: float = 0.95, *, codes: Codes | None = None
) -> pd.DataFrame:
    """Head-to-head tallies per unordered arm pair, one row each (``arm_1 < arm_2``).

    Columns: ``arm_1``, ``arm_2``, ``comparisons`` (all judgments of the pair), ``wins_1``,
    ``wins_2``, ``ties``, ``both_bad``, ``decisive = wins_1 + wins_2``, ``win_rate_1 = wins_1 /
    decisive`` with a Wilson interval, and ``sign_p`` (exact two-sided sign test on the decisive
    judgments; ties and both_bad excluded).
    """
    arms, ia, ib, outcome = codes or judgment_codes(judgments)
    k = len(arms)
    # Orient each judgment to the sorted pair (arm codes follow the sorted arm names).
    swap = ia > ib
    pair = np.where(swap, ib, ia) * k + np.where(swap, ia, ib)
    first_won = ((outcome == 0) & ~swap) | ((outcome == 1) & swap)
    second_won = ((outcome == 1) & ~swap) | ((outcome == 0) & swap)
    tallies = {
        name: np.bincount(pair[rows], minlength=k * k)
        for name, rows in (
            ("wins_1", first_won),
            ("wins_2", second_won),
            ("ties", outcome == 2),
            ("both_bad", outcome == 3),
        )
    }
    seen = np.flatnonzero(np.bincount(pair, minlength=k * k))
    names = np.array(arms, dtype=object)
    counts = pd.DataFrame(
        {
            "arm_1": names[seen // k],
            "arm_2": names[seen % k],
            **{name: tally[seen] for name, tally in tallies.items()},
        }
    ).astype({name: int for name in tallies})
    counts.insert(2, "comparisons", counts[["wins_1", "wins_2", "ties", "both_bad"]].sum(axis=1))
    counts["decisive"] = counts["wins_1"] + counts["wins_2"]
    intervals = [
        wilson_interval(w, n, confidence)
        for w, n in zip(counts["wins_1"], counts["decisive"], strict=True)
    ]
    counts["win_rate_1"] = [i.estimate for i in intervals]
    counts["win_rate_1_low"] = [i.low for i in intervals]
    counts["win_rate_1_high"] = [i.high for i in intervals]
    counts["sign_p"] = [
        sign_test(w1, w2) for w1, w2 in zip(counts["wins_1"], counts["wins_2"], strict=True)
    ]
    return counts


def best_of_n_shares(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Winning share per arm in best-of-N tasks: ``share = wins / shown`` with a Wilson interval.

    ``rows`` has ``arms`` (tuple of arms shown) and ``winner``; a missing winner (None / nan)
    means no response was chosen, which counts as a showing without a win. ``chance_share`` is
    the share expected if raters picked uniformly at random among the arms shown (the mean of
    ``1 / len(arms)`` over the arm's showings), since N may vary between tasks.
    """
    for column in ("arms", "winner"):
        if column not in rows.columns:
            raise ValueError(f"best-of-N rows lack column {column!r}")
    shown: dict[Hashable, int] = {}
    wins: dict[Hashable, int] = {}
    chance: dict[Hashable, float] = {}
    for arms, winner in zip(rows["arms"], rows["winner"], strict=True):
        arms = tuple(arms)
        if len(arms) < 2 or len(set(arms)) != len(arms):
            raise ValueError(f"a best-of-N task needs at least two distinct arms, got {arms}")
        has_winner = winner is not None and not (isinstance(winner, float) and math.isnan(winner))
        if has_winner and winner not in arms:
            raise ValueError(f"winner {winner!r} was not among the arms shown {arms}")
        for arm in arms:
            shown[arm] = shown.get(arm, 0) + 1
            chance[arm] = chance.get(arm, 0.0) + 1 / len(arms)
            wins.setdefault(arm, 0)
        if has_winner:
            wins[winner] += 1
    records = []
    for arm in sorted(shown, key=str):
        interval = wilson_interval(wins[arm], shown[arm], confidence)
        records.append(
            {
                "arm": arm,
                "shown": shown[arm],
                "wins": wins[arm],
                "share": interval.estimate,
                "share_low": interval.low,
                "share_high": interval.high,
                "chance_share": chance[arm] / shown[arm],
            }
        )
    columns = ["arm", "shown", "wins", "share", "share_low", "share_high", "chance_share"]
    return pd.DataFrame.from_records(records, columns=columns).set_index("arm")


# --------------------------------------------------------------------------------------------
# Bradley-Terry with Davidson ties
# --------------------------------------------------------------------------------------------


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


def _distinct_rows(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    patterns, pattern_of_unit = _distinct_rows(per_unit)
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


# --------------------------------------------------------------------------------------------
# Bias diagnostics
# --------------------------------------------------------------------------------------------


def position_bias(judgments: pd.DataFrame, confidence: float = 0.95) -> PositionBias:
    """Do raters favour the response shown on the left?

    Uses rows with ``left_arm``, ``right_arm`` and ``outcome`` in ``{"left", "right", "tie",
    "both_bad"}``. The share of decisive choices that went left gets a Wilson interval and an
    exact two-sided binomial test against 1/2. With arm order randomised, arm quality averages
    out over positions, so a departure from 1/2 is attributable to position.
    """
    for column in ("left_arm", "right_arm", "outcome"):
        if column not in judgments.columns:
            raise ValueError(f"position rows lack column {column!r}")
    outcome = judgments["outcome"].to_numpy()
    bad = set(outcome) - set(POSITION_OUTCOMES)
    if bad:
        raise ValueError(f"unknown outcomes {sorted(map(str, bad))}; expected {POSITION_OUTCOMES}")
    left = int(np.sum(outcome == "left"))
    right = int(np.sum(outcome == "right"))
    return PositionBias(
        decisive=left + right,
        left_wins=left,
        right_wins=right,
        ties=int(np.sum(outcome == "tie")),
        both_bad=int(np.sum(outcome == "both_bad")),
        left_share=wilson_interval(left, left + right, confidence),
        p_value=sign_test(left, right),
    )


def length_preference(rows: pd.DataFrame, confidence: float = 0.95) -> LengthPreference:
    """Do raters prefer the longer response?

    Uses rows with ``length_a``, ``length_b`` and ``outcome``; only decisive rows (``"a"`` or
    ``"b"``) are used, the rest are ignored. The share of decisive judgments with unequal
    lengths in which the longer response won gets a Wilson interval and a sign test (equal
    lengths cannot favour either side, so they are excluded there). Spearman's rho relates
    ``length_a - length_b`` to ``+1`` (a won) / ``-1`` (b won) over all decisive rows; it is nan
    when either variable is constant.
    """
    for column in ("length_a", "length_b", "outcome"):
        if column not in rows.columns:
            raise ValueError(f"length rows lack column {column!r}")
    outcome = rows["outcome"].to_numpy()
    bad = set(outcome) - set(OUTCOMES)
    if bad:
        raise ValueError(f"unknown outcomes {sorted(map(str, bad))}; expected {OUTCOMES}")
    decisive = (outcome == "a") | (outcome == "b")
    diff = (rows["length_a"].to_numpy(float) - rows["length_b"].to_numpy(float))[decisive]
    sign = np.where(outcome[decisive] == "a", 1.0, -1.0)
    unequal = diff != 0
    longer_wins = int(np.sum(np.sign(diff[unequal]) == sign[unequal]))
    n_unequal = int(unequal.sum())
    if diff.size >= 2 and np.ptp(diff) > 0 and np.ptp(sign) > 0:
        rho, rho_p = stats.spearmanr(diff, sign)
        rho, rho_p = float(rho), float(rho_p)
    else:
        rho, rho_p = math.nan, math.nan
    return LengthPreference(
        decisive=int(decisive.sum()),
        unequal=n_unequal,
        longer_wins=longer_wins,
        longer_share=wilson_interval(longer_wins, n_unequal, confidence),
        p_value=sign_test(longer_wins, n_unequal - longer_wins),
        spearman_rho=rho,
        spearman_p=rho_p,
    )
