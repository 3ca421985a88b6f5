"""Hallucination flags: per-response units, rates with Wilson intervals, and McNemar's test per
arm pair with its family correction (the per-judgment sensitivity rows; the clustered analysis
is in ``crossed``)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from clinic_eval.statistics.intervals import wilson_interval
from clinic_eval.statistics.paired import PAIR_KEYS, sorted_group, wide_table

HALLUCINATION_KINDS = ("factual", "reasoning")


@dataclass(frozen=True)
class McNemarResult:
    """b: pairs where only arm_a hallucinated; c: pairs where only arm_b did."""

    b: int
    c: int
    p_value: float
    n_pairs: int


def flag_units(flags: pd.DataFrame) -> pd.DataFrame:
    """One row per rated response (case_id, rater_id, arm) with a boolean per kind and any.

    A rater may flag several kinds on one response (one row each); a response counts
    for a kind when any of its rows has it, and for "any" when any row is not "none".
    Rows come sorted by (case_id, rater_id, arm), as a groupby gives them.
    """
    unknown = set(flags["kind"].unique()) - {"none", *HALLUCINATION_KINDS}
    if unknown:
        raise ValueError(f"unknown hallucination kinds: {sorted(unknown)}")
    group, keys = sorted_group(flags, [*PAIR_KEYS, "arm"])
    grouped = group >= 0
    kind = flags["kind"].to_numpy()[grouped]
    units: dict[str, np.ndarray] = dict(zip([*PAIR_KEYS, "arm"], keys, strict=True))
    for name, hit in (("any", kind != "none"), *((k, kind == k) for k in HALLUCINATION_KINDS)):
        units[name] = np.bincount(group[grouped], weights=hit, minlength=len(keys[0])) > 0
    return pd.DataFrame(units)


def hallucination_rates(flags: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Rate of hallucinated responses per arm, overall ("any") and per kind, Wilson CI.

    The denominator is rated responses (case_id, rater_id, arm), not cases: each
    physician's judgement is one observation. Columns: arm, kind, n, count, rate,
    ci_low, ci_high.
    """
    return _rates(flag_units(flags), confidence)


def _rates(units: pd.DataFrame, confidence: float) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    for arm, group in units.groupby("arm", sort=True):
        n = len(group)
        for kind in ("any", *HALLUCINATION_KINDS):
            count = int(group[kind].sum())
            interval = wilson_interval(count, n, confidence)
            rows.append(
                {
                    "arm": arm,
                    "kind": kind,
                    "n": n,
                    "count": count,
                    "rate": count / n,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                }
            )
    return pd.DataFrame(rows, columns=["arm", "kind", "n", "count", "rate", "ci_low", "ci_high"])


def _mcnemar(wide: pd.DataFrame, arm_a: str, arm_b: str) -> McNemarResult:
    """McNemar from the wide (case, rater) x arm table of any-hallucination (NaN: not rated)."""
    pairs = wide[[arm_a, arm_b]].dropna(how="any").astype(bool)
    b = int((pairs[arm_a] & ~pairs[arm_b]).sum())
    c = int((~pairs[arm_a] & pairs[arm_b]).sum())
    p_value = 1.0 if b + c == 0 else float(min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5)))
    return McNemarResult(b=b, c=c, p_value=p_value, n_pairs=len(pairs))


def _flag_table(units: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    return wide_table(units, arms, units["any"].to_numpy(float), np.ones(len(units), bool))


def mcnemar_pairs(flags: pd.DataFrame, arm_a: str, arm_b: str) -> McNemarResult:
    """Exact McNemar test of any-hallucination between two arms, paired by (case, rater).

    Only discordant pairs carry information; under H0 b ~ Binomial(b + c, 1/2), and the
    two-sided p-value is min(1, 2 P(X <= min(b, c))), as in statsmodels'
    mcnemar(exact=True). Exact rather than chi-square because discordant counts in a
    rating study are small.
    """
    return _mcnemar(_flag_table(flag_units(flags), [arm_a, arm_b]), arm_a, arm_b)


def pairwise_mcnemar(flags: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """mcnemar_pairs for every pair of ``arms`` (in combinations order), one row each.

    Columns arm_a, arm_b, b, c, p_value, n_pairs; the responses are collapsed once for all
    pairs rather than once per pair.
    """
    return _pairwise_mcnemar(flag_units(flags), arms)


def hallucination_family(
    flags: pd.DataFrame,
    arms: Sequence[str],
    confidence: float = 0.95,
    *,
    units: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """hallucination_rates and pairwise_mcnemar, collapsing the flags to responses once
    (``units``: ``flag_units(flags)`` when the caller has it)."""
    units = units if units is not None else flag_units(flags)
    return _rates(units, confidence), _pairwise_mcnemar(units, arms)


def _pairwise_mcnemar(units: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    wide = _flag_table(units, arms)
    rows = [
        {"arm_a": arm_a, "arm_b": arm_b, **asdict(_mcnemar(wide, arm_a, arm_b))}
        for arm_a, arm_b in itertools.combinations(arms, 2)
    ]
    return pd.DataFrame(rows, columns=["arm_a", "arm_b", "b", "c", "p_value", "n_pairs"])
