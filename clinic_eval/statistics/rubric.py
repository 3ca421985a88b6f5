"""Rubric grading scores and grader agreement (HealthBench / ClinAlign style), no ORM.

Input (long DataFrames)
-----------------------
``criteria``: one row per criterion: ``criterion_id`` (unique), ``case_id``, ``points`` (int;
negative points describe an undesirable behaviour), ``axis`` (str), ``level`` ("example" for
criteria written for one case, "cluster" for shared consensus criteria).

``grades``: one row per verdict of one grader on one criterion of one response: ``response_id``,
``case_id``, ``arm``, ``criterion_id``, ``grader``, ``met`` (bool). Optional columns:
``grader_kind`` ("physician" | "model"; without it, a grader whose name starts with
``model_prefix``, "model:" by default, is a model grader and every other grader a physician) and
``stratum`` (constant per response). A (response, criterion, grader) may appear once only.

Rules
-----
* Response score (HealthBench, Arora et al. 2025; simple-evals ``calculate_score``): the points of
  the criteria marked met, summed, over the sum of the *positive* points of the case's criteria.
  A met negative criterion means the undesirable behaviour occurred, so its points subtract; an
  unmet one changes nothing. The score is not clipped: it runs from -(negative points / positive
  points) to 1. It is NaN, with ``reason`` saying why, when the case has no positive points
  (nothing to earn) or when the grader left some of the case's criteria ungraded (the missing
  verdict could move the score either way, so no partial score is guessed).
* Physician consensus per (response, criterion): the majority verdict of the physicians who graded
  it. A tie counts as half met with ``tie="half"`` (the default: half the points, the expected
  value of a coin toss, symmetric for positive and negative criteria, whereas "not met" would
  quietly forgive a disputed harm) or as not met with ``tie="not_met"``. A consensus score is
  complete when every criterion of the case has at least one physician verdict.
* Arm score: the mean of the unclipped per-response scores, then clipped to [0, 1] (simple-evals
  ``_compute_clipped_stats``). Clipping the mean rather than each response keeps a harmful
  response's penalty from vanishing at the floor. NaN responses are left out and counted in
  ``n_undefined``. Interval: percentile bootstrap over cases (all responses of a drawn case come
  along), each replicate's mean clipped the same way, seeded.
* Axis score: the same with criteria restricted to one axis, in numerator and denominator. A case
  with no criterion on an axis does not enter that axis; one with only negative criteria on it is
  NaN there and left out of the mean (simple-evals drops such tags too).
* Agreement on met / not met: Cohen's kappa is NaN when chance agreement is perfect (both sides
  gave one verdict throughout, as ``agreement.cohen_kappa``) or when fewer than ``min_shared``
  units are shared: "not measurable", never "perfect". Physician agreement averages the kappas of
  the physician pairs; the model grader is compared with the physician majority, ties left out.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from clinic_eval.statistics.intervals import NAN_INTERVAL, Interval
from clinic_eval.statistics.paired import (
    Correction,
    adjust_p_values,
    percentile_interval,
    signed_rank_test,
)

__all__ = [
    "CONSENSUS",
    "arm_scores",
    "axis_scores",
    "clipped_mean_interval",
    "paired_arm_comparisons",
    "response_axis_scores",
    "response_scores",
]


TieRule = Literal["half", "not_met"]


PHYSICIAN = "physician"


MODEL = "model"


CONSENSUS = "consensus"  # grader and grader_kind of the physician-majority rows


ALL = "all"


NO_POSITIVE_POINTS = "no positive points"


INCOMPLETE = "not every criterion graded"


CRITERIA_COLUMNS = ("criterion_id", "case_id", "points", "axis", "level")


GRADE_COLUMNS = ("response_id", "case_id", "arm", "criterion_id", "grader", "met")


RATER_KEYS = ["response_id", "grader", "grader_kind"]


SCORE_COLUMNS = [
    "score",
    "achieved_points",
    "positive_points",
    "n_graded",
    "n_criteria",
    "reason",
]


AGGREGATE_COLUMNS = [
    "n_responses",
    "n_cases",
    "n_undefined",
    "mean_unclipped",
    "score",
    "ci_low",
    "ci_high",
]


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"{name} lacks columns {sorted(missing)}")


def _meta_columns(frame: pd.DataFrame) -> list[str]:
    return ["case_id", "arm"] + (["stratum"] if "stratum" in frame.columns else [])


def _grader_kinds(grades: pd.DataFrame, model_prefix: str) -> pd.Series:
    if "grader_kind" in grades.columns:
        kinds = grades["grader_kind"]
        unknown = set(kinds) - {PHYSICIAN, MODEL}
        if unknown:
            raise ValueError(f"grader_kind must be 'physician' or 'model', got {sorted(unknown)}")
        return kinds
    is_model = grades["grader"].astype(str).str.startswith(model_prefix)
    return pd.Series(np.where(is_model, MODEL, PHYSICIAN), index=grades.index)


def prepare(
    criteria: pd.DataFrame, grades: pd.DataFrame, level: str | None, model_prefix: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validated criteria (of ``level``) and verdicts joined with their criterion's points/axis."""
    _require(criteria, CRITERIA_COLUMNS, "criteria")
    _require(grades, GRADE_COLUMNS, "grades")
    if criteria["criterion_id"].duplicated().any():
        raise ValueError("criteria has duplicate criterion_id rows")
    unknown = set(grades["criterion_id"]) - set(criteria["criterion_id"])
    if unknown:
        raise ValueError(f"grades refer to unknown criteria, e.g. {sorted(map(str, unknown))[:5]}")
    # isin([True, False]) also accepts 1/0 but not "False", which astype(bool) would make True.
    if not grades["met"].isin([True, False]).all():
        raise ValueError("met must be True or False on every row; drop ungraded rows first")
    duplicated = grades.duplicated(["response_id", "criterion_id", "grader"], keep=False)
    if duplicated.any():
        example = grades.loc[duplicated, ["response_id", "criterion_id", "grader"]].iloc[0]
        raise ValueError(f"duplicate verdicts for {example.to_dict()}")
    meta = _meta_columns(grades)
    inconsistent = grades.groupby("response_id")[meta].nunique(dropna=False).gt(1).any(axis=1)
    if inconsistent.any():
        examples = list(inconsistent[inconsistent].index[:5])
        raise ValueError(f"responses with several {'/'.join(meta)} values: {examples}")
    if level is not None:
        criteria = criteria[criteria["level"] == level]
    verdicts = grades.assign(
        grader_kind=_grader_kinds(grades, model_prefix), met=grades["met"].astype(bool)
    ).merge(
        criteria[["criterion_id", "case_id", "points", "axis"]],
        on="criterion_id",
        suffixes=("", "_of_criterion"),
    )
    mismatch = verdicts["case_id"] != verdicts["case_id_of_criterion"]
    if mismatch.any():
        row = verdicts.loc[mismatch].iloc[0]
        raise ValueError(
            f"response {row['response_id']!r} (case {row['case_id']!r}) was graded on criterion "
            f"{row['criterion_id']!r} of case {row['case_id_of_criterion']!r}"
        )
    return criteria, verdicts.drop(columns="case_id_of_criterion")


def majority_verdicts(physicians: pd.DataFrame) -> pd.DataFrame:
    """Per (response, criterion): n_physicians, n_met and the criterion's context columns."""
    keys = ["response_id", "criterion_id"]
    # Named aggregations give a DataFrame; pandas-stubs types SeriesGroupBy.agg as a Series.
    counts: pd.DataFrame = physicians.groupby(keys, sort=True)["met"].agg(  # type: ignore[assignment]
        n_physicians="size", n_met="sum"
    )
    context = physicians.drop_duplicates(keys).set_index(keys)
    context = context[[*_meta_columns(physicians), "points", "axis"]]
    return counts.join(context).reset_index()


def _consensus_verdicts(verdicts: pd.DataFrame, tie: TieRule) -> pd.DataFrame:
    """Verdict rows of a pseudo-grader "consensus" whose ``value`` is 1, 0 or the tie value."""
    if tie not in ("half", "not_met"):
        raise ValueError(f"unknown tie rule {tie!r}; use 'half' or 'not_met'")
    majority = majority_verdicts(verdicts[verdicts["grader_kind"] == PHYSICIAN])
    twice_met = 2 * majority["n_met"]
    tie_value = 0.5 if tie == "half" else 0.0
    value = np.where(
        twice_met > majority["n_physicians"],
        1.0,
        np.where(twice_met < majority["n_physicians"], 0.0, tie_value),
    )
    return majority.assign(grader=CONSENSUS, grader_kind=CONSENSUS, value=value)


def _score_rows(values: pd.DataFrame, criteria: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One score row per (response, grader) and ``by`` group present in the response's case.

    ``values`` holds one row per (response, grader, criterion) with the verdict as a number in
    [0, 1] (``value``); the denominator and the criteria count come from ``criteria``, so a
    criterion the grader skipped is noticed rather than silently scored as not met.
    """
    meta = _meta_columns(values)
    earned = values.assign(earned=values["points"] * values["value"])
    achieved = (
        earned.groupby(RATER_KEYS + by, sort=False)["earned"]
        .agg(achieved_points="sum", n_graded="size")
        .reset_index()
    )
    totals = (
        criteria.assign(positive=criteria["points"].clip(lower=0))
        .groupby(["case_id", *by], sort=False)
        .agg(positive_points=("positive", "sum"), n_criteria=("points", "size"))
        .reset_index()
    )
    raters = values.drop_duplicates(RATER_KEYS)[RATER_KEYS + meta]
    table = raters.merge(totals, on="case_id").merge(achieved, on=RATER_KEYS + by, how="left")
    table["n_graded"] = table["n_graded"].fillna(0).astype(int)
    table["achieved_points"] = table["achieved_points"].fillna(0.0).astype(float)
    table["positive_points"] = table["positive_points"].astype(float)
    complete = table["n_graded"] == table["n_criteria"]
    positive = table["positive_points"] > 0
    table["score"] = np.where(
        complete & positive,
        table["achieved_points"] / table["positive_points"].where(positive, 1.0),
        np.nan,
    )
    reason = pd.Series([None] * len(table), index=table.index, dtype=object)
    reason[~complete] = INCOMPLETE
    reason[~positive] = NO_POSITIVE_POINTS  # the more basic reason wins when both hold
    table["reason"] = reason
    order = ["response_id", *by, "grader_kind", "grader"]
    table = table.sort_values(order, key=lambda column: column.astype(str), kind="stable")
    return table[["response_id", *meta, "grader", "grader_kind", *by, *SCORE_COLUMNS]].reset_index(
        drop=True
    )


def _all_scores(
    criteria: pd.DataFrame,
    grades: pd.DataFrame,
    by: list[str],
    tie: TieRule,
    level: str | None,
    model_prefix: str,
) -> pd.DataFrame:
    criteria, verdicts = prepare(criteria, grades, level, model_prefix)
    individual = verdicts.assign(value=verdicts["met"].astype(float))
    consensus = _consensus_verdicts(verdicts, tie)
    columns = [*RATER_KEYS, *_meta_columns(verdicts), "criterion_id", "points", "axis", "value"]
    values = pd.concat([individual[columns], consensus[columns]], ignore_index=True)
    return _score_rows(values, criteria, by)


def response_scores(
    criteria: pd.DataFrame,
    grades: pd.DataFrame,
    *,
    tie: TieRule = "half",
    level: str | None = None,
    model_prefix: str = "model:",
) -> pd.DataFrame:
    """HealthBench score of every response, per grader and for the physician consensus.

    One row per (response, grader) that graded it, plus one ``grader == grader_kind ==
    "consensus"`` row per response with a physician verdict. Columns: response_id, case_id, arm,
    [stratum], grader, grader_kind, score (unclipped), achieved_points, positive_points,
    n_graded, n_criteria, reason (None when the score is defined). ``level`` restricts the
    criteria (e.g. "example" for the HealthBench main score); see the module docstring.
    """
    return _all_scores(criteria, grades, [], tie, level, model_prefix)


def response_axis_scores(
    criteria: pd.DataFrame,
    grades: pd.DataFrame,
    *,
    tie: TieRule = "half",
    level: str | None = None,
    model_prefix: str = "model:",
) -> pd.DataFrame:
    """response_scores per axis: criteria restricted to the axis in numerator and denominator.

    Same columns plus ``axis``; only axes that the response's case has criteria on appear.
    """
    return _all_scores(criteria, grades, ["axis"], tie, level, model_prefix)


def _select(scores: pd.DataFrame, kind: str, grader: str | None) -> pd.DataFrame:
    """The score rows of one grader per response (the consensus by default)."""
    _require(scores, ["response_id", "case_id", "arm", "grader", "grader_kind", "score"], "scores")
    rows = scores[scores["grader_kind"] == kind]
    if grader is not None:
        rows = rows[rows["grader"] == grader]
    keys = ["response_id"] + (["axis"] if "axis" in scores.columns else [])
    if rows.duplicated(keys).any():
        raise ValueError(f"several {kind} graders scored one response; pass grader= to pick one")
    return rows


def _case_weights(rng: np.random.Generator, n_cases: int, n_boot: int) -> np.ndarray:
    """How often each case is drawn in each of ``n_boot`` resamples of ``n_cases`` cases."""
    return rng.multinomial(n_cases, np.full(n_cases, 1 / n_cases), size=n_boot).astype(float)


def clipped_mean_interval(
    case_ids: ArrayLike,
    scores: ArrayLike,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, Interval]:
    """Unclipped mean of the defined scores, and its [0, 1]-clipped value with a case bootstrap.

    Replicate b weights case j by ``rng.multinomial(n, [1/n] * n, size=n_boot)[b, j]`` with
    ``rng = np.random.default_rng(seed)`` and n the number of cases with a defined score; its
    mean is sum(weight x score) / sum(weight x responses), clipped to [0, 1].
    """
    values = np.asarray(scores, dtype=float)
    defined = ~np.isnan(values)
    codes, _ = pd.factorize(np.asarray(case_ids)[defined])
    n_cases = int(codes.max()) + 1 if codes.size else 0
    if n_cases == 0:
        return float("nan"), NAN_INTERVAL
    sums = np.bincount(codes, weights=values[defined], minlength=n_cases)
    counts = np.bincount(codes, minlength=n_cases).astype(float)
    mean = float(sums.sum() / counts.sum())
    estimate = float(np.clip(mean, 0.0, 1.0))
    if n_boot <= 0:
        return mean, Interval(estimate, float("nan"), float("nan"))
    weights = _case_weights(np.random.default_rng(seed), n_cases, n_boot)
    # Every replicate draws n_cases >= 1 cases, each with >= 1 response: no zero division.
    replicates = np.clip((weights @ sums) / (weights @ counts), 0.0, 1.0)
    return mean, percentile_interval(estimate, replicates, confidence)


def _aggregate(
    rows: pd.DataFrame, group_columns: list[str], confidence: float, n_boot: int, seed: int
) -> pd.DataFrame:
    """Clipped mean with interval per group, per stratum (if any) and over all strata."""
    records = []
    for key, group in rows.groupby(group_columns, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        parts: list[tuple[object, pd.DataFrame]] = []
        if "stratum" in rows.columns:
            parts += list(group.groupby("stratum", sort=True))
        parts.append((ALL, group))
        for stratum, part in parts:
            mean, interval = clipped_mean_interval(
                part["case_id"], part["score"], confidence=confidence, n_boot=n_boot, seed=seed
            )
            defined = part["score"].notna()
            records.append(
                {
                    **dict(zip(group_columns, key, strict=True)),
                    "stratum": stratum,
                    "n_responses": int(defined.sum()),
                    "n_cases": int(part.loc[defined, "case_id"].nunique()),
                    "n_undefined": int((~defined).sum()),
                    "mean_unclipped": mean,
                    "score": interval.estimate,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                }
            )
    return pd.DataFrame(records, columns=[*group_columns, "stratum", *AGGREGATE_COLUMNS])


def arm_scores(
    scores: pd.DataFrame,
    *,
    kind: str = CONSENSUS,
    grader: str | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Arm score (clipped mean of per-response scores) with a case-bootstrap interval.

    ``scores`` is response_scores' table; ``kind`` ("consensus", "physician" or "model") and
    optionally ``grader`` pick one score per response. One row per arm and stratum plus a
    stratum "all" row per arm; columns arm, stratum, n_responses (defined scores), n_cases,
    n_undefined, mean_unclipped, score (clipped), ci_low, ci_high.
    """
    return _aggregate(_select(scores, kind, grader), ["arm"], confidence, n_boot, seed)


def axis_scores(
    axis_table: pd.DataFrame,
    *,
    kind: str = CONSENSUS,
    grader: str | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """arm_scores per arm and axis, from response_axis_scores' table (columns arm, axis, ...)."""
    _require(axis_table, ["axis"], "axis_table")
    return _aggregate(_select(axis_table, kind, grader), ["arm", "axis"], confidence, n_boot, seed)


def _mean_difference_interval(
    differences: np.ndarray, confidence: float, n_boot: int, seed: int
) -> Interval:
    n = differences.size
    if n == 0:
        return NAN_INTERVAL
    mean = float(differences.mean())
    if n_boot <= 0:
        return Interval(mean, float("nan"), float("nan"))
    weights = _case_weights(np.random.default_rng(seed), n, n_boot)
    return percentile_interval(mean, weights @ differences / n, confidence)


def paired_arm_comparisons(
    scores: pd.DataFrame,
    arms: Sequence[str] | None = None,
    correction: Correction = "holm",
    *,
    kind: str = CONSENSUS,
    grader: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Every arm pair compared on per-case scores, Wilcoxon signed-rank, one corrected family.

    A case's score for an arm is the mean of its defined, unclipped response scores (several
    samples per case average out); cases lacking either arm are left out. Differences are
    arm_a - arm_b. The test, its rank-biserial r and median-difference interval are
    ``paired.signed_rank_test``'s; ``mean_difference`` gets a percentile bootstrap over cases.
    With an ``axis`` column (response_axis_scores' table) every axis is compared and all pairs x
    axes form the family. ``p_adjusted`` is Holm or Benjamini-Hochberg (``adjust_p_values``).
    """
    rows = _select(scores, kind, grader)
    rows = rows[rows["score"].notna()]
    arms = sorted(rows["arm"].unique(), key=str) if arms is None else list(arms)
    by_axis = "axis" in rows.columns
    groups = list(rows.groupby("axis", sort=True)) if by_axis else [(ALL, rows)]
    records = []
    for axis, group in groups:
        per_case = group.groupby(["case_id", "arm"])["score"].mean().unstack("arm")
        per_case = per_case.reindex(columns=arms)
        for arm_a, arm_b in itertools.combinations(arms, 2):
            both = per_case[[arm_a, arm_b]].dropna()
            differences = (both[arm_a] - both[arm_b]).to_numpy()
            test = signed_rank_test(differences, n_boot=n_boot, seed=seed, confidence=confidence)
            mean_ci = _mean_difference_interval(differences, confidence, n_boot, seed)
            records.append(
                {
                    **({"axis": axis} if by_axis else {}),
                    "arm_a": arm_a,
                    "arm_b": arm_b,
                    "n_cases": len(both),
                    "mean_a": float(both[arm_a].mean()) if len(both) else float("nan"),
                    "mean_b": float(both[arm_b].mean()) if len(both) else float("nan"),
                    "mean_difference": mean_ci.estimate,
                    "mean_difference_ci_low": mean_ci.low,
                    "mean_difference_ci_high": mean_ci.high,
                    "median_difference": test.median_difference,
                    "statistic": test.statistic,
                    "p_value": test.p_value,
                    "method": test.method,
                    "rank_biserial": test.rank_biserial,
                }
            )
    table = pd.DataFrame(records)
    if table.empty:
        return table
    table["p_adjusted"] = adjust_p_values(table["p_value"].to_numpy(), correction)
    return table
