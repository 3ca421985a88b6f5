"""The vectorised code paths give exactly what the simple pandas/Python code they replaced gave."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from clinic_eval.statistics import (
    accuracy,
    agreement,
    bradley_terry,
    hallucination,
    paired,
    preference,
    report,
)
from clinic_eval.statistics.simulate import LAYERS, simulate_study

STRENGTHS = {"SFT": 0.4, "DPO": 0.1, "GRPO": -0.1, "Physician": -0.3}


def messy_ratings(seed: int = 0) -> pd.DataFrame:
    """Ratings with string ids that sort differently from numbers, gaps and missing scores."""
    rng = np.random.default_rng(seed)
    rows = [
        {"case_id": f"c{case}", "rater_id": rater, "arm": arm, "dimension": dim, "score": score}
        for case in (1, 2, 10, 11, 100)
        for rater in (3, 20, 100)
        for arm in ("SFT", "DPO", "GRPO")
        for dim in ("clarity", "feasibility")
        if rng.random() < 0.8
        for score in [float(rng.integers(1, 6)) if rng.random() < 0.9 else math.nan]
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def pivot_reference(ratings: pd.DataFrame, arms: list[str], dimension: str) -> pd.DataFrame:
    subset = ratings.loc[
        (ratings["dimension"] == dimension) & ratings["arm"].isin(arms),
        ["case_id", "rater_id", "arm", "score"],
    ].dropna(subset=["score"])
    wide = subset.pivot(index=["case_id", "rater_id"], columns="arm", values="score")
    return wide.reindex(columns=arms).astype(float).dropna(how="any")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_scores_equal_a_pandas_pivot(seed: int) -> None:
    ratings = messy_ratings(seed)
    for dimension in ("clarity", "feasibility"):
        for arms in (["SFT", "DPO"], ["DPO", "GRPO", "SFT"]):
            ours = paired.paired_scores(ratings, arms, dimension)
            reference = pivot_reference(ratings, arms, dimension)
            np.testing.assert_array_equal(ours.to_numpy(), reference.to_numpy())
            assert list(ours.index) == list(reference.index)


def test_likert_family_equals_the_separate_functions() -> None:
    ratings = messy_ratings(4)
    arms, dimensions = ["DPO", "GRPO", "SFT"], ["clarity", "feasibility"]
    tests, friedmans = paired.likert_family(ratings, arms, dimensions, n_boot=30, seed=2)
    pd.testing.assert_frame_equal(
        tests, paired.pairwise_likert_tests(ratings, arms, dimensions, n_boot=30, seed=2)
    )
    for dimension in dimensions:
        assert repr(friedmans[dimension]) == repr(paired.friedman(ratings, dimension, arms))


def test_flag_units_and_mcnemar_equal_groupby_and_pivot() -> None:
    tables = simulate_study(judgments=600, strengths=STRENGTHS, raters=6, seed=3)
    flags = tables.flags.copy()
    extra = flags.sample(80, random_state=1).assign(kind="factual")
    flags = pd.concat([flags, extra], ignore_index=True).sample(frac=1.0, random_state=2)
    marked = flags[["case_id", "rater_id", "arm"]].copy()
    for kind in ("factual", "reasoning"):
        marked[kind] = flags["kind"] == kind
    marked["any"] = flags["kind"] != "none"
    reference = marked.groupby(["case_id", "rater_id", "arm"], as_index=False)[
        ["any", "factual", "reasoning"]
    ].max()
    ours = hallucination.flag_units(flags)
    np.testing.assert_array_equal(ours.to_numpy(), reference.to_numpy())

    arms = sorted(flags["arm"].unique())
    rates, table = hallucination.hallucination_family(flags, arms)
    pd.testing.assert_frame_equal(rates, hallucination.hallucination_rates(flags))
    for row, (arm_a, arm_b) in zip(
        table.to_dict("records"), itertools.combinations(arms, 2), strict=True
    ):
        wide = (
            reference[reference["arm"].isin([arm_a, arm_b])]
            .pivot(index=["case_id", "rater_id"], columns="arm", values="any")
            .dropna(how="any")
            .astype(bool)
        )
        assert row["b"] == int((wide[arm_a] & ~wide[arm_b]).sum())
        assert row["c"] == int((~wide[arm_a] & wide[arm_b]).sum())
        assert row["n_pairs"] == len(wide)


def test_unit_codes_sort_and_compare_like_the_strings() -> None:
    cases = pd.Series([1, 10, 2, 100, 1, 10, 21, 2, 3, 1])
    arm_a = pd.Series(["b", "a", "a", "b", "b", "a b", "a", "a", "b", "a"])
    arm_b = pd.Series(["a", "b", "b", "a", "a", "c", "b", "b", "a", "b"])
    strings = cases.astype(str) + "|" + arm_a + "|" + arm_b
    expected = pd.factorize(strings, sort=True)[0]
    ours = report.unit_codes(cases, arm_a, arm_b)
    # Same partition and the same order: ranks of the codes equal the string codes.
    np.testing.assert_array_equal(pd.factorize(ours, sort=True)[0], expected)
    # Ids with "|" take the string path and still agree.
    odd = pd.Series(["x|1", "x", "x|1", "y"])
    arm = pd.Series(["1|a", "1|a|a", "a", "b"])
    expected = pd.factorize(odd + "|" + arm, sort=True)[0]
    np.testing.assert_array_equal(pd.factorize(report.unit_codes(odd, arm), sort=True)[0], expected)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_from_codes_equals_the_matrix(level: str) -> None:
    rng = np.random.default_rng(5)
    long = pd.DataFrame(
        {
            "unit": rng.integers(0, 40, 300),
            "rater": rng.integers(0, 6, 300),
            "value": np.where(rng.random(300) < 0.1, np.nan, rng.integers(1, 5, 300)),
        }
    ).drop_duplicates(["unit", "rater"])
    matrix = agreement.reliability_matrix(long).to_numpy(dtype=float)
    assert agreement.krippendorff_alpha(long, level) == agreement.krippendorff_alpha(matrix, level)


def set_reference(truths: list, preds: list) -> accuracy.LayerScores:
    """score_layer for one-label layers the slow way: a set per case."""
    truth_sets = [accuracy.as_label_set(t, False) for t in truths]
    pred_sets = [accuracy.as_label_set(p, False) for p in preds]
    keep = [i for i, t in enumerate(truth_sets) if t is not None]
    t_sets = [truth_sets[i] for i in keep]
    p_sets = [pred_sets[i] for i in keep]
    n = len(t_sets)
    correct = sum(p is not None and p == t for t, p in zip(t_sets, p_sets, strict=True))
    jaccards = [
        0.0 if p is None else len(t & p) / len(t | p) for t, p in zip(t_sets, p_sets, strict=True)
    ]
    _, tp, fp, fn = accuracy.count_matrices(t_sets, p_sets)
    macro, micro, n_labels = accuracy.macro_micro(tp.sum(0), fp.sum(0), fn.sum(0))
    interval = accuracy.wilson_interval(correct, n) if n else accuracy.NAN_INTERVAL
    return accuracy.LayerScores(
        n=n,
        missing=sum(p is None for p in p_sets),
        correct=correct,
        accuracy=correct / n if n else math.nan,
        ci_low=interval.low,
        ci_high=interval.high,
        jaccard=float(np.mean(jaccards)) if n else math.nan,
        macro_f1=float(macro),
        micro_f1=float(micro),
        n_labels=int(n_labels),
    )


@pytest.mark.parametrize("seed", range(5))
def test_single_label_scores_equal_the_set_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["IVF", "ICSI", "IUI", "PGT-A", "", "  ", None, math.nan, 3, 3.0, True]
    truths = [labels[i] for i in rng.integers(0, len(labels), 200)]
    preds = [labels[i] for i in rng.integers(0, len(labels), 200)]
    assert repr(accuracy.score_layer(truths, preds)) == repr(set_reference(truths, preds))


def test_win_rates_equal_the_groupby_version() -> None:
    judgments = simulate_study(judgments=3_000, strengths=STRENGTHS, raters=5, seed=8).judgments
    outcome = judgments["outcome"].to_numpy()
    sides = []
    for arm, won, lost in (("arm_a", "a", "b"), ("arm_b", "b", "a")):
        sides.append(
            pd.DataFrame(
                {
                    "arm": judgments[arm].to_numpy(),
                    "wins": outcome == won,
                    "losses": outcome == lost,
                    "ties": outcome == "tie",
                    "both_bad": outcome == "both_bad",
                }
            )
        )
    counts = pd.concat(sides).groupby("arm").sum().astype(int).sort_index()
    ours = preference.win_rates(judgments)
    np.testing.assert_array_equal(
        ours[["wins", "losses", "ties", "both_bad"]].to_numpy(), counts.to_numpy()
    )
    assert list(ours.index) == list(counts.index)

    pairwise = preference.pairwise_win_rates(judgments)
    for row in pairwise.to_dict("records"):
        one = judgments[(judgments["arm_a"] == row["arm_1"]) & (judgments["arm_b"] == row["arm_2"])]
        two = judgments[(judgments["arm_a"] == row["arm_2"]) & (judgments["arm_b"] == row["arm_1"])]
        assert row["wins_1"] == (one["outcome"] == "a").sum() + (two["outcome"] == "b").sum()
        assert row["wins_2"] == (one["outcome"] == "b").sum() + (two["outcome"] == "a").sum()
        assert row["comparisons"] == len(one) + len(two)
    assert list(zip(pairwise["arm_1"], pairwise["arm_2"], strict=True)) == sorted(
        zip(pairwise["arm_1"], pairwise["arm_2"], strict=True)
    )


def test_bootstrap_pattern_sums_equal_per_unit_weighting() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 3, (500, 12)).astype(float)
    distinct, which = bradley_terry.distinct_rows(counts)
    np.testing.assert_array_equal(distinct[which], counts)
    draws = rng.integers(0, 500, 500)
    per_unit = np.bincount(draws, minlength=500).astype(float) @ counts
    by_pattern = np.bincount(which[draws], minlength=len(distinct)).astype(float) @ distinct
    np.testing.assert_array_equal(per_unit, by_pattern)


def test_the_report_is_the_same_with_and_without_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = simulate_study(judgments=2_000, strengths=STRENGTHS, raters=6, seed=2)
    options = report.ReportOptions(layers=LAYERS, n_boot=50, seed=1)
    monkeypatch.setattr(report, "PARALLEL_FROM", 10**12)
    alone = report.report_json(report.build_report(tables, options))
    monkeypatch.setattr(report, "PARALLEL_FROM", 0)
    assert report.report_json(report.build_report(tables, options)) == alone
