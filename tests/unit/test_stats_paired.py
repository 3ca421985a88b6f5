"""Paired statistics against published examples, scipy/statsmodels and a calibration run.

Reference values and where they come from:

* Wilcoxon, exact: Hollander & Wolfe (1999), Nonparametric Statistical Methods, 2nd ed.,
  Example 3.1 (Hamilton depression scale, 9 patients), also R's ?wilcox.test:
  V = T+ = 40, two-sided exact p = 20/512 = 0.0390625.
* Wilcoxon with a zero and a tie: Wikipedia, "Wilcoxon signed-rank test", 10-pair example:
  after dropping the zero N_r = 9, W = T+ - T- = 9 (T+ = 27, T- = 18); normal approximation
  with tie and continuity correction (R's wilcox.test) p = 0.6353, recomputed by hand below.
* Friedman: Hollander & Wolfe Example 7.1 (rounding first base, 22 players x 3 methods),
  R's ?friedman.test: chi-squared = 11.143, df = 2, p = 0.003805.
* Wilson: Newcombe (1998), Stat Med 17:857, Table I: 81/263 -> 0.2553-0.3662,
  15/148 -> 0.0624-0.1605, 0/20 -> 0-0.1611, 1/29 -> 0.0061-0.1718.
* McNemar: Agresti (2007), An Introduction to Categorical Data Analysis, 2nd ed., Table 8.1
  (presidential approval, 794/150/86/570): chi-square without correction 17.36; the
  exact p is checked against the binomial tail and statsmodels.
* Holm/BH: hand-computed for p = [0.01, 0.04, 0.03, 0.005].
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from clinic_eval.statistics.hallucination import hallucination_rates, mcnemar_pairs
from clinic_eval.statistics.paired import (
    adjust_p_values,
    friedman,
    pairwise_likert_tests,
    signed_rank_test,
    wilcoxon_pairs,
)

HW_X = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
HW_Y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
WIKI_AFTER = [125, 115, 130, 140, 140, 115, 140, 125, 140, 135]
WIKI_BEFORE = [110, 122, 125, 120, 140, 124, 123, 137, 135, 145]
ROUNDING_TIMES = [
    (5.40, 5.50, 5.55), (5.85, 5.70, 5.75), (5.20, 5.60, 5.50), (5.55, 5.50, 5.40),
    (5.90, 5.85, 5.70), (5.45, 5.55, 5.60), (5.40, 5.40, 5.35), (5.45, 5.50, 5.35),
    (5.25, 5.15, 5.00), (5.85, 5.80, 5.70), (5.25, 5.20, 5.10), (5.65, 5.55, 5.45),
    (5.60, 5.35, 5.45), (5.05, 5.00, 4.95), (5.50, 5.50, 5.40), (5.45, 5.55, 5.50),
    (5.55, 5.55, 5.35), (5.45, 5.50, 5.55), (5.50, 5.45, 5.25), (5.65, 5.60, 5.40),
    (5.70, 5.65, 5.55), (6.30, 6.30, 6.25),
]  # fmt: skip


def long_ratings(columns: dict[str, list[float]], dimension: str = "clarity") -> pd.DataFrame:
    """Long ratings frame; row i of every arm is case i, split over two raters."""
    rows = [
        {
            "case_id": i // 2,
            "rater_id": i % 2,
            "arm": arm,
            "dimension": dimension,
            "score": score,
        }
        for arm, scores in columns.items()
        for i, score in enumerate(scores)
    ]
    return pd.DataFrame(rows)


def brute_force_wilcox(d: np.ndarray) -> tuple[float, float]:
    """T+ and T- by the textbook definition: drop zeros, average ranks of |d|."""
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    return float(ranks[d > 0].sum()), float(ranks[d < 0].sum())


# --------------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_hollander_wolfe_exact() -> None:
    test = wilcoxon_pairs(long_ratings({"SFT": HW_X, "DPO": HW_Y}), "SFT", "DPO", "clarity")
    assert test.n_pairs == 9 and test.n_nonzero == 9
    assert test.method == "exact"
    # T+ = 40, T- = 5 -> scipy's two-sided statistic min(T+, T-) = 5.
    assert test.statistic == 5
    assert test.p_value == pytest.approx(0.0390625, abs=1e-6)
    assert test.rank_biserial == pytest.approx((40 - 5) / 45, abs=1e-9)
    assert test.median_difference == pytest.approx(0.49, abs=1e-9)
    reference = stats.wilcoxon(HW_X, HW_Y, method="exact")
    assert test.p_value == pytest.approx(reference.pvalue, abs=1e-12)


def test_wilcoxon_wikipedia_example_with_zero_and_tie() -> None:
    frame = long_ratings({"DPO": WIKI_AFTER, "SFT": WIKI_BEFORE})
    test = wilcoxon_pairs(frame, "DPO", "SFT", "clarity")
    assert test.n_pairs == 10 and test.n_nonzero == 9
    assert test.method == "approx"
    t_plus, t_minus = 27.0, 18.0
    assert t_plus - t_minus == 9  # Wikipedia's W
    assert test.statistic == t_minus
    assert test.rank_biserial == pytest.approx(0.2, abs=1e-9)
    # Hand computation: mean n(n+1)/4 = 22.5; variance n(n+1)(2n+1)/24 minus the tie
    # term (2^3 - 2)/48 for the two |d| = 5 -> 71.125; continuity correction 0.5.
    z = (t_minus - 22.5 + 0.5) / math.sqrt(71.125)
    assert test.p_value == pytest.approx(2 * stats.norm.cdf(z), abs=1e-9)
    assert test.p_value == pytest.approx(0.6353, abs=5e-4)
    d = np.subtract(WIKI_AFTER, WIKI_BEFORE)
    reference = stats.wilcoxon(d, zero_method="wilcox", correction=True, method="approx")
    assert test.p_value == pytest.approx(reference.pvalue, abs=1e-12)
    assert test.statistic == reference.statistic


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt", "zsplit"])
def test_wilcoxon_matches_scipy_on_likert_data(zero_method: str) -> None:
    rng = np.random.default_rng(7)
    for n in (8, 25, 60):
        a = rng.integers(1, 6, size=n).astype(float)
        b = np.clip(a + rng.integers(-2, 2, size=n), 1, 5)
        test = signed_rank_test(a - b, zero_method=zero_method, n_boot=50)
        reference = stats.wilcoxon(
            a, b, zero_method=zero_method, correction=True, method=test.method
        )
        assert test.p_value == pytest.approx(reference.pvalue, abs=1e-10)
        assert test.statistic == pytest.approx(reference.statistic, abs=1e-10)
        if zero_method == "wilcox":
            t_plus, t_minus = brute_force_wilcox(a - b)
            assert test.rank_biserial == pytest.approx(
                (t_plus - t_minus) / (t_plus + t_minus), abs=1e-12
            )


def test_wilcoxon_bootstrap_intervals_are_seeded_and_cover_estimates() -> None:
    frame = long_ratings({"SFT": HW_X, "DPO": HW_Y})
    first = wilcoxon_pairs(frame, "SFT", "DPO", "clarity", seed=3)
    again = wilcoxon_pairs(frame, "SFT", "DPO", "clarity", seed=3)
    assert first == again
    assert first.rank_biserial_ci.low <= first.rank_biserial <= first.rank_biserial_ci.high
    assert first.rank_biserial_ci.low >= -1 and first.rank_biserial_ci.high <= 1
    ci = first.median_difference_ci
    assert ci.low <= first.median_difference <= ci.high


def test_wilcoxon_pairs_only_complete_pairs_and_rejects_duplicates() -> None:
    frame = long_ratings({"SFT": [3, 4, 5, 2], "DPO": [2, 4, 3, 1]})
    # A DPO rating with no SFT partner, and another dimension, must be ignored.
    extra = pd.DataFrame(
        [
            {"case_id": 99, "rater_id": 0, "arm": "DPO", "dimension": "clarity", "score": 1},
            {"case_id": 0, "rater_id": 0, "arm": "SFT", "dimension": "safety", "score": 1},
        ]
    )
    test = wilcoxon_pairs(pd.concat([frame, extra]), "SFT", "DPO", "clarity", n_boot=50)
    assert test.n_pairs == 4 and test.n_nonzero == 3
    assert test.median_difference == pytest.approx(1.0)
    with pytest.raises(ValueError, match="duplicate"):
        wilcoxon_pairs(pd.concat([frame, frame.iloc[:1]]), "SFT", "DPO", "clarity")


def test_wilcoxon_all_ties_is_undefined_not_significant() -> None:
    test = signed_rank_test(np.zeros(5), n_boot=20)
    assert test.n_pairs == 5 and test.n_nonzero == 0
    assert math.isnan(test.p_value) and math.isnan(test.rank_biserial)
    assert test.median_difference == 0


# --------------------------------------------------------------------------- Friedman


def test_friedman_rounding_first_base() -> None:
    arms = ["round_out", "narrow_angle", "wide_angle"]
    columns = {arm: [row[j] for row in ROUNDING_TIMES] for j, arm in enumerate(arms)}
    frame = long_ratings(columns)
    # An incomplete block (missing one arm) must be dropped, not imputed.
    frame = pd.concat(
        [
            frame,
            pd.DataFrame(
                [{"case_id": 50, "rater_id": 0, "arm": "round_out", "dimension": "clarity",
                  "score": 1.0}]
            ),
        ]
    )  # fmt: skip
    result = friedman(frame, "clarity", arms)
    assert result.n_blocks == 22
    assert result.statistic == pytest.approx(11.143, abs=5e-4)
    assert result.p_value == pytest.approx(0.003805, abs=5e-6)
    reference = stats.friedmanchisquare(*np.array(ROUNDING_TIMES).T)
    assert result.statistic == pytest.approx(reference.statistic, abs=1e-10)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-12)


def test_friedman_needs_three_arms() -> None:
    with pytest.raises(ValueError):
        friedman(long_ratings({"a": [1, 2], "b": [2, 3]}), "clarity", ["a", "b"])


# --------------------------------------------------------------------------- multiplicity


def test_adjust_p_values_hand_computed_and_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.03, 0.06, 0.06, 0.02], atol=1e-12)
    np.testing.assert_allclose(adjust_p_values(p, "bh"), [0.02, 0.04, 0.04, 0.02], atol=1e-12)
    rng = np.random.default_rng(1)
    # Few vectors: multipletests itself takes ~0.1 s a call in statsmodels 0.15.
    for size in (1, 7, 12):
        values = rng.uniform(0, 0.3, size=size)
        values[rng.random(values.size) < 0.2] = values[0]  # ties in the p-values
        for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
            np.testing.assert_allclose(
                adjust_p_values(values, ours), multipletests(values, method=theirs)[1], atol=1e-12
            )


def test_adjust_p_values_passes_nan_through() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.005])
    adjusted = adjust_p_values(p, "holm")
    assert math.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2, 3, 4]], [0.03, 0.06, 0.06, 0.02], atol=1e-12)
    assert np.isnan(adjust_p_values([np.nan, np.nan])).all()
    with pytest.raises(ValueError):
        adjust_p_values([0.1], "bonferroni")  # type: ignore[arg-type]


def test_pairwise_likert_tests_one_family() -> None:
    rng = np.random.default_rng(5)
    arms = ["SFT", "DPO", "GRPO"]
    frames = [
        long_ratings(
            {arm: list(rng.integers(1, 6, size=30) + (i == 2)) for i, arm in enumerate(arms)},
            dimension,
        )
        for dimension in ("clarity", "feasibility")
    ]
    ratings = pd.concat(frames)
    table = pairwise_likert_tests(ratings, arms, ["clarity", "feasibility"], n_boot=50)
    assert len(table) == 6
    assert list(zip(table["arm_a"], table["arm_b"], strict=True))[:3] == list(
        itertools.combinations(arms, 2)
    )
    expected = {"p_value", "p_adjusted", "rank_biserial_ci_low", "median_difference_ci_high"}
    assert expected <= set(table.columns)
    np.testing.assert_allclose(
        table["p_adjusted"], multipletests(table["p_value"], method="holm")[1], atol=1e-12
    )
    row = table.iloc[0]
    single = wilcoxon_pairs(ratings, "SFT", "DPO", "clarity", n_boot=50)
    assert row["p_value"] == pytest.approx(single.p_value)
    assert row["rank_biserial_ci_low"] == pytest.approx(single.rank_biserial_ci.low)
    clarity = ratings[ratings["dimension"] == "clarity"]
    assert row["mean_a"] == pytest.approx(clarity.loc[clarity["arm"] == "SFT", "score"].mean())


# --------------------------------------------------------------------------- hallucinations


def flag_frame(kinds_by_arm: dict[str, list[str]]) -> pd.DataFrame:
    """One rater's flags: the i-th kind of each arm belongs to case i."""
    return pd.DataFrame(
        [
            {"case_id": case_id, "rater_id": 0, "arm": arm, "kind": kind}
            for arm, kinds in kinds_by_arm.items()
            for case_id, kind in enumerate(kinds)
        ]
    )


def test_hallucination_rates_per_arm_and_kind() -> None:
    flags = flag_frame(
        {
            "SFT": ["none", "factual", "reasoning", "factual", "none"],
            "DPO": ["none", "none", "none", "factual", "none"],
        }
    )
    # Case 2 on SFT is flagged twice: still one hallucinated response.
    flags = pd.concat(
        [flags, pd.DataFrame([{"case_id": 2, "rater_id": 0, "arm": "SFT", "kind": "factual"}])]
    )
    rates = hallucination_rates(flags).set_index(["arm", "kind"])
    assert rates.loc[("SFT", "any"), "count"] == 3 and rates.loc[("SFT", "any"), "n"] == 5
    assert rates.loc[("SFT", "factual"), "count"] == 3
    assert rates.loc[("SFT", "reasoning"), "count"] == 1
    assert rates.loc[("DPO", "any"), "rate"] == pytest.approx(0.2)
    low, high = proportion_confint(3, 5, method="wilson")
    assert rates.loc[("SFT", "any"), "ci_low"] == pytest.approx(low, abs=1e-12)
    assert rates.loc[("SFT", "any"), "ci_high"] == pytest.approx(high, abs=1e-12)
    with pytest.raises(ValueError, match="unknown"):
        hallucination_rates(flag_frame({"SFT": ["omission"]}))


def mcnemar_flags(
    a_yes_b_yes: int, a_yes_b_no: int, a_no_b_yes: int, a_no_b_no: int
) -> pd.DataFrame:
    cells = [
        ("factual", "factual", a_yes_b_yes),
        ("factual", "none", a_yes_b_no),
        ("none", "reasoning", a_no_b_yes),
        ("none", "none", a_no_b_no),
    ]
    kinds_a = [a for a, _, count in cells for _ in range(count)]
    kinds_b = [b for _, b, count in cells for _ in range(count)]
    return flag_frame({"SFT": kinds_a, "DPO": kinds_b})


def test_mcnemar_agresti_presidential_approval() -> None:
    flags = mcnemar_flags(794, 150, 86, 570)
    result = mcnemar_pairs(flags, "SFT", "DPO")
    assert (result.b, result.c, result.n_pairs) == (150, 86, 1600)
    table = [[794, 150], [86, 570]]
    assert mcnemar(table, exact=False, correction=False).statistic == pytest.approx(17.36, abs=5e-3)
    assert result.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert result.p_value == pytest.approx(stats.binomtest(86, 236).pvalue, rel=1e-9)


def test_mcnemar_small_hand_computed() -> None:
    # b = 1, c = 7: p = 2 * (C(8,0) + C(8,1)) / 2^8 = 18 / 256.
    flags = mcnemar_flags(3, 1, 7, 4)
    result = mcnemar_pairs(flags, "SFT", "DPO")
    assert (result.b, result.c) == (1, 7)
    assert result.p_value == pytest.approx(18 / 256, abs=1e-12)
    assert result.p_value == pytest.approx(mcnemar([[3, 1], [7, 4]], exact=True).pvalue, abs=1e-12)
    assert mcnemar_pairs(mcnemar_flags(2, 0, 0, 3), "SFT", "DPO").p_value == 1.0


# --------------------------------------------------------------------------- calibration


def simulate_differences(rng: np.random.Generator, n_pairs: int, shift: float) -> np.ndarray:
    """Paired 1-5 ratings, SFT - DPO: shared case/rater effect, own noise, rounded, clipped."""
    base = rng.normal(3.0, 0.8, size=n_pairs)
    sft = np.clip(np.rint(base + shift + rng.normal(0, 0.8, n_pairs)), 1, 5)
    dpo = np.clip(np.rint(base + rng.normal(0, 0.8, n_pairs)), 1, 5)
    return sft - dpo


def test_calibration_type_one_error_power_and_sign() -> None:
    # The array-level core is simulated (wilcoxon_pairs only adds the pairing, tested
    # above): going through pandas for 600 studies would cost ~10 s.
    rng = np.random.default_rng(20261122)
    n_studies, n_pairs = 300, 40
    null = [signed_rank_test(simulate_differences(rng, n_pairs, 0.0), n_boot=0)
            for _ in range(n_studies)]  # fmt: skip
    shifted = [signed_rank_test(simulate_differences(rng, n_pairs, 0.5), n_boot=0)
               for _ in range(n_studies)]  # fmt: skip
    null_rate = np.mean([test.p_value < 0.05 for test in null])
    assert 0.02 <= null_rate <= 0.09
    assert np.mean([test.p_value < 0.05 for test in shifted]) >= 0.6
    right_sign = [test.rank_biserial > 0 and test.median_difference >= 0 for test in shifted]
    assert np.mean(right_sign) >= 0.9
    # Under the null the effect sizes are centred on zero, not biased towards one arm.
    assert abs(np.mean([test.rank_biserial for test in null])) < 0.05


def test_holm_controls_family_wise_error() -> None:
    rng = np.random.default_rng(11)
    n_studies, n_comparisons, n_pairs = 300, 6, 40
    any_rejection = 0
    for _ in range(n_studies):
        base = rng.normal(3.0, 0.8, size=(n_comparisons, 1))
        a = np.clip(np.rint(base + rng.normal(0, 0.8, (n_comparisons, n_pairs))), 1, 5)
        b = np.clip(np.rint(base + rng.normal(0, 0.8, (n_comparisons, n_pairs))), 1, 5)
        p = [signed_rank_test(a[i] - b[i], n_boot=0).p_value for i in range(n_comparisons)]
        any_rejection += (adjust_p_values(p, "holm") < 0.05).any()
    assert any_rejection / n_studies <= 0.07


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt", "zsplit"])
def test_the_count_bootstrap_equals_ranking_each_resample(zero_method: str) -> None:
    from clinic_eval.statistics.paired import signed_rank_bootstrap, signed_rank_sums

    rng = np.random.default_rng(4)
    d = rng.integers(-3, 4, 37).astype(float)
    medians, t_plus, t_minus = signed_rank_bootstrap(d, 300, 9, zero_method)
    # The same multinomial draws, expanded back into explicit resampled rows.
    values, counts = np.unique(d, return_counts=True)
    drawn = np.random.default_rng(9).multinomial(d.size, counts / d.size, size=300)
    rows = np.array([np.repeat(values, row) for row in drawn])
    ref_plus, ref_minus = signed_rank_sums(rows, zero_method)
    np.testing.assert_allclose(t_plus, ref_plus)
    np.testing.assert_allclose(t_minus, ref_minus)
    np.testing.assert_allclose(medians, np.median(rows, axis=1))
