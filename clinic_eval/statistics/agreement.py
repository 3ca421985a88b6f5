"""Inter- and intra-rater agreement for physician ratings: pure functions over arrays/DataFrames.

Long data always has the columns ``unit``, ``rater`` and ``value`` (``category`` is accepted for
``value``), plus an optional ``repeat`` column (0 for the first rating, 1.. for re-ratings of the
same unit by the same rater). Inter-rater statistics use only each rater's first rating of a
unit, so deliberate re-ratings for intra-rater checks do not count twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any, Literal

import numpy as np
import pandas as pd

AlphaLevel = Literal["nominal", "ordinal", "interval", "ratio"]
KappaWeights = Literal["linear", "quadratic"] | None

__all__ = [
    "cohen_kappa",
    "first_ratings",
    "fleiss_kappa",
    "fleiss_table",
    "intra_rater_consistency",
    "krippendorff_alpha",
    "krippendorff_alpha_coded",
    "pairwise_cohen_kappa",
    "reliability_matrix",
]


def _value_column(long_df: pd.DataFrame) -> str:
    for name in ("value", "category"):
        if name in long_df.columns:
            return name
    raise ValueError("long data needs a 'value' (or 'category') column")


def first_ratings(long_df: pd.DataFrame) -> pd.DataFrame:
    """One row per (unit, rater): the lowest ``repeat`` when re-ratings are present."""
    missing = {"unit", "rater"} - set(long_df.columns)
    if missing:
        raise ValueError(f"long data lacks columns {sorted(missing)}")
    value = _value_column(long_df)
    df = long_df
    if "repeat" in df.columns:
        df = df.sort_values("repeat", kind="stable")
    df = df.drop_duplicates(["unit", "rater"], keep="first")
    if "repeat" not in long_df.columns and len(df) != len(long_df):
        # Without a repeat column a duplicate is ambiguous (data error or re-rating?): refuse.
        raise ValueError("duplicate (unit, rater) rows; add a 'repeat' column for re-ratings")
    return df[["unit", "rater", value]].rename(columns={value: "value"})


def reliability_matrix(long_df: pd.DataFrame) -> pd.DataFrame:
    """Raters × units table of first ratings (NaN/None where a rater did not rate a unit)."""
    df = first_ratings(long_df)
    return df.pivot(index="rater", columns="unit", values="value")


# --------------------------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------------------------


def _coincidences(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coincidence matrix o_ck over the sorted distinct values (Krippendorff 2011, sect. B).

    With n_uc the count of value c in unit u and m_u the unit's pairable values,
    o_ck = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1): one product over a units x values
    count table instead of a loop over units.
    """
    present = ~np.isnan(matrix)
    return _coincidences_of(np.nonzero(present)[1], matrix[present], matrix.shape[1])


def _coincidences_of(
    units: np.ndarray, ratings: np.ndarray, n_units: int
) -> tuple[np.ndarray, np.ndarray]:
    """_coincidences from the unit index and value of every non-missing rating.

    Only the per-unit value counts matter, so long data need not be pivoted to a dense
    raters x units matrix first; units without a value stay in as empty rows, which keeps
    the sums below in the same order as for the matrix.
    """
    values, codes = np.unique(ratings, return_inverse=True)
    cells = np.bincount(units * len(values) + codes, minlength=n_units * len(values))
    counts = cells.reshape(n_units, len(values)).astype(float)
    m_u = counts.sum(axis=1)
    # A value nobody else rated in its unit cannot be paired, so it is not pairable data.
    weights = np.where(m_u >= 2, 1 / np.maximum(m_u - 1, 1), 0.0)
    weighted = counts * weights[:, None]
    o = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    return values, o


def _delta2(values: np.ndarray, n_c: np.ndarray, level: AlphaLevel) -> np.ndarray:
    c = values[:, None]
    k = values[None, :]
    # Each branch names its result so that numpy's Any-typed arithmetic gets a declared type.
    delta2: np.ndarray
    if level == "nominal":
        delta2 = (c != k).astype(float)
        return delta2
    if level == "interval":
        delta2 = (c - k) ** 2
        return delta2
    if level == "ratio":
        with np.errstate(invalid="ignore", divide="ignore"):
            d = ((c - k) / (c + k)) ** 2
        delta2 = np.nan_to_num(d)  # 0/0 only when c == k == 0: no difference
        return delta2
    if level == "ordinal":
        # Ordinal metric: squared count of pairable values between c and k, halving the ends.
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        i = np.arange(len(values))
        lo = np.minimum(i[:, None], i[None, :])
        hi = np.maximum(i[:, None], i[None, :])
        between = cum[hi + 1] - cum[lo]
        delta2 = (between - (n_c[:, None] + n_c[None, :]) / 2) ** 2 * (lo != hi)
        return delta2
    raise ValueError(f"unknown level {level!r}")


def krippendorff_alpha(data: np.ndarray | pd.DataFrame, level: AlphaLevel = "nominal") -> float:
    """Krippendorff's alpha from a raters × units float matrix (NaN = missing) or long data.

    Computed through the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
    Alpha-Reliability"): alpha = 1 - (n - 1) * sum(o_ck d_ck) / sum(n_c n_k d_ck), where only
    units with at least two values count. Long data (columns unit, rater, value) must hold
    numbers; for nominal data code the categories as numbers first. Returns NaN when fewer than
    two pairable values exist or all pairable values are identical (no variation to judge).
    """
    if isinstance(data, pd.DataFrame) and {"unit", "rater"} <= set(data.columns):
        first = first_ratings(data)
        return krippendorff_alpha_coded(
            first["unit"].to_numpy(), first["value"].to_numpy(dtype=float, na_value=np.nan), level
        )
    matrix = np.asarray(data, dtype=float)
    if matrix.ndim != 2:
        raise ValueError("expected a raters × units matrix")
    return _alpha(*_coincidences(matrix), level)


def krippendorff_alpha_coded(
    unit: np.ndarray, ratings: np.ndarray, level: AlphaLevel = "nominal"
) -> float:
    """krippendorff_alpha of long data already reduced to one rating per (unit, rater).

    ``unit`` holds sortable unit keys (integer codes are fastest) and ``ratings`` the numeric
    values, NaN where missing. The result is the same as for the reliability matrix, whose
    columns are the units in sorted order; no raters x units matrix is built.
    """
    # The units of reliability_matrix, in its (sorted) column order.
    codes, units = pd.factorize(unit, sort=True)
    present = ~np.isnan(ratings) & (codes >= 0)
    return _alpha(*_coincidences_of(codes[present], ratings[present], len(units)), level)


def _alpha(values: np.ndarray, o: np.ndarray, level: AlphaLevel) -> float:
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return float("nan")
    d = _delta2(values, n_c, level)
    expected = (np.outer(n_c, n_c) * d).sum()
    if expected == 0:
        return float("nan")
    return float(1 - (n - 1) * (o * d).sum() / expected)


# --------------------------------------------------------------------------------------------
# Fleiss' kappa
# --------------------------------------------------------------------------------------------


def fleiss_kappa(counts: np.ndarray | pd.DataFrame) -> float:
    """Fleiss' (1971) kappa from an items × categories table of rating counts.

    Every item must have the same number of ratings n >= 2 (Fleiss' formula assumes it; use
    ``krippendorff_alpha`` for unequal or missing ratings). NaN when chance agreement is 1.
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("expected a non-empty items × categories table")
    per_item = table.sum(axis=1)
    n = per_item[0]
    if not np.all(per_item == n) or n < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    p_i = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    p_j = table.sum(axis=0) / table.sum()
    p_bar, p_e = p_i.mean(), (p_j**2).sum()
    if p_e == 1:
        return float("nan")
    return float((p_bar - p_e) / (1 - p_e))


def fleiss_table(long_df: pd.DataFrame, categories: Sequence[Any] | None = None) -> pd.DataFrame:
    """Units × categories count table from long data (first rating per rater and unit).

    Raises ValueError when units have different numbers of ratings, because Fleiss' kappa is
    undefined then; drop incomplete units first or use Krippendorff's alpha instead.
    """
    df = first_ratings(long_df).dropna(subset=["value"])
    cats = list(categories) if categories is not None else sorted(df["value"].unique())
    unknown = set(df["value"]) - set(cats)
    if unknown:
        raise ValueError(f"ratings outside the categories: {sorted(map(str, unknown))}")
    table = pd.crosstab(df["unit"], df["value"]).reindex(columns=cats, fill_value=0)
    sizes = table.sum(axis=1)
    if sizes.nunique() > 1:
        uneven = sizes[sizes != sizes.mode().iloc[0]]
        raise ValueError(
            f"units have unequal numbers of ratings ({sorted(sizes.unique().tolist())}), e.g. "
            f"{list(uneven.index[:5])}; Fleiss' kappa needs equal counts"
        )
    return table


# --------------------------------------------------------------------------------------------
# Cohen's kappa
# --------------------------------------------------------------------------------------------


def _confusion(a: Sequence[Any], b: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        if x not in index or y not in index:
            raise ValueError(f"rating {x if x not in index else y!r} is not among the labels")
        table[index[x], index[y]] += 1
    return table


def cohen_kappa(
    a: Sequence[Any] | np.ndarray,
    b: Sequence[Any] | np.ndarray,
    weights: KappaWeights = None,
    labels: Sequence[Any] | None = None,
) -> float:
    """Cohen's (1960) kappa for two raters over the same items; weighted (Cohen 1968) optionally.

    Weighted kappa uses disagreement weights |i - j| (linear) or (i - j)^2 (quadratic) on the
    *positions* of the labels in ``labels`` (default: sorted union of both raters' values), so
    pass ``labels`` in their ordinal order. Items where either rating is missing (None/NaN) are
    dropped. NaN when chance agreement is perfect (e.g. both raters used one category only).
    """
    pairs = [
        (x, y) for x, y in zip(list(a), list(b), strict=True) if not (pd.isna(x) or pd.isna(y))
    ]
    if not pairs:
        return float("nan")
    xs, ys = zip(*pairs, strict=True)
    if labels is None:
        labels = sorted(set(xs) | set(ys))
    table = _confusion(xs, ys, labels)
    observed = table / table.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i = np.arange(len(labels))
    if weights is None:
        w = (i[:, None] != i[None, :]).astype(float)
    elif weights == "linear":
        w = np.abs(i[:, None] - i[None, :]).astype(float)
    elif weights == "quadratic":
        w = ((i[:, None] - i[None, :]) ** 2).astype(float)
    else:
        raise ValueError(f"unknown weights {weights!r}")
    denominator = (w * expected).sum()
    if denominator == 0:
        return float("nan")
    return float(1 - (w * observed).sum() / denominator)


def pairwise_cohen_kappa(
    long_df: pd.DataFrame,
    weights: KappaWeights = None,
    labels: Sequence[Any] | None = None,
    min_shared: int = 2,
) -> pd.DataFrame:
    """Cohen's kappa for every rater pair over the units both rated (first ratings).

    Returns columns rater_a, rater_b, n (shared units), percent_agreement, kappa; pairs with
    fewer than ``min_shared`` shared units get NaN kappa. ``labels`` defaults to all values seen
    in the data so every pair is weighted on the same ordinal scale.
    """
    matrix = reliability_matrix(long_df)
    if labels is None:
        labels = sorted(pd.unique(first_ratings(long_df)["value"].dropna()))
    rows = []
    for ra, rb in combinations(matrix.index, 2):
        both = matrix.loc[[ra, rb]].dropna(axis=1, how="any")
        n = both.shape[1]
        a, b = both.loc[ra].tolist(), both.loc[rb].tolist()
        agree = float(np.mean([x == y for x, y in zip(a, b, strict=True)])) if n else np.nan
        kappa = cohen_kappa(a, b, weights, labels) if n >= min_shared else float("nan")
        rows.append(
            {"rater_a": ra, "rater_b": rb, "n": n, "percent_agreement": agree, "kappa": kappa}
        )
    return pd.DataFrame(rows, columns=["rater_a", "rater_b", "n", "percent_agreement", "kappa"])


def intra_rater_consistency(
    long_df: pd.DataFrame,
    weights: KappaWeights = None,
    labels: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Test-retest consistency of raters who rated the same unit more than once.

    Each re-rating (repeat >= 1) is paired with that rater's first rating (lowest repeat) of the
    unit. Per rater: n_pairs, share of identical pairs, and Cohen's kappa between first and
    repeat ratings over all that rater's pairs (weighted as asked); a final row ``rater="all"``
    pools every rater's pairs. Raters without repeats are left out. Kappa is NaN when undefined
    (e.g. a rater used one category throughout).
    """
    if "repeat" not in long_df.columns:
        raise ValueError("intra-rater consistency needs a 'repeat' column")
    value = _value_column(long_df)
    df = long_df.dropna(subset=[value]).sort_values("repeat", kind="stable")
    first = df.drop_duplicates(["unit", "rater"], keep="first")
    again = df.drop(index=first.index)
    pairs = again.merge(
        first[["unit", "rater", value]], on=["unit", "rater"], suffixes=("_repeat", "_first")
    )
    if labels is None:
        labels = sorted(pd.unique(df[value]))
    columns = ["rater", "n_pairs", "identical_share", "kappa"]
    rows = []

    def summarise(rater: Any, part: pd.DataFrame) -> dict[str, Any]:
        x, y = part[f"{value}_first"].tolist(), part[f"{value}_repeat"].tolist()
        return {
            "rater": rater,
            "n_pairs": len(part),
            "identical_share": float(np.mean([p == q for p, q in zip(x, y, strict=True)])),
            "kappa": cohen_kappa(x, y, weights, labels),
        }

    for rater, part in pairs.groupby("rater", sort=True):
        rows.append(summarise(rater, part))
    if len(pairs):
        rows.append(summarise("all", pairs))
    return pd.DataFrame(rows, columns=columns)
