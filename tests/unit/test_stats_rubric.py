"""Rubric scores and grader agreement against hand-computed values (arithmetic in comments).

The reference rubric is the issue's example: criteria worth +5, +3, -4 and +2 points, so the
positive total (the denominator) is 5 + 3 + 2 = 10. Cross-checks use scipy.stats.wilcoxon,
statsmodels' Holm correction and the package's own cohen_kappa / pairwise_cohen_kappa.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from clinic_eval.statistics.agreement import cohen_kappa, pairwise_cohen_kappa
from clinic_eval.statistics.rubric import (
    CONSENSUS,
    INCOMPLETE,
    NO_POSITIVE_POINTS,
    arm_scores,
    axis_scores,
    clipped_mean_interval,
    paired_arm_comparisons,
    response_axis_scores,
    response_scores,
)
from clinic_eval.statistics.rubric_agreement import (
    grader_agreement,
    physician_agreement,
    physician_pair_kappas,
)

EXAMPLE_POINTS = [5, 3, -4, 2]
EXAMPLE_AXES = ["accuracy", "completeness", "accuracy", "completeness"]


def rubric(
    case_id: str,
    points: Sequence[int] = EXAMPLE_POINTS,
    axes: Sequence[str] = EXAMPLE_AXES,
    level: str = "example",
) -> list[dict[str, object]]:
    """Criteria ``<case>-k1`` ... worth ``points``, on ``axes``."""
    return [
        {
            "criterion_id": f"{case_id}-k{i + 1}",
            "case_id": case_id,
            "points": p,
            "axis": axis,
            "level": level,
        }
        for i, (p, axis) in enumerate(zip(points, axes, strict=True))
    ]


def verdicts(
    response_id: str, case_id: str, arm: str, grader: str, met: Sequence[bool], **extra: object
) -> list[dict[str, object]]:
    """One grader's verdicts on criteria k1, k2, ... of the response's case, in order."""
    return [
        {
            "response_id": response_id,
            "case_id": case_id,
            "arm": arm,
            "criterion_id": f"{case_id}-k{i + 1}",
            "grader": grader,
            "met": value,
            **extra,
        }
        for i, value in enumerate(met)
    ]


def score_of(table: pd.DataFrame, response_id: str, grader: str = CONSENSUS) -> float:
    row = table[(table["response_id"] == response_id) & (table["grader"] == grader)]
    assert len(row) == 1
    return float(row["score"].iloc[0])


T, F = True, False


# --------------------------------------------------------------------------- response scores


def test_example_scores_with_negative_criterion() -> None:
    criteria = pd.DataFrame(rubric("c1") + rubric("c2"))
    grades = pd.DataFrame(
        # met {+5, -4}: (5 - 4) / 10 = 0.1
        verdicts("r1", "c1", "A", "ana", [T, F, T, F])
        # met {-4} only: -4 / 10 = -0.4, not clipped per response
        + verdicts("r2", "c2", "A", "ana", [F, F, T, F])
    )
    scores = response_scores(criteria, grades)
    assert score_of(scores, "r1", "ana") == pytest.approx(0.1)
    assert score_of(scores, "r2", "ana") == pytest.approx(-0.4)
    # One physician: the consensus is that physician.
    assert score_of(scores, "r2") == pytest.approx(-0.4)
    row = scores[(scores["response_id"] == "r2") & (scores["grader"] == "ana")].iloc[0]
    assert row["achieved_points"] == -4 and row["positive_points"] == 10
    assert row["n_graded"] == row["n_criteria"] == 4 and row["reason"] is None
    assert row["grader_kind"] == "physician" and row["arm"] == "A"

    # Arm: mean(0.1, -0.4) = -0.15 unclipped, clipped to 0.0.
    arm = arm_scores(scores, n_boot=200).iloc[0]
    assert (arm["arm"], arm["stratum"]) == ("A", "all")
    assert arm["mean_unclipped"] == pytest.approx(-0.15)
    assert arm["score"] == 0.0
    assert (arm["n_responses"], arm["n_cases"], arm["n_undefined"]) == (2, 2, 0)
    # Every replicate mean is one of -0.4, -0.15, 0.1 before clipping: 0, 0 or 0.1 after.
    assert 0.0 <= arm["ci_low"] <= arm["ci_high"] <= 0.1


def test_all_met_is_one_and_unmet_negative_has_no_effect() -> None:
    criteria = pd.DataFrame(rubric("c1") + rubric("c2", [5, 3, 2], ["a", "b", "c"]))
    grades = pd.DataFrame(
        # every positive criterion met, -4 not met: (5 + 3 + 2) / 10 = 1.0
        verdicts("r1", "c1", "A", "ana", [T, T, F, T])
        # no negatives at all, all met: 10 / 10 = 1.0
        + verdicts("r2", "c2", "A", "ana", [T, T, T])
        # all positives met and the harm too: (10 - 4) / 10 = 0.6
        + verdicts("r3", "c1", "B", "ana", [T, T, T, T])
        + verdicts("r4", "c2", "B", "ana", [T, T, T])
    )
    scores = response_scores(criteria, grades)
    assert score_of(scores, "r1") == 1.0
    assert score_of(scores, "r2") == 1.0
    assert score_of(scores, "r3") == pytest.approx(0.6)
    arms = arm_scores(scores, n_boot=0).set_index("arm")
    assert arms.loc["A", "score"] == 1.0
    # B: mean(0.6, 1.0) = 0.8, inside [0, 1], so clipping changes nothing.
    assert arms.loc["B", "score"] == pytest.approx(0.8)
    assert arms.loc["B", "mean_unclipped"] == pytest.approx(0.8)
    assert math.isnan(arms.loc["B", "ci_low"])  # n_boot=0: no interval


def test_majority_of_three_physicians() -> None:
    criteria = pd.DataFrame(rubric("c1"))
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", [T, F, T, T])
        + verdicts("r1", "c1", "A", "ben", [T, T, F, T])
        + verdicts("r1", "c1", "A", "cy", [F, F, T, T])
    )
    scores = response_scores(criteria, grades)
    # Majority: k1 2/3 met, k2 1/3 (not met), k3 2/3 met, k4 3/3 met
    # -> (5 - 4 + 2) / 10 = 0.3.
    assert score_of(scores, "r1") == pytest.approx(0.3)
    # Individually: ana (5 - 4 + 2) / 10 = 0.3, ben (5 + 3 + 2) / 10 = 1.0, cy (-4 + 2) / 10.
    assert score_of(scores, "r1", "ana") == pytest.approx(0.3)
    assert score_of(scores, "r1", "ben") == pytest.approx(1.0)
    assert score_of(scores, "r1", "cy") == pytest.approx(-0.2)
    assert sorted(scores["grader_kind"]) == [CONSENSUS, "physician", "physician", "physician"]


def test_tie_rule_half_or_not_met() -> None:
    criteria = pd.DataFrame(rubric("c1"))
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", [T, T, T, F])
        + verdicts("r1", "c1", "A", "ben", [F, T, F, F])
    )
    # k1 and k3 tie 1-1, k2 met by both, k4 by neither.
    # half:    (0.5 * 5 + 3 + 0.5 * (-4)) / 10 = 3.5 / 10 = 0.35
    # not_met: 3 / 10 = 0.3
    assert score_of(response_scores(criteria, grades), "r1") == pytest.approx(0.35)
    assert score_of(response_scores(criteria, grades, tie="not_met"), "r1") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="tie"):
        response_scores(criteria, grades, tie="met")  # type: ignore[arg-type]


def test_undefined_scores_have_reasons_and_are_left_out() -> None:
    criteria = pd.DataFrame(rubric("c1") + rubric("c3", [-3, -1], ["safety", "safety"]))
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", [T, T, F, T])  # 1.0
        + verdicts("r2", "c1", "A", "ana", [T, T, F])  # k4 never graded
        + verdicts("r3", "c3", "A", "ana", [T, F])  # nothing to earn in c3
    )
    scores = response_scores(criteria, grades)
    r2 = scores[(scores["response_id"] == "r2") & (scores["grader"] == "ana")].iloc[0]
    assert math.isnan(r2["score"]) and r2["reason"] == INCOMPLETE
    assert (r2["n_graded"], r2["n_criteria"]) == (3, 4)
    r3 = scores[(scores["response_id"] == "r3") & (scores["grader"] == CONSENSUS)].iloc[0]
    assert math.isnan(r3["score"]) and r3["reason"] == NO_POSITIVE_POINTS
    arm = arm_scores(scores, n_boot=50).iloc[0]
    assert (arm["n_responses"], arm["n_undefined"]) == (1, 2)
    assert arm["score"] == 1.0


def test_model_grader_by_prefix_or_kind_column_and_level_filter() -> None:
    criteria = pd.DataFrame(rubric("c1") + rubric("c1x", [10], ["accuracy"], level="cluster"))
    criteria.loc[criteria["case_id"] == "c1x", "case_id"] = "c1"
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", [T, F, F, F])
        + verdicts("r1", "c1", "A", "model:judge", [T, T, F, F])
        + [
            {"response_id": "r1", "case_id": "c1", "arm": "A", "criterion_id": "c1x-k1",
             "grader": g, "met": True}
            for g in ("ana", "model:judge")
        ]
    )  # fmt: skip
    # All levels: positive total 10 + 10 = 20; ana (5 + 10) / 20, the model (5 + 3 + 10) / 20.
    scores = response_scores(criteria, grades)
    assert score_of(scores, "r1", "ana") == pytest.approx(0.75)
    assert score_of(scores, "r1", "model:judge") == pytest.approx(0.9)
    kinds = dict(zip(scores["grader"], scores["grader_kind"], strict=True))
    assert kinds == {"ana": "physician", "model:judge": "model", CONSENSUS: CONSENSUS}
    # The example-level score (HealthBench main): ana 5 / 10, the model 8 / 10.
    example = response_scores(criteria, grades, level="example")
    assert score_of(example, "r1", "ana") == pytest.approx(0.5)
    assert score_of(example, "r1", "model:judge") == pytest.approx(0.8)
    model_arm = arm_scores(example, kind="model", n_boot=0).iloc[0]
    assert model_arm["score"] == pytest.approx(0.8)
    # An explicit grader_kind column wins over the name.
    renamed = grades.assign(
        grader=grades["grader"].replace({"model:judge": "judge"}),
        grader_kind=np.where(grades["grader"] == "ana", "physician", "model"),
    )
    explicit = response_scores(criteria, renamed, level="example")
    assert score_of(explicit, "r1", "judge") == pytest.approx(0.8)
    assert set(explicit["grader_kind"]) == {"physician", "model", CONSENSUS}


def test_input_errors() -> None:
    criteria = pd.DataFrame(rubric("c1") + rubric("c2"))
    good = verdicts("r1", "c1", "A", "ana", [T, F, T, F])
    with pytest.raises(ValueError, match="duplicate verdicts"):
        response_scores(criteria, pd.DataFrame(good + good[:1]))
    with pytest.raises(ValueError, match="unknown criteria"):
        response_scores(criteria, pd.DataFrame([{**good[0], "criterion_id": "zz"}]))
    with pytest.raises(ValueError, match="criterion 'c2-k1' of case 'c2'"):
        response_scores(criteria, pd.DataFrame([{**good[0], "criterion_id": "c2-k1"}]))
    with pytest.raises(ValueError, match="True or False"):
        response_scores(criteria, pd.DataFrame([{**good[0], "met": "False"}]))
    with pytest.raises(ValueError, match="several"):
        response_scores(criteria, pd.DataFrame(good[:1] + [{**good[1], "arm": "B"}]))
    with pytest.raises(ValueError, match="lacks columns"):
        response_scores(criteria.drop(columns="axis"), pd.DataFrame(good))
    two_models = pd.DataFrame(
        good
        + verdicts("r1", "c1", "A", "model:x", [T, T, T, T])
        + verdicts("r1", "c1", "A", "model:y", [T, T, T, T])
    )
    with pytest.raises(ValueError, match="grader="):
        arm_scores(response_scores(criteria, two_models), kind="model")
    picked = arm_scores(response_scores(criteria, two_models), kind="model", grader="model:x")
    assert picked.iloc[0]["score"] == pytest.approx(0.6)  # (10 - 4) / 10


# --------------------------------------------------------------------------- axes and strata


def test_axis_restriction_and_strata() -> None:
    criteria = pd.DataFrame(
        rubric("c1")
        + rubric("c2", [4, -3], ["accuracy", "safety"])  # safety has no positive points here
    )
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", [T, F, T, F], stratum="adult")
        + verdicts("r2", "c2", "A", "ana", [T, T], stratum="child")
    )
    table = response_axis_scores(criteria, grades)
    consensus = table[table["grader"] == CONSENSUS].set_index(["response_id", "axis"])
    # r1, accuracy: criteria +5 (met) and -4 (met) -> (5 - 4) / 5 = 0.2
    assert consensus.loc[("r1", "accuracy"), "score"] == pytest.approx(0.2)
    # r1, completeness: +3 and +2, neither met -> 0 / 5 = 0.0
    assert consensus.loc[("r1", "completeness"), "score"] == 0.0
    # r2, accuracy: 4 / 4 = 1.0; safety: only -3, met -> no positive points, NaN
    assert consensus.loc[("r2", "accuracy"), "score"] == 1.0
    assert math.isnan(consensus.loc[("r2", "safety"), "score"])
    assert consensus.loc[("r2", "safety"), "reason"] == NO_POSITIVE_POINTS
    assert ("r2", "completeness") not in consensus.index  # c2 has no completeness criteria

    result = axis_scores(table, n_boot=100).set_index(["axis", "stratum"])
    # accuracy over both strata: mean(0.2, 1.0) = 0.6
    assert result.loc[("accuracy", "all"), "score"] == pytest.approx(0.6)
    assert result.loc[("accuracy", "adult"), "score"] == pytest.approx(0.2)
    assert result.loc[("accuracy", "child"), "score"] == 1.0
    assert result.loc[("completeness", "all"), "n_responses"] == 1
    safety = result.loc[("safety", "all")]
    assert safety["n_undefined"] == 1 and safety["n_responses"] == 0
    assert math.isnan(safety["score"])
    # Whole-rubric per stratum: adult 0.1, child (4 - 3) / 4 = 0.25; all: mean 0.175.
    arms = arm_scores(response_scores(criteria, grades), n_boot=0).set_index("stratum")
    assert list(arms.index) == ["adult", "child", "all"]
    assert arms.loc["adult", "score"] == pytest.approx(0.1)
    assert arms.loc["child", "score"] == pytest.approx(0.25)
    assert arms.loc["all", "score"] == pytest.approx(0.175)


# --------------------------------------------------------------------------- bootstrap


def test_case_bootstrap_is_seeded_reproducible_and_as_documented() -> None:
    case_ids = np.array(["a", "a", "b", "c", "d"])
    scores = np.array([0.2, 0.4, 0.5, 0.9, -0.1])
    mean, interval = clipped_mean_interval(case_ids, scores, n_boot=500, seed=3)
    # Unclipped mean over responses: (0.2 + 0.4 + 0.5 + 0.9 - 0.1) / 5 = 0.38.
    assert mean == pytest.approx(0.38)
    assert interval.estimate == pytest.approx(0.38)
    assert interval.contains(interval.estimate)
    again = clipped_mean_interval(case_ids, scores, n_boot=500, seed=3)
    assert again == (mean, interval)
    assert clipped_mean_interval(case_ids, scores, n_boot=500, seed=4)[1] != interval
    # The documented replicate: multinomial case weights, per-case sums and counts.
    weights = np.random.default_rng(3).multinomial(4, [0.25] * 4, size=500)
    sums, counts = np.array([0.6, 0.5, 0.9, -0.1]), np.array([2, 1, 1, 1])
    replicates = np.clip(weights @ sums / (weights @ counts), 0, 1)
    low, high = np.quantile(replicates, [0.025, 0.975])
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)
    # An all-NaN group has no estimate.
    empty_mean, empty = clipped_mean_interval(["a"], [np.nan])
    assert math.isnan(empty_mean) and math.isnan(empty.estimate)


# --------------------------------------------------------------------------- arm comparisons


def score_table(per_arm: dict[str, Sequence[float]]) -> pd.DataFrame:
    """Consensus scores; the i-th score of every arm belongs to case i."""
    return pd.DataFrame(
        [
            {"response_id": f"{arm}-{i}", "case_id": f"c{i}", "arm": arm, "grader": CONSENSUS,
             "grader_kind": CONSENSUS, "score": score}
            for arm, values in per_arm.items()
            for i, score in enumerate(values)
        ]
    )  # fmt: skip


def test_paired_comparison_matches_scipy_and_hand_values() -> None:
    a = [0.5, 0.8, 0.1, 0.9, 0.6, 0.7]
    b = [0.4, 0.5, 0.3, 0.5, 0.1, 0.1]
    # d = a - b = [0.1, 0.3, -0.2, 0.4, 0.5, 0.6]; ranks of |d| 1, 3, 2, 4, 5, 6:
    # T- = 2, T+ = 19. Exact null with n = 6: 64 sign patterns, T <= 2 for {}, {1}, {2}
    # -> p = 2 * 3 / 64 = 0.09375.
    scores = score_table({"A": a, "B": b})
    row = paired_arm_comparisons(scores, n_boot=300, seed=1).iloc[0]
    assert (row["arm_a"], row["arm_b"], row["n_cases"]) == ("A", "B", 6)
    assert row["statistic"] == 2 and row["method"] == "exact"
    assert row["p_value"] == pytest.approx(0.09375, abs=1e-12)
    d = np.subtract(a, b)
    assert row["p_value"] == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, abs=1e-12)
    assert row["mean_difference"] == pytest.approx(1.7 / 6)  # (0.1+0.3-0.2+0.4+0.5+0.6) / 6
    assert row["mean_a"] - row["mean_b"] == pytest.approx(1.7 / 6)
    assert row["mean_difference_ci_low"] <= row["mean_difference"]
    assert row["mean_difference"] <= row["mean_difference_ci_high"]
    assert row["rank_biserial"] == pytest.approx((19 - 2) / 21)
    again = paired_arm_comparisons(scores, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(again, paired_arm_comparisons(scores, n_boot=300, seed=1))

    # A second response of A to case c0 scoring 0.3: the case's A score becomes
    # mean(0.5, 0.3) = 0.4, equal to B's, so that zero difference drops out ("wilcox").
    extra = pd.DataFrame(
        [{"response_id": "A-0b", "case_id": "c0", "arm": "A", "grader": CONSENSUS,
          "grader_kind": CONSENSUS, "score": 0.3}]
    )  # fmt: skip
    averaged = paired_arm_comparisons(pd.concat([scores, extra]), n_boot=0).iloc[0]
    assert averaged["mean_a"] == pytest.approx((0.4 + 0.8 + 0.1 + 0.9 + 0.6 + 0.7) / 6)
    assert averaged["p_value"] == pytest.approx(
        stats.wilcoxon(d[1:], method="exact").pvalue, abs=1e-12
    )


def test_paired_comparisons_holm_family_over_arm_pairs() -> None:
    rng = np.random.default_rng(11)
    base = rng.uniform(0.2, 0.6, size=12)
    scores = score_table(
        {
            "A": base + rng.normal(0.0, 0.05, size=12),
            "B": base + 0.3 + rng.normal(0.0, 0.05, size=12),
            "C": base + 0.05 + rng.normal(0.0, 0.1, size=12),
        }
    )
    table = paired_arm_comparisons(scores, ["A", "B", "C"], "holm", n_boot=0)
    assert list(zip(table["arm_a"], table["arm_b"], strict=True)) == [
        ("A", "B"), ("A", "C"), ("B", "C")
    ]  # fmt: skip
    p = table["p_value"].to_numpy()
    # Holm by hand: sort ascending, multiply by 3, 2, 1, keep monotone, cap at 1.
    order = np.argsort(p)
    stepped = np.minimum(np.maximum.accumulate(p[order] * np.array([3, 2, 1])), 1)
    expected = np.empty(3)
    expected[order] = stepped
    np.testing.assert_allclose(table["p_adjusted"], expected, atol=1e-15)
    np.testing.assert_allclose(table["p_adjusted"], multipletests(p, method="holm")[1])
    bh = paired_arm_comparisons(scores, ["A", "B", "C"], "bh", n_boot=0)
    np.testing.assert_allclose(bh["p_adjusted"], multipletests(p, method="fdr_bh")[1])


def test_paired_comparisons_per_axis() -> None:
    criteria = pd.DataFrame(rubric("c1") + rubric("c2"))
    grades = pd.DataFrame(
        verdicts("a1", "c1", "A", "ana", [T, T, F, T])
        + verdicts("b1", "c1", "B", "ana", [T, F, T, F])
        + verdicts("a2", "c2", "A", "ana", [T, F, F, T])
        + verdicts("b2", "c2", "B", "ana", [F, F, F, F])
    )
    table = paired_arm_comparisons(response_axis_scores(criteria, grades), n_boot=0)
    by_axis = table.set_index("axis")
    # accuracy: A 5/5 in both cases; B (5 - 4)/5 = 0.2 and 0 -> differences 0.8 and 1.0
    assert by_axis.loc["accuracy", "mean_difference"] == pytest.approx(0.9)
    # completeness: A (3 + 2)/5 = 1 and 2/5; B 0 and 0 -> differences 1.0 and 0.4
    assert by_axis.loc["completeness", "mean_difference"] == pytest.approx(0.7)
    assert len(table) == 2 and table["p_adjusted"].notna().all()


# --------------------------------------------------------------------------- agreement


def test_physician_pair_kappas_by_hand() -> None:
    criteria = pd.DataFrame(rubric("c1", [1, 1, 1, 1, 1, 1], ["x", "x", "x", "y", "y", "y"]))
    ana, ben, cy = [T, T, T, F, F, F], [T, T, F, F, F, T], [T] * 6
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", ana)
        + verdicts("r1", "c1", "A", "ben", ben)
        + verdicts("r1", "c1", "A", "cy", cy)
        + verdicts("r1", "c1", "A", "model:judge", [F] * 6)  # not a physician: ignored
    )
    pairs = physician_pair_kappas(criteria, grades)
    overall = pairs[pairs["scope"] == "all"].set_index(["physician_a", "physician_b"])
    assert len(overall) == 3
    # ana-ben: both met 2, only ana 1, only ben 1, neither 2 (n = 6).
    # p_o = 4/6; p_e = (3/6)(3/6) + (3/6)(3/6) = 1/2; kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3
    assert overall.loc[("ana", "ben"), "kappa"] == pytest.approx(1 / 3)
    assert overall.loc[("ana", "ben"), "kappa"] == pytest.approx(cohen_kappa(ana, ben))
    assert overall.loc[("ana", "ben"), "percent_agreement"] == pytest.approx(4 / 6)
    # ana-cy: cy always "met": p_o = 3/6, p_e = (3/6)(1) + (3/6)(0) = 1/2 -> kappa 0
    assert overall.loc[("ana", "cy"), "kappa"] == pytest.approx(0.0)
    assert overall.loc[("ben", "cy"), "kappa"] == pytest.approx(0.0)
    long = pd.DataFrame(
        {"unit": list(range(6)) * 3, "rater": ["ana"] * 6 + ["ben"] * 6 + ["cy"] * 6,
         "value": ana + ben + cy}
    )  # fmt: skip
    reference = pairwise_cohen_kappa(long).set_index(["rater_a", "rater_b"])
    for key in overall.index:
        assert overall.loc[key, "kappa"] == pytest.approx(reference.loc[key, "kappa"])
    # Axis x (k1-k3): ana T T T vs ben T T F: p_o = 2/3, p_e = (3/3)(2/3) + 0 -> kappa 0
    axis_x = pairs[(pairs["scope"] == "axis") & (pairs["key"] == "x")]
    axis_x = axis_x.set_index(["physician_a", "physician_b"])
    assert axis_x.loc[("ana", "ben"), "kappa"] == pytest.approx(0.0, abs=1e-12)
    # Per criterion each pair shares one unit only (< min_shared = 2): not measurable.
    assert pairs.loc[pairs["scope"] == "criterion", "kappa"].isna().all()

    summary = physician_agreement(criteria, grades).set_index(["scope", "key"])
    everything = summary.loc[("all", "all")]
    # Mean over pairs (1/3 + 0 + 0) / 3 = 1/9; pooled agreement (4 + 3 + 3) / 18 = 5/9.
    assert everything["mean_kappa"] == pytest.approx(1 / 9)
    assert everything["percent_agreement"] == pytest.approx(5 / 9)
    assert (everything["n_pairs"], everything["n_pairs_defined"]) == (3, 3)
    assert everything["n_comparisons"] == 18
    k1 = summary.loc[("criterion", "c1-k1")]
    assert k1["n_pairs_defined"] == 0 and math.isnan(k1["mean_kappa"])
    assert summary.loc[("arm", "A"), "mean_kappa"] == pytest.approx(1 / 9)


def test_kappa_undefined_when_both_physicians_constant() -> None:
    criteria = pd.DataFrame(rubric("c1", [2, 2, 2], ["x", "x", "x"]))
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", [T, T, T]) + verdicts("r1", "c1", "A", "ben", [T, T, T])
    )
    row = physician_agreement(criteria, grades).iloc[0]
    # p_e = 1 * 1 + 0 * 0 = 1: kappa 0/0, as cohen_kappa: NaN, "not measurable".
    assert math.isnan(row["mean_kappa"]) and row["percent_agreement"] == 1.0
    assert math.isnan(cohen_kappa([T, T, T], [T, T, T]))


def test_model_grader_against_physician_majority() -> None:
    ten = [1] * 10
    criteria = pd.DataFrame(rubric("c1", ten, ["x"] * 5 + ["y"] * 5))
    # Response r1: one physician (the majority); cells over k1..k10:
    # both met k1-k4 (4), model only k5 (1), physician only k6-k7 (2), neither k8-k10 (3).
    model = [T, T, T, T, T, F, F, F, F, F]
    physician = [T, T, T, T, F, T, T, F, F, F]
    # Response r2 (arm B): two physicians split on every criterion -> 10 ties, all left out.
    grades = pd.DataFrame(
        verdicts("r1", "c1", "A", "ana", physician)
        + verdicts("r1", "c1", "A", "model:judge", model)
        + verdicts("r2", "c1", "B", "ana", [T] * 10)
        + verdicts("r2", "c1", "B", "ben", [F] * 10)
        + verdicts("r2", "c1", "B", "model:judge", [T] * 10)
    )
    table = grader_agreement(criteria, grades).set_index(["scope", "key"])
    overall = table.loc[("all", "all")]
    assert overall["grader"] == "model:judge"
    assert (overall["n"], overall["n_ties"]) == (10, 10)
    # p_o = (4 + 3) / 10 = 0.7; model met 5/10, physicians met 6/10;
    # p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    assert overall["agreement"] == pytest.approx(0.7)
    assert overall["kappa"] == pytest.approx(0.4)
    assert overall["kappa"] == pytest.approx(cohen_kappa(model, physician))
    assert (overall["model_met_rate"], overall["physician_met_rate"]) == pytest.approx((0.5, 0.6))
    # F1(met) = 2*4 / (2*4 + 1 + 2) = 8/11; F1(not met) = 2*3 / (2*3 + 2 + 1) = 2/3;
    # macro = (8/11 + 2/3) / 2 = 23/33
    assert overall["macro_f1"] == pytest.approx(23 / 33)
    # Arm B: every unit tied, nothing to compare.
    arm_b = table.loc[("arm", "B")]
    assert (arm_b["n"], arm_b["n_ties"]) == (0, 10)
    assert math.isnan(arm_b["kappa"]) and math.isnan(arm_b["macro_f1"])
    # Axis x (k1-k5): both met 4, model only 1. p_o = 4/5; the model always says met, so
    # p_e = (5/5)(4/5) + (0/5)(1/5) = 4/5 and kappa = (4/5 - 4/5) / (1 - 4/5) = 0.
    # F1(met) = 2*4 / (2*4 + 1) = 8/9; F1(not met) = 0 / (0 + 0 + 1) = 0; macro = 4/9.
    axis_x = table.loc[("axis", "x")]
    assert axis_x["kappa"] == pytest.approx(0.0)
    assert axis_x["macro_f1"] == pytest.approx(4 / 9)
    # One unit per criterion (below min_shared): kappa NaN; k1 both met -> macro-F1 over the
    # one class present = 1.0; k5 model only -> F1(met) = 0, F1(not met) = 0 -> 0.
    k1, k5 = table.loc[("criterion", "c1-k1")], table.loc[("criterion", "c1-k5")]
    assert math.isnan(k1["kappa"]) and k1["macro_f1"] == 1.0
    assert k5["macro_f1"] == 0.0
