"""Preference statistics: each function against independently computed or published values.

Pure tests: no database, no Django import.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from clinic_eval.statistics.bradley_terry import BTResult, bradley_terry, bradley_terry_bootstrap
from clinic_eval.statistics.intervals import Interval, wilson_interval
from clinic_eval.statistics.preference import (
    best_of_n_shares,
    length_preference,
    pairwise_win_rates,
    position_bias,
    sign_test,
    win_rates,
)

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def judgments_from(records: list[tuple[str, str, str]], raters: int = 1) -> pd.DataFrame:
    """(arm_a, arm_b, outcome) records, one case per record, raters assigned round-robin."""
    return pd.DataFrame(
        {
            "case_id": [f"c{k}" for k in range(len(records))],
            "rater_id": [f"r{k % raters}" for k in range(len(records))],
            "arm_a": [r[0] for r in records],
            "arm_b": [r[1] for r in records],
            "outcome": [r[2] for r in records],
        }
    )


def simulate_davidson(
    rng: np.random.Generator,
    arms: list[str],
    theta: np.ndarray,
    nu: float,
    n: int,
    n_cases: int,
    n_raters: int = 5,
) -> pd.DataFrame:
    """Draw judgments from the Davidson model with random pairs and random presentation order."""
    k = len(arms)
    first = rng.integers(0, k, n)
    second = (first + rng.integers(1, k, n)) % k  # uniform over the other arms
    pi_a, pi_b = np.exp(theta[first]), np.exp(theta[second])
    tie_w = nu * np.sqrt(pi_a * pi_b)
    denominator = pi_a + pi_b + tie_w
    u = rng.random(n) * denominator
    outcome = np.where(u < pi_a, "a", np.where(u < pi_a + pi_b, "b", "tie"))
    return pd.DataFrame(
        {
            "case_id": rng.integers(0, n_cases, n),
            "rater_id": rng.integers(0, n_raters, n),
            "arm_a": np.asarray(arms)[first],
            "arm_b": np.asarray(arms)[second],
            "outcome": outcome,
        }
    )


def zermelo_mm(judgments: pd.DataFrame, iterations: int = 20000) -> dict[str, float]:
    """Hunter (2004) MM / Zermelo iteration for plain Bradley-Terry, written independently.

    pi_i <- W_i / sum_{j != i} N_ij / (pi_i + pi_j), renormalised; returned as centred logs.
    """
    decisive = judgments[judgments["outcome"].isin(["a", "b"])]
    winners = np.where(decisive["outcome"] == "a", decisive["arm_a"], decisive["arm_b"])
    arms = sorted(set(decisive["arm_a"]) | set(decisive["arm_b"]))
    index = {a: i for i, a in enumerate(arms)}
    k = len(arms)
    total_wins = np.zeros(k)
    games = np.zeros((k, k))
    for a, b, w in zip(decisive["arm_a"], decisive["arm_b"], winners, strict=True):
        total_wins[index[w]] += 1
        games[index[a], index[b]] += 1
        games[index[b], index[a]] += 1
    pi = np.ones(k)
    for _ in range(iterations):
        new = total_wins / (games / (pi[:, None] + pi[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(new - pi)) < 1e-13:
            pi = new
            break
        pi = new
    log_pi = np.log(pi)
    return dict(zip(arms, log_pi - log_pi.mean(), strict=True))


# --------------------------------------------------------------------------------------------
# Wilson interval
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), Stat Med 17:857-872, Table I, method 3 (Wilson score, no correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_table(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, n)
    assert interval.estimate == pytest.approx(successes / n)
    assert interval.low == pytest.approx(low, abs=6e-5)
    assert interval.high == pytest.approx(high, abs=6e-5)


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(confidence: float) -> None:
    for successes, n in [(0, 1), (1, 1), (3, 7), (50, 100), (99, 100), (7, 1000), (12, 12)]:
        low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
        interval = wilson_interval(successes, n, confidence)
        assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-10)


def test_wilson_empty_and_invalid() -> None:
    empty = wilson_interval(0, 0)
    assert math.isnan(empty.estimate)
    assert (empty.low, empty.high) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.0)


# --------------------------------------------------------------------------------------------
# Sign test
# --------------------------------------------------------------------------------------------


def test_sign_test_hand_values() -> None:
    # 9 vs 1: 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024.
    assert sign_test(9, 1) == pytest.approx(22 / 1024, abs=1e-12)
    # 7 vs 3: 2 * (1 + 10 + 45 + 120) / 1024.
    assert sign_test(3, 7) == pytest.approx(352 / 1024, abs=1e-12)
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 0) == 1.0
    assert sign_test(6, 0) == pytest.approx(2 / 64, abs=1e-12)


def test_sign_test_matches_scipy_binomtest() -> None:
    for wins_a in range(0, 41, 3):
        for wins_b in range(0, 41, 4):
            if wins_a + wins_b == 0:
                continue
            expected = stats.binomtest(wins_a, wins_a + wins_b, 0.5).pvalue
            assert sign_test(wins_a, wins_b) == pytest.approx(expected, rel=1e-9, abs=1e-15)


# --------------------------------------------------------------------------------------------
# Win rates
# --------------------------------------------------------------------------------------------


SMALL = judgments_from(
    [
        ("SFT", "DPO", "b"),
        ("DPO", "SFT", "a"),
        ("SFT", "DPO", "a"),
        ("SFT", "DPO", "tie"),
        ("DPO", "SFT", "both_bad"),
        ("GRPO", "SFT", "a"),
        ("SFT", "GRPO", "b"),
        ("GRPO", "DPO", "tie"),
        ("DPO", "GRPO", "a"),
    ],
    raters=2,
)


def test_win_rates_hand_counts() -> None:
    table = win_rates(SMALL)
    assert list(table.index) == ["DPO", "GRPO", "SFT"]
    # Counted by hand from SMALL.
    expected = {
        "DPO": (7, 3, 1, 2, 1),
        "GRPO": (4, 2, 1, 1, 0),
        "SFT": (7, 1, 4, 1, 1),
    }
    for arm, (comparisons, wins, losses, ties, both_bad) in expected.items():
        row = table.loc[arm]
        assert (row["comparisons"], row["wins"], row["losses"], row["ties"], row["both_bad"]) == (
            comparisons,
            wins,
            losses,
            ties,
            both_bad,
        )
        assert row["win_rate"] == pytest.approx(wins / comparisons)
        low, high = proportion_confint(wins, comparisons, method="wilson")
        assert (row["win_rate_low"], row["win_rate_high"]) == pytest.approx((low, high))
        # Tie-as-half: both_bad is not in the denominator.
        assert row["tie_half_rate"] == pytest.approx((wins + 0.5 * ties) / (wins + losses + ties))
    # DPO: (3 wins + 0.5 * 2 ties) / (3 + 1 + 2).
    assert table.loc["DPO", "tie_half_rate"] == pytest.approx(4 / 6)


def test_pairwise_win_rates_hand_counts() -> None:
    table = pairwise_win_rates(SMALL).set_index(["arm_1", "arm_2"])
    assert list(table.index) == [("DPO", "GRPO"), ("DPO", "SFT"), ("GRPO", "SFT")]
    dpo_sft = table.loc[("DPO", "SFT")]
    assert (dpo_sft["comparisons"], dpo_sft["wins_1"], dpo_sft["wins_2"]) == (5, 2, 1)
    assert (dpo_sft["ties"], dpo_sft["both_bad"], dpo_sft["decisive"]) == (1, 1, 3)
    assert dpo_sft["win_rate_1"] == pytest.approx(2 / 3)
    assert dpo_sft["sign_p"] == pytest.approx(1.0)
    grpo_sft = table.loc[("GRPO", "SFT")]
    assert (grpo_sft["wins_1"], grpo_sft["wins_2"]) == (2, 0)
    assert grpo_sft["sign_p"] == pytest.approx(stats.binomtest(2, 2).pvalue)
    dpo_grpo = table.loc[("DPO", "GRPO")]
    assert (dpo_grpo["wins_1"], dpo_grpo["wins_2"], dpo_grpo["ties"]) == (1, 0, 1)


def test_win_rates_rejects_bad_input() -> None:
    bad = SMALL.copy()
    bad.loc[0, "outcome"] = "left"
    with pytest.raises(ValueError, match="unknown outcomes"):
        win_rates(bad)
    same = SMALL.copy()
    same.loc[0, "arm_b"] = same.loc[0, "arm_a"]
    with pytest.raises(ValueError, match="itself"):
        win_rates(same)
    with pytest.raises(ValueError, match="lack columns"):
        win_rates(SMALL.drop(columns="outcome"))


# --------------------------------------------------------------------------------------------
# Best-of-N
# --------------------------------------------------------------------------------------------


def test_best_of_n_shares_hand_counts() -> None:
    rows = pd.DataFrame(
        {
            "case_id": [1, 1, 2, 3, 4],
            "rater_id": ["r1", "r2", "r1", "r2", "r1"],
            "arms": [
                ("SFT", "DPO", "GRPO"),
                ("SFT", "DPO", "GRPO"),
                ("DPO", "GRPO"),
                ("SFT", "DPO", "GRPO", "MD"),
                ("SFT", "MD"),
            ],
            "winner": ["GRPO", "DPO", "GRPO", None, "MD"],
        }
    )
    table = best_of_n_shares(rows)
    assert list(table.index) == ["DPO", "GRPO", "MD", "SFT"]
    assert table.loc["GRPO", "shown"] == 4
    assert table.loc["GRPO", "wins"] == 2
    assert table.loc["GRPO", "share"] == pytest.approx(0.5)
    low, high = proportion_confint(2, 4, method="wilson")
    assert (table.loc["GRPO", "share_low"], table.loc["GRPO", "share_high"]) == pytest.approx(
        (low, high)
    )
    assert table.loc["SFT", "wins"] == 0
    assert table.loc["SFT", "shown"] == 4
    assert table.loc["MD", "share"] == pytest.approx(0.5)
    # GRPO showings: N = 3, 3, 2, 4 -> mean(1/3, 1/3, 1/2, 1/4).
    assert table.loc["GRPO", "chance_share"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 4) / 4)
    with pytest.raises(ValueError, match="not among"):
        best_of_n_shares(pd.DataFrame({"arms": [("A", "B")], "winner": ["C"]}))


# --------------------------------------------------------------------------------------------
# Bradley-Terry
# --------------------------------------------------------------------------------------------


def test_bt_hand_checkable_three_arm_chain_with_ties() -> None:
    # A-B: 3 A wins, 1 B win, 2 ties; B-C the same. The Davidson model can reproduce both pairs'
    # frequencies exactly (pi_A/pi_B = pi_B/pi_C = 3, nu = t/sqrt(w*l) = 2/sqrt(3)), so that
    # saturated fit is the MLE: strengths (log 3, 0, -log 3), and the log-likelihood is
    # 2 * (3 log(1/2) + log(1/6) + 2 log(1/3)).
    pair = [("a",) * 3, ("b",), ("tie",) * 2]
    outcomes = [o for group in pair for o in group]
    records = [("A", "B", o) for o in outcomes] + [("B", "C", o) for o in outcomes]
    fit = bradley_terry(judgments_from(records))
    assert isinstance(fit, BTResult)
    assert fit.arms == ("A", "B", "C")
    assert fit.strengths == pytest.approx((math.log(3), 0.0, -math.log(3)), abs=1e-6)
    assert fit.tie_parameter == pytest.approx(2 / math.sqrt(3), abs=1e-6)
    expected_ll = 2 * (3 * math.log(0.5) + math.log(1 / 6) + 2 * math.log(1 / 3))
    assert fit.log_likelihood == pytest.approx(expected_ll, abs=1e-8)
    assert fit.converged
    assert fit.probabilities("A", "B") == pytest.approx((0.5, 1 / 6, 1 / 3), abs=1e-6)


def test_bt_ignores_both_bad_and_presentation_order() -> None:
    records = [("A", "B", "a")] * 5 + [("B", "A", "a")] * 2 + [("A", "B", "tie")]
    base = bradley_terry(judgments_from(records))
    flipped = [(b, a, {"a": "b", "b": "a"}.get(o, o)) for a, b, o in records]
    extra = records + [("A", "B", "both_bad")] * 4
    assert bradley_terry(judgments_from(flipped)).strengths == pytest.approx(base.strengths)
    assert bradley_terry(judgments_from(extra)).strengths == pytest.approx(base.strengths)
    # Two arms: closed form theta_A - theta_B = log(w/l) = log(5/2).
    assert base.strength("A") - base.strength("B") == pytest.approx(math.log(2.5), abs=1e-6)


def test_bt_without_ties_matches_zermelo_mm() -> None:
    rng = np.random.default_rng(11)
    arms = ["DPO", "GRPO", "MD", "SFT"]
    data = simulate_davidson(rng, arms, np.array([0.3, 0.6, -0.1, -0.8]), 0.0, 400, 100)
    # Make the comparison graph incomplete (no MD-SFT games) so the check is not trivial.
    data = data[~(data[["arm_a", "arm_b"]].isin(["MD", "SFT"]).all(axis=1))]
    fit = bradley_terry(data)
    reference = zermelo_mm(data)
    assert fit.converged
    assert fit.tie_parameter == 0.0  # nu is 0 when no ties occurred
    for arm in arms:
        assert fit.strength(arm) == pytest.approx(reference[arm], abs=1e-4)
    assert sum(fit.strengths) == pytest.approx(0.0, abs=1e-10)
    # Dropping ties gives the same answer as the MM solution of the decisive games only.
    tied = pd.concat([data, judgments_from([("DPO", "SFT", "tie")] * 5)], ignore_index=True)
    dropped = bradley_terry(tied, ties="drop")
    assert dropped.tie_parameter == 0.0
    for arm in arms:
        assert dropped.strength(arm) == pytest.approx(reference[arm], abs=1e-4)


def test_bt_recovers_planted_strengths_and_tie_parameter() -> None:
    rng = np.random.default_rng(2024)
    arms = ["A", "B", "C", "D", "E"]
    truth = np.array([-0.8, -0.3, 0.0, 0.4, 0.7])
    truth = truth - truth.mean()
    data = simulate_davidson(rng, arms, truth, 0.5, 20000, 2000)
    fit = bradley_terry(data)
    assert fit.converged
    assert np.asarray(fit.strengths) == pytest.approx(truth, abs=0.06)
    assert fit.tie_parameter == pytest.approx(0.5, abs=0.04)
    # Near-zero nu when ties are rare but present.
    rare = simulate_davidson(rng, arms, truth, 0.005, 20000, 2000)
    assert bradley_terry(rare).tie_parameter < 0.02


def test_bt_refuses_non_identifiable_data_unless_regularised() -> None:
    # A never loses: its MLE strength is +infinity.
    records = [("A", "B", "a")] * 3 + [("B", "C", "a"), ("C", "B", "a")]
    with pytest.raises(ValueError, match="does not exist"):
        bradley_terry(judgments_from(records))
    fit = bradley_terry(judgments_from(records), l2=0.5)
    assert fit.converged
    assert fit.strength("A") > fit.strength("B")
    with pytest.raises(ValueError, match="ties must be"):
        bradley_terry(judgments_from(records), ties="half")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return simulate_davidson(
        rng, ["DPO", "GRPO", "MD", "SFT"], np.array([0.2, 0.5, 0.0, -0.7]), 0.4, 600, 120
    )


def test_bootstrap_deterministic_and_contains_estimate(study: pd.DataFrame) -> None:
    first = bradley_terry_bootstrap(study, n_boot=40, seed=3)
    again = bradley_terry_bootstrap(study, n_boot=40, seed=3)
    other = bradley_terry_bootstrap(study, n_boot=40, seed=4)
    assert first == again
    assert first != other
    point = bradley_terry(study)
    for arm, interval in first.items():
        assert isinstance(interval, Interval)
        assert interval.estimate == pytest.approx(point.strength(arm))
        assert interval.low < interval.estimate < interval.high
        assert interval.high - interval.low < 1.0
    by_rater = bradley_terry_bootstrap(study, n_boot=20, by="rater", seed=3)
    assert set(by_rater) == set(first)
    assert all(i.low <= i.estimate <= i.high for i in by_rater.values())


def test_bootstrap_matches_brute_force_case_resampling(study: pd.DataFrame) -> None:
    # Independent re-implementation: physically resample the DataFrame by case with the same
    # draws (cases sorted, rng.integers), refit through the public function, take percentiles.
    n_boot = 15
    result = bradley_terry_bootstrap(study, n_boot=n_boot, seed=9, confidence=0.9)
    cases = np.sort(study["case_id"].unique())
    groups = {c: g for c, g in study.groupby("case_id")}
    rng = np.random.default_rng(9)
    draws = []
    for _ in range(n_boot):
        picked = cases[rng.integers(0, len(cases), len(cases))]
        sample = pd.concat([groups[c] for c in picked], ignore_index=True)
        draws.append(bradley_terry(sample).strengths)
    draws_arr = np.asarray(draws)
    arms = bradley_terry(study).arms
    for k, arm in enumerate(arms):
        assert result[arm].low == pytest.approx(np.quantile(draws_arr[:, k], 0.05), abs=1e-5)
        assert result[arm].high == pytest.approx(np.quantile(draws_arr[:, k], 0.95), abs=1e-5)


def test_bootstrap_skips_replicates_without_mle() -> None:
    # Few cases with a lopsided pair: some replicates lose every B win and have no finite MLE.
    records = [("A", "B", "a")] * 6 + [("A", "B", "b"), ("B", "C", "a"), ("C", "B", "a")]
    records += [("A", "C", "a"), ("C", "A", "a")]
    with pytest.warns(RuntimeWarning, match="skipped"):
        result = bradley_terry_bootstrap(judgments_from(records), n_boot=25, seed=1)
    assert set(result) == {"A", "B", "C"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bradley_terry_bootstrap(judgments_from(records), n_boot=25, seed=1, l2=1.0)


# --------------------------------------------------------------------------------------------
# Position and length bias
# --------------------------------------------------------------------------------------------


def test_position_bias_hand_values() -> None:
    rows = pd.DataFrame(
        {
            "left_arm": ["A", "B"] * 10,
            "right_arm": ["B", "A"] * 10,
            "outcome": ["left"] * 12 + ["right"] * 4 + ["tie"] * 3 + ["both_bad"],
        }
    )
    result = position_bias(rows)
    assert (result.decisive, result.left_wins, result.right_wins) == (16, 12, 4)
    assert (result.ties, result.both_bad) == (3, 1)
    assert result.left_share.estimate == pytest.approx(0.75)
    low, high = proportion_confint(12, 16, method="wilson")
    assert (result.left_share.low, result.left_share.high) == pytest.approx((low, high))
    # 2 * P(X <= 4 | n=16, p=1/2) = 2 * (1 + 16 + 120 + 560 + 1820) / 65536.
    assert result.p_value == pytest.approx(2 * 2517 / 65536, abs=1e-12)


def test_length_preference_hand_values() -> None:
    rows = pd.DataFrame(
        {
            "length_a": [100, 300, 200, 50, 400, 120, 90, 10],
            "length_b": [200, 100, 200, 80, 100, 60, 30, 10],
            "outcome": ["b", "a", "a", "a", "a", "b", "a", "tie"],
        }
    )
    result = length_preference(rows)
    # Decisive: first 7 rows; row 3 has equal lengths. Longer won in rows 1, 2, 5, 7 (4 of 6).
    assert (result.decisive, result.unequal, result.longer_wins) == (7, 6, 4)
    assert result.longer_share.estimate == pytest.approx(4 / 6)
    assert result.p_value == pytest.approx(stats.binomtest(4, 6).pvalue)
    # Spearman by hand: Pearson correlation of mid-ranks.
    diff = np.array([-100, 200, 0, -30, 300, 60, 60], float)
    outcome = np.array([-1, 1, 1, 1, 1, -1, 1], float)
    expected = np.corrcoef(stats.rankdata(diff), stats.rankdata(outcome))[0, 1]
    assert result.spearman_rho == pytest.approx(expected, abs=1e-12)
    constant = length_preference(rows.assign(outcome="a"))
    assert math.isnan(constant.spearman_rho)


# --------------------------------------------------------------------------------------------
# Calibration by simulation
# --------------------------------------------------------------------------------------------


def test_sign_test_calibrated_under_null_and_powered_under_effect() -> None:
    rng = np.random.default_rng(20240601)
    studies = 300

    # Null: 60 judgments per study, 40% A, 40% B, 20% ties; no true difference.
    counts = rng.multinomial(60, [0.4, 0.4, 0.2], size=studies)
    null_p = np.array([sign_test(int(a), int(b)) for a, b, _ in counts])
    null_rate = float(np.mean(null_p < 0.05))
    assert 0.01 <= null_rate <= 0.09

    # Planted effect: P(A wins | decisive) = 0.65, 10% ties, 200 judgments per study.
    decisive_share = 0.9
    effect = rng.multinomial(200, [0.65 * decisive_share, 0.35 * decisive_share, 0.1], studies)
    effect_p = np.array([sign_test(int(a), int(b)) for a, b, _ in effect])
    assert float(np.mean(effect_p < 0.05)) > 0.9

    # Bradley-Terry on the same studies (Davidson): P(A)/P(B) = pi_A/pi_B, so the planted
    # difference is log(0.65/0.35).
    target = math.log(0.65 / 0.35)
    differences = []
    for a, b, t in effect[:40]:
        data = judgments_from(
            [("A", "B", "a")] * a + [("A", "B", "b")] * b + [("A", "B", "tie")] * t
        )
        fit = bradley_terry(data)
        differences.append(fit.strength("A") - fit.strength("B"))
        # Two arms with ties: closed form log(wins_A / wins_B).
        assert differences[-1] == pytest.approx(math.log(a / b), abs=1e-5)
    differences_arr = np.asarray(differences)
    assert np.all(differences_arr > 0)
    assert float(differences_arr.mean()) == pytest.approx(target, abs=0.05)


def test_pairs_cover_all_combinations() -> None:
    # Every unordered pair that occurs appears exactly once in the pairwise table.
    rng = np.random.default_rng(5)
    arms = ["DPO", "GRPO", "MD", "SFT"]
    data = simulate_davidson(rng, arms, np.zeros(4), 0.3, 500, 50)
    table = pairwise_win_rates(data)
    assert list(zip(table["arm_1"], table["arm_2"], strict=True)) == list(combinations(arms, 2))
    assert int(table["comparisons"].sum()) == len(data)


def test_bootstrap_diagnostics_count_skipped_replicates_instead_of_warning() -> None:
    """Six cases, each arm winning once against each other: the full-data MLE exists, but
    many resamples leave an arm that never wins or never loses. Counted, not hidden."""
    import warnings

    judgments = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(6)],
            "rater_id": ["r"] * 6,
            "arm_a": ["A", "A", "B", "B", "A", "A"],
            "arm_b": ["B", "B", "C", "C", "C", "C"],
            "outcome": ["a", "b", "a", "b", "a", "b"],
        }
    )
    diagnostics: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with diagnostics asked for, no warning is raised
        intervals = bradley_terry_bootstrap(judgments, n_boot=200, seed=1, diagnostics=diagnostics)
    assert diagnostics["replicates"] == 200 and 0 < diagnostics["skipped"] < 200
    assert set(intervals) == {"A", "B", "C"}
    with pytest.warns(RuntimeWarning, match="bootstrap replicates had no finite"):
        bradley_terry_bootstrap(judgments, n_boot=200, seed=1)
