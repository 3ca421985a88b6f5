"""Paired comparisons of arms on blinded physician ratings.

Every physician rates every arm's response to the same case, so the natural unit is the
pair (case_id, rater_id): comparing arms within it removes case difficulty and rater
leniency, which dominate the between-arm variance on Likert scales.

Choices made here (all documented on the functions):

* Wilcoxon signed-rank, two-sided, zero differences handled by ``"wilcox"`` (dropped, as
  R's ``wilcox.test`` does) unless the caller asks for ``"pratt"`` or ``"zsplit"``.
  Exact null distribution when there are at most 50 non-zero differences and no ties in
  their magnitudes, otherwise the normal approximation with tie and continuity
  correction; p-values are the ones of ``scipy.stats.wilcoxon`` with those options.
* Effect size: matched-pairs rank-biserial r = (T+ - T-) / (T+ + T-) (Kerby 2014).
* Confidence intervals for r and for the median paired difference: percentile bootstrap
  over pairs with a seeded generator, so a report is reproducible bit for bit.
* Multiplicity: Holm (family-wise) or Benjamini-Hochberg (false discovery rate).
* Hallucination rates: Wilson score intervals; paired arm comparison by exact McNemar.

Pure functions over numpy arrays and pandas DataFrames; no Django import, so the same
code runs in the web app, a Celery task and a notebook.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from clinic_eval.statistics.intervals import NAN_INTERVAL, Interval

ZeroMethod = Literal["wilcox", "pratt", "zsplit"]


Correction = Literal["holm", "bh"]


PAIR_KEYS = ["case_id", "rater_id"]


# scipy's own threshold for the exact signed-rank distribution; beyond it the normal
# approximation is accurate and the exact enumeration gets expensive.
EXACT_MAX_N = 50


@dataclass(frozen=True)
class PairedTest:
    """Two-sided Wilcoxon signed-rank test of arm_a - arm_b over (case, rater) pairs.

    ``statistic`` is scipy's two-sided statistic min(T+, T-); the direction is carried by
    ``rank_biserial`` and ``median_difference`` (positive: arm_a rated higher).
    ``method`` is "exact" or "approx" (normal with tie and continuity correction).
    """

    n_pairs: int
    n_nonzero: int
    statistic: float
    p_value: float
    rank_biserial: float
    rank_biserial_ci: Interval
    median_difference: float
    median_difference_ci: Interval
    method: str


@dataclass(frozen=True)
class FriedmanResult:
    statistic: float
    p_value: float
    n_blocks: int


def _check_unique(frame: pd.DataFrame, keys: list[str]) -> None:
    # A duplicated rating would silently be averaged or dropped by a pivot; refuse instead,
    # the caller has to decide which rating counts.
    duplicated = frame.duplicated(subset=keys, keep=False)
    if duplicated.any():
        example = frame.loc[duplicated, keys].iloc[0].to_dict()
        raise ValueError(f"duplicate ratings for {example}")


def _compact(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each value among the distinct ``values`` (all in ``[0, size)``), and those.

    A bincount over the range when it is not much larger than the data (linear time),
    otherwise a sort.
    """
    if size <= max(2**20, 4 * values.size):
        present = np.flatnonzero(np.bincount(values, minlength=size))
        rank = np.zeros(size, dtype=np.int64)
        rank[present] = np.arange(present.size)
        return rank[values], present
    # Not `present` again: mypy 1.19 crashes re-binding a name from np.unique's result tuple.
    distinct, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1), distinct


def sorted_group(
    frame: pd.DataFrame, columns: Sequence[str]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group number per row in sorted key order (as ``groupby(sort=True).ngroup()``).

    Rows with a missing key get -1, as groupby drops them. Returns the group numbers and,
    per column, the sorted key of every group. Factorising each column once and combining
    integer codes is much faster than grouping or pivoting on several object columns.
    """
    factorized = [pd.factorize(frame[column], sort=True) for column in columns]
    valid = np.logical_and.reduce([codes >= 0 for codes, _ in factorized])
    sizes = tuple(max(len(uniques), 1) for _, uniques in factorized)
    codes = [c[valid] for c, _ in factorized]
    result = np.full(len(frame), -1, dtype=np.int64)
    if math.prod(sizes) < 2**62:
        result[valid], present = _compact(np.ravel_multi_index(codes, sizes), math.prod(sizes))
        key_codes = np.unravel_index(present, sizes)
    else:
        present, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        result[valid] = inverse.reshape(-1)
        key_codes = tuple(present.T)
    keys = [np.asarray(uniques)[k] for (_, uniques), k in zip(factorized, key_codes, strict=True)]
    return result, keys


def wide_table(
    frame: pd.DataFrame,
    arms: Sequence[str],
    values: np.ndarray,
    keep: np.ndarray,
    keys: tuple[np.ndarray, list[np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Wide float table of ``values`` indexed by (case_id, rater_id), sorted, one column per arm.

    The table ``pivot(index=PAIR_KEYS, columns="arm")`` gives on the ``keep`` rows whose arm is
    in ``arms``, reindexed to ``arms`` (NaN where a pair lacks an arm); a duplicated
    (case, rater, arm) raises. Built from integer codes because a pandas pivot per arm pair
    dominated the report on large studies. ``keys`` is ``sorted_group(frame, PAIR_KEYS)``
    when the caller already has it.
    """
    arm_code = pd.Index(list(arms)).get_indexer(pd.Index(frame["arm"])).astype(np.int64)
    pair, pair_keys = keys if keys is not None else sorted_group(frame, PAIR_KEYS)
    rows = keep & (arm_code >= 0) & (pair >= 0)
    # Sorted group numbers stay sorted on a subset, so the subset's own index is in order.
    pair, present = _compact(pair[rows], len(pair_keys[0]))
    arm_code = arm_code[rows]
    cell = pair * len(arms) + arm_code
    if cell.size and np.bincount(cell).max() > 1:
        _check_unique(frame.loc[rows], [*PAIR_KEYS, "arm"])
    table = np.full((len(present), len(arms)), np.nan)
    table[pair, arm_code] = values[rows]
    index = pd.MultiIndex.from_arrays([k[present] for k in pair_keys], names=PAIR_KEYS)
    return pd.DataFrame(table, index=index, columns=pd.Index(list(arms), name="arm"))


def score_tables(
    ratings: pd.DataFrame, arms: Sequence[str], dimensions: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """Per dimension, the wide (case, rater) x arm score table of every non-missing rating."""
    dimension_code, uniques = pd.factorize(ratings["dimension"])
    lookup = {d: k for k, d in enumerate(uniques)}
    scores = ratings["score"].to_numpy(dtype=float, na_value=np.nan)
    rated = ~np.isnan(scores)
    keys = sorted_group(ratings, PAIR_KEYS)
    return {
        dimension: wide_table(
            ratings, arms, scores, rated & (dimension_code == lookup.get(dimension, -2)), keys
        )
        for dimension in dimensions
    }


def paired_scores(ratings: pd.DataFrame, arms: Sequence[str], dimension: str) -> pd.DataFrame:
    """Wide table indexed by (case_id, rater_id), one column per arm, complete rows only."""
    return score_tables(ratings, arms, [dimension])[dimension].dropna(how="any")


def signed_rank_sums(
    differences: np.ndarray, zero_method: ZeroMethod
) -> tuple[np.ndarray, np.ndarray]:
    """T+ and T- along the last axis, zeros handled as scipy does.

    Works on a (B, n) matrix of bootstrap resamples at once: zeros share the lowest
    average rank, so dropping them ("wilcox") just shifts every non-zero rank down by the
    number of zeros in that row, which avoids a ragged per-row loop.
    """
    d = np.atleast_2d(differences)
    ranks = stats.rankdata(np.abs(d), axis=-1)
    if zero_method == "wilcox":
        ranks = ranks - (d == 0).sum(axis=-1, keepdims=True)
    t_plus = np.where(d > 0, ranks, 0.0).sum(axis=-1)
    t_minus = np.where(d < 0, ranks, 0.0).sum(axis=-1)
    if zero_method == "zsplit":
        # Zeros' ranks go half to each side; r's numerator is unchanged, its
        # denominator becomes n(n+1)/2 as in Kerby's formula with all pairs.
        half_zero = np.where(d == 0, ranks, 0.0).sum(axis=-1) / 2
        t_plus, t_minus = t_plus + half_zero, t_minus + half_zero
    return t_plus, t_minus


# Likert differences take a handful of values; up to this many, resample value counts instead.
COUNT_BOOTSTRAP_MAX_VALUES = 256


def signed_rank_bootstrap(
    d: np.ndarray, n_boot: int, seed: int, zero_method: ZeroMethod
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Medians and T+/T- of ``n_boot`` resamples of the pairs (with replacement).

    Resampling n pairs is the same as drawing multinomial counts over the distinct
    differences, and with few distinct values the ranks and the median follow from the
    counts alone: O(n_boot x values) instead of sorting n_boot x n resampled rows.
    """
    rng = np.random.default_rng(seed)
    values, counts = np.unique(d, return_counts=True)
    n = d.size
    if values.size > COUNT_BOOTSTRAP_MAX_VALUES:
        # Resample explicitly, a block of replicates at a time so memory stays bounded.
        block = max(1, 4_000_000 // n)
        medians, t_plus, t_minus = [], [], []
        for start in range(0, n_boot, block):
            resampled = d[rng.integers(0, n, size=(min(block, n_boot - start), n))]
            medians.append(np.median(resampled, axis=1))
            plus, minus = signed_rank_sums(resampled, zero_method)
            t_plus.append(plus)
            t_minus.append(minus)
        return np.concatenate(medians), np.concatenate(t_plus), np.concatenate(t_minus)
    drawn = rng.multinomial(n, counts / n, size=n_boot).astype(float)  # (B, values)
    cumulative = np.cumsum(drawn, axis=1)
    lower = (cumulative > (n - 1) // 2).argmax(axis=1)
    upper = (cumulative > n // 2).argmax(axis=1)
    medians = (values[lower] + values[upper]) / 2

    magnitudes, group = np.unique(np.abs(values), return_inverse=True)
    per_magnitude = np.zeros((n_boot, magnitudes.size))
    for value_index, magnitude_index in enumerate(group):
        per_magnitude[:, magnitude_index] += drawn[:, value_index]
    before = np.cumsum(per_magnitude, axis=1) - per_magnitude
    average_rank = before + (per_magnitude + 1) / 2  # ties share their mean rank
    if zero_method == "wilcox" and magnitudes[0] == 0:
        average_rank -= per_magnitude[:, :1]  # zeros dropped: every rank moves down
    rank_of_value = average_rank[:, group]
    t_plus = (drawn * rank_of_value * (values > 0)).sum(axis=1)
    t_minus = (drawn * rank_of_value * (values < 0)).sum(axis=1)
    if zero_method == "zsplit":
        half_zero = (drawn * rank_of_value * (values == 0)).sum(axis=1) / 2
        t_plus, t_minus = t_plus + half_zero, t_minus + half_zero
    return medians, t_plus, t_minus


def _rank_biserial(t_plus: np.ndarray, t_minus: np.ndarray) -> np.ndarray:
    total = t_plus + t_minus
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (t_plus - t_minus) / total, np.nan)


def percentile_interval(estimate: float, values: np.ndarray, confidence: float) -> Interval:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(estimate, float("nan"), float("nan"))
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return Interval(estimate, float(low), float(high))


def _normal_approx_p(d: np.ndarray, zero_method: ZeroMethod, t_plus: float) -> float:
    """Two-sided normal-approximation p-value with tie and continuity correction.

    ``t_plus`` comes from signed_rank_sums (for zsplit it already holds half the zeros).

    Same formulas as scipy: variance n(n+1)(2n+1)/24 less sum(t^3 - t)/48 over tie
    groups; Pratt removes the zeros' share from mean and variance (Cureton 1967) and
    keeps them out of the tie term; zsplit ranks zeros like any other value.
    """
    if zero_method == "wilcox":
        d = d[d != 0]
    n = d.size
    n_zero = int(np.count_nonzero(d == 0))
    magnitudes = np.abs(d)
    mean = n * (n + 1) / 4
    variance: float = n * (n + 1) * (2 * n + 1)
    if zero_method == "pratt":
        mean -= n_zero * (n_zero + 1) / 4
        variance -= n_zero * (n_zero + 1) * (2 * n_zero + 1)
        magnitudes = magnitudes[magnitudes != 0]
    _, tie_sizes = np.unique(magnitudes, return_counts=True)
    variance -= np.sum(tie_sizes.astype(float) ** 3 - tie_sizes) / 2
    se = np.sqrt(variance / 24)
    if se == 0:
        return float("nan")
    z = (t_plus - mean) / se
    z -= np.sign(z) * 0.5 / se
    return float(min(1.0, 2 * stats.norm.sf(abs(z))))


def signed_rank_test(
    differences: np.ndarray,
    *,
    zero_method: ZeroMethod = "wilcox",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedTest:
    """Wilcoxon signed-rank test on paired differences (array-level core of wilcoxon_pairs).

    Exact p-value when there are at most 50 non-zero differences, no ties among their
    magnitudes and (for "pratt"/"zsplit") no zeros, because only then is the exact null
    distribution valid; otherwise normal approximation with tie and continuity
    correction, as R's wilcox.test does. The p-value equals scipy.stats.wilcoxon's with
    method="exact" or method="approx", correction=True (not scipy's "auto", which switches
    to a permutation test for n <= 13 with ties or zeros).

    CIs for the rank-biserial r and the median difference are percentile bootstrap over
    pairs (``n_boot`` resamples, ``seed``): Likert differences take few distinct values,
    so normal-theory intervals for the median would be meaningless, and the bootstrap
    keeps both intervals on the same resamples; ``n_boot=0`` skips them (NaN intervals)
    for simulation studies that only need the p-value. With no pairs, or all differences
    zero, statistic and p-value are NaN (multiple-testing code passes NaN through).
    """
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    n_pairs = int(d.size)
    nonzero = d[d != 0]
    n_nonzero = int(nonzero.size)
    nan = float("nan")
    if n_pairs == 0:
        return PairedTest(0, 0, nan, nan, nan, NAN_INTERVAL, nan, NAN_INTERVAL, "none")

    median_difference = float(np.median(d))
    median_ci = r_ci = NAN_INTERVAL
    if n_boot > 0:
        boot_medians, boot_plus, boot_minus = signed_rank_bootstrap(d, n_boot, seed, zero_method)
        median_ci = percentile_interval(median_difference, boot_medians, confidence)
    if n_nonzero == 0:
        # No information about direction: leave the test undefined rather than claim p=1.
        return PairedTest(
            n_pairs, 0, nan, nan, nan, NAN_INTERVAL,
            median_difference, median_ci, "none",
        )  # fmt: skip

    t_plus, t_minus = signed_rank_sums(d, zero_method)
    rank_biserial = float(_rank_biserial(t_plus, t_minus)[0])
    if n_boot > 0:
        r_ci = percentile_interval(rank_biserial, _rank_biserial(boot_plus, boot_minus), confidence)

    has_ties = np.unique(np.abs(nonzero)).size < n_nonzero
    zeros_ranked = zero_method != "wilcox" and n_nonzero < n_pairs
    exact = n_nonzero <= EXACT_MAX_N and not has_ties and not zeros_ranked
    if exact:
        method = "exact"
        # Under "wilcox" zeros are discarded before ranking, so handing scipy the non-zero
        # differences is the same test (and "exact" here implies there are none otherwise).
        result = stats.wilcoxon(nonzero, zero_method=zero_method, method="exact")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        method = "approx"
        # Closed form of scipy.stats.wilcoxon(method="approx", correction=True); computed
        # here because scipy's generic machinery costs ~1.5 ms a call, which dominates
        # simulation studies. Equality with scipy is pinned by the tests.
        statistic = float(min(t_plus[0], t_minus[0]))
        p_value = _normal_approx_p(d, zero_method, float(t_plus[0]))

    return PairedTest(
        n_pairs=n_pairs,
        n_nonzero=n_nonzero,
        statistic=statistic,
        p_value=p_value,
        rank_biserial=rank_biserial,
        rank_biserial_ci=r_ci,
        median_difference=median_difference,
        median_difference_ci=median_ci,
        method=method,
    )


def wilcoxon_pairs(
    ratings: pd.DataFrame,
    arm_a: str,
    arm_b: str,
    dimension: str,
    *,
    zero_method: ZeroMethod = "wilcox",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedTest:
    """Compare arm_a with arm_b on one dimension, pairing ratings by (case_id, rater_id).

    Differences are arm_a - arm_b; pairs missing either arm are left out. See
    signed_rank_test for the test, the exact/approximate switch and the intervals.
    """
    wide = paired_scores(ratings, [arm_a, arm_b], dimension)
    differences = (wide[arm_a] - wide[arm_b]).to_numpy()
    return signed_rank_test(
        differences, zero_method=zero_method, n_boot=n_boot, seed=seed, confidence=confidence
    )


def friedman(ratings: pd.DataFrame, dimension: str, arms: Sequence[str]) -> FriedmanResult:
    """Friedman test of equal arm distributions on one dimension.

    Blocks are (case_id, rater_id) pairs that rated every arm; incomplete blocks are
    dropped because the Friedman ranks are only comparable within a complete block.
    Statistic is scipy's friedmanchisquare (tie-corrected, chi-square with k-1 df).
    """
    if len(arms) < 3:
        raise ValueError("Friedman needs at least three arms; use wilcoxon_pairs for two")
    return _friedman(paired_scores(ratings, arms, dimension))


def _friedman(wide: pd.DataFrame) -> FriedmanResult:
    """friedman on the complete blocks of a wide (case, rater) x arm table."""
    n_blocks = len(wide)
    values = wide.to_numpy()
    # scipy divides by the tie correction, which is zero when every block is fully tied.
    if n_blocks < 2 or bool((values == values[:, :1]).all()):
        return FriedmanResult(float("nan"), float("nan"), n_blocks)
    result = stats.friedmanchisquare(*values.T)
    return FriedmanResult(float(result.statistic), float(result.pvalue), n_blocks)


def adjust_p_values(
    p_values: Sequence[float] | np.ndarray, method: Correction = "holm"
) -> np.ndarray:
    """Holm or Benjamini-Hochberg adjusted p-values, in the input order.

    Matches statsmodels multipletests(method="holm" / "fdr_bh")[1] on the finite entries.
    NaN entries (tests that could not be computed) stay NaN and do not count towards the
    family size, because they are not hypotheses that were tested.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    values = p[finite]
    m = values.size
    if m == 0:
        return adjusted
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    if method == "holm":
        # Step-down: the i-th smallest is multiplied by (m - i); monotone from the bottom.
        stepped = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "bh":
        # Step-up: p_(i) * m / i, made monotone from the top.
        stepped = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}; use 'holm' or 'bh'")
    result = np.empty(m)
    result[order] = np.minimum(stepped, 1.0)
    adjusted[finite] = result
    return adjusted


def pairwise_likert_tests(
    ratings: pd.DataFrame,
    arms: Sequence[str],
    dimensions: Sequence[str],
    correction: Correction = "holm",
    *,
    zero_method: ZeroMethod = "wilcox",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Wilcoxon test for every arm pair on every dimension, corrected as one family.

    The family is all pairs x dimensions together: a paper reports them side by side, so
    correcting per dimension would understate the chance of one false claim. Mean scores
    are over the pairs that enter the test, so they describe the same data as the p-value.
    Intervals are flattened into *_low / *_high columns.
    """
    tables = score_tables(ratings, arms, dimensions)
    return _pairwise_tests(
        tables, arms, dimensions, correction, zero_method=zero_method, n_boot=n_boot, seed=seed
    )


def likert_family(
    ratings: pd.DataFrame,
    arms: Sequence[str],
    dimensions: Sequence[str],
    correction: Correction = "holm",
    *,
    tables: dict[str, pd.DataFrame] | None = None,
    **options: Any,
) -> tuple[pd.DataFrame, dict[str, FriedmanResult]]:
    """pairwise_likert_tests (same ``options``) and, with three or more arms, friedman per
    dimension: the same results as calling them separately, from one pass over the ratings
    (``tables``: ``score_tables(ratings, arms, dimensions)`` when the caller has them).
    """
    tables = tables if tables is not None else score_tables(ratings, arms, dimensions)
    tests = _pairwise_tests(tables, arms, dimensions, correction, **options)
    friedmans = {}
    if len(arms) >= 3:
        friedmans = {d: _friedman(tables[d].dropna(how="any")) for d in dimensions}
    return tests, friedmans


def _pairwise_tests(
    tables: dict[str, pd.DataFrame],
    arms: Sequence[str],
    dimensions: Sequence[str],
    correction: Correction,
    *,
    zero_method: ZeroMethod = "wilcox",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    for dimension in dimensions:
        for arm_a, arm_b in itertools.combinations(arms, 2):
            # The pairs that rated both arms: what paired_scores(ratings, [arm_a, arm_b]) gives.
            wide = tables[dimension][[arm_a, arm_b]].dropna(how="any")
            test = signed_rank_test(
                (wide[arm_a] - wide[arm_b]).to_numpy(),
                zero_method=zero_method,
                n_boot=n_boot,
                seed=seed,
            )
            fields = asdict(test)
            r_ci = fields.pop("rank_biserial_ci")
            median_ci = fields.pop("median_difference_ci")
            rows.append(
                {
                    "dimension": dimension,
                    "arm_a": arm_a,
                    "arm_b": arm_b,
                    "mean_a": float(wide[arm_a].mean()) if len(wide) else float("nan"),
                    "mean_b": float(wide[arm_b].mean()) if len(wide) else float("nan"),
                    **fields,
                    "rank_biserial_ci_low": r_ci["low"],
                    "rank_biserial_ci_high": r_ci["high"],
                    "median_difference_ci_low": median_ci["low"],
                    "median_difference_ci_high": median_ci["high"],
                }
            )
    table = pd.DataFrame(rows)
    table["p_adjusted"] = adjust_p_values(table["p_value"].to_numpy(), correction)
    return table
