"""Agreement on criterion verdicts: Cohen's kappa between physicians, and between each model
grader and the physicians' majority, overall and per arm, axis and criterion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinic_eval.statistics.accuracy import macro_micro
from clinic_eval.statistics.rubric import ALL, MODEL, PHYSICIAN, majority_verdicts, prepare

# Scopes of the agreement tables: (name, column whose values are the keys; None: one "all" key).
AGREEMENT_SCOPES: tuple[tuple[str, str | None], ...] = (
    (ALL, None),
    ("arm", "arm"),
    ("axis", "axis"),
    ("criterion", "criterion_id"),
)


def _binary_kappa(
    both: np.ndarray, only_a: np.ndarray, only_b: np.ndarray, neither: np.ndarray
) -> np.ndarray:
    """Cohen's kappa from 2x2 counts (met by both, by a only, by b only, by neither).

    Written as cohen_kappa computes it, 1 - observed / chance disagreement, so that the NaN
    cases are the same: chance disagreement 0 means both sides used one verdict throughout.
    """
    n = both + only_a + only_b + neither
    with np.errstate(invalid="ignore", divide="ignore"):
        share_a = (both + only_a) / n
        share_b = (both + only_b) / n
        chance = share_a * (1 - share_b) + (1 - share_a) * share_b
        observed = (only_a + only_b) / n
        return np.where((n > 0) & (chance > 0), 1 - observed / chance, np.nan)


def _counts_by_scope(
    pairs: pd.DataFrame,
    a: str,
    b: str,
    extra_keys: list[str],
    counted: pd.Series | None = None,
) -> pd.DataFrame:
    """2x2 counts of boolean columns ``a`` and ``b`` per scope and key (and ``extra_keys``).

    Rows outside ``counted`` (tied physician majorities) enter only ``n_excluded``, so a key
    whose units were all excluded still gets its row.
    """
    counted = pd.Series(True, index=pairs.index) if counted is None else counted
    cells = pairs.assign(
        counted=counted,
        excluded=~counted,
        both=counted & pairs[a] & pairs[b],
        only_a=counted & pairs[a] & ~pairs[b],
        only_b=counted & ~pairs[a] & pairs[b],
        neither=counted & ~pairs[a] & ~pairs[b],
    )
    tables = []
    for scope, column in AGREEMENT_SCOPES:
        keyed = cells.assign(scope=scope, key=ALL if column is None else cells[column])
        tables.append(
            keyed.groupby(["scope", "key", *extra_keys], sort=True)[
                ["counted", "excluded", "both", "only_a", "only_b", "neither"]
            ]
            .sum()
            .reset_index()
            .rename(columns={"counted": "n", "excluded": "n_excluded"})
        )
    return pd.concat(tables, ignore_index=True)


def physician_pair_kappas(
    criteria: pd.DataFrame,
    grades: pd.DataFrame,
    *,
    level: str | None = None,
    model_prefix: str = "model:",
    min_shared: int = 2,
) -> pd.DataFrame:
    """Cohen's kappa on met/not met for every physician pair, overall and per arm/axis/criterion.

    A unit is a (response, criterion) both physicians graded. Columns: scope ("all", "arm",
    "axis", "criterion"), key, physician_a, physician_b (a < b as strings), n (shared units),
    percent_agreement, kappa (NaN when n < ``min_shared`` or undefined; see ``statistics.rubric``).
    """
    _, verdicts = prepare(criteria, grades, level, model_prefix)
    physicians = verdicts.loc[
        verdicts["grader_kind"] == PHYSICIAN,
        ["response_id", "criterion_id", "arm", "axis", "grader", "met"],
    ]
    pairs = physicians.merge(
        physicians[["response_id", "criterion_id", "grader", "met"]],
        on=["response_id", "criterion_id"],
        suffixes=("_a", "_b"),
    )
    pairs = pairs[pairs["grader_a"].astype(str) < pairs["grader_b"].astype(str)]
    pairs = pairs.rename(columns={"grader_a": "physician_a", "grader_b": "physician_b"})
    columns = ["scope", "key", "physician_a", "physician_b", "n", "percent_agreement", "kappa"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    table = _counts_by_scope(pairs, "met_a", "met_b", ["physician_a", "physician_b"])
    table["percent_agreement"] = (table["both"] + table["neither"]) / table["n"]
    kappa = _binary_kappa(
        *(table[c].to_numpy(float) for c in ("both", "only_a", "only_b", "neither"))
    )
    table["kappa"] = np.where(table["n"] >= min_shared, kappa, np.nan)
    return table[columns]


def physician_agreement(
    criteria: pd.DataFrame,
    grades: pd.DataFrame,
    *,
    level: str | None = None,
    model_prefix: str = "model:",
    min_shared: int = 2,
) -> pd.DataFrame:
    """Physician-physician agreement, pair kappas averaged, overall and per arm/axis/criterion.

    Columns: scope, key, n_pairs (physician pairs sharing a unit), n_pairs_defined (pairs with
    a finite kappa), n_comparisons (pair x unit comparisons), percent_agreement (pooled over
    them), mean_kappa (unweighted mean of the defined pair kappas; NaN when none is defined).
    """
    pairs = physician_pair_kappas(
        criteria, grades, level=level, model_prefix=model_prefix, min_shared=min_shared
    )
    columns = ["scope", "key", "n_pairs", "n_pairs_defined", "n_comparisons"]
    columns += ["percent_agreement", "mean_kappa"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    pairs = pairs.assign(agreed=pairs["percent_agreement"] * pairs["n"])
    summary = (
        pairs.groupby(["scope", "key"], sort=False)
        .agg(
            n_pairs=("n", "size"),
            n_pairs_defined=("kappa", "count"),
            n_comparisons=("n", "sum"),
            agreed=("agreed", "sum"),
            mean_kappa=("kappa", "mean"),  # pandas' mean skips NaN, and is NaN if all are
        )
        .reset_index()
    )
    summary["percent_agreement"] = summary["agreed"] / summary["n_comparisons"]
    return summary[columns]


def grader_agreement(
    criteria: pd.DataFrame,
    grades: pd.DataFrame,
    *,
    level: str | None = None,
    model_prefix: str = "model:",
    min_shared: int = 2,
) -> pd.DataFrame:
    """Model grader(s) against the physician majority, overall and per arm/axis/criterion.

    Units are (response, criterion) with a model verdict and a strict physician majority;
    units where the physicians tie are left out and counted in ``n_ties``. Per model grader and
    scope: n (units compared), agreement (share of equal verdicts), kappa (NaN when
    n < ``min_shared`` or undefined), macro_f1 (mean F1 over the classes met / not met present
    on either side, as accuracy's macro-F1 and HealthBench's meta-evaluation), model_met_rate,
    physician_met_rate.
    """
    _, verdicts = prepare(criteria, grades, level, model_prefix)
    majority = majority_verdicts(verdicts[verdicts["grader_kind"] == PHYSICIAN])
    majority["physician_met"] = 2 * majority["n_met"] > majority["n_physicians"]
    majority["tied"] = 2 * majority["n_met"] == majority["n_physicians"]
    model = verdicts.loc[
        verdicts["grader_kind"] == MODEL, ["response_id", "criterion_id", "grader", "met"]
    ].rename(columns={"met": "model_met"})
    joined = model.merge(
        majority[["response_id", "criterion_id", "arm", "axis", "physician_met", "tied"]],
        on=["response_id", "criterion_id"],
    )
    columns = ["grader", "scope", "key", "n", "n_ties", "agreement", "kappa", "macro_f1"]
    columns += ["model_met_rate", "physician_met_rate"]
    if joined.empty:
        return pd.DataFrame(columns=columns)
    table = _counts_by_scope(
        joined, "model_met", "physician_met", ["grader"], counted=~joined["tied"]
    ).rename(columns={"n_excluded": "n_ties"})
    both, model_only, physician_only, neither = (
        table[c].to_numpy(float) for c in ("both", "only_a", "only_b", "neither")
    )
    n = table["n"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["agreement"] = (both + neither) / n
        table["model_met_rate"] = (both + model_only) / n
        table["physician_met_rate"] = (both + physician_only) / n
    table["kappa"] = np.where(
        n >= min_shared, _binary_kappa(both, model_only, physician_only, neither), np.nan
    )
    # Classes (met, not met): a model "met" against a physician "not met" is a false positive
    # for met and a false negative for not met, and the other way round.
    true_positive = np.stack([both, neither], axis=-1)
    false_positive = np.stack([model_only, physician_only], axis=-1)
    false_negative = np.stack([physician_only, model_only], axis=-1)
    macro, _, _ = macro_micro(true_positive, false_positive, false_negative)
    table["macro_f1"] = macro
    table["n"] = table["n"].astype(int)
    table = table.sort_values(["grader"], key=lambda c: c.astype(str), kind="stable")
    return table[columns].reset_index(drop=True)
