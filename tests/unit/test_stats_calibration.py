"""The primary analyses are calibrated where it matters: on simulated null studies whose
physicians and cases differ (rater taste, case effects), as real panels do.

Each cell of the grid simulates 1,200 studies of 60 cases (three arms, every pair of arms
compared on every case, ties and "both unacceptable" present) and runs the same clustered
estimator the report runs (``clustered.crossed_means``). At alpha = 0.05 every test must reject
a true null at 3-7% (2-8% where only 6 physicians rate) and every 95% interval must cover the
population value 93-97% of the time. The naive per-judgment sign test is shown failing in the
same cells. ``benchmarks/calibration.py`` prints the full table with more studies.
"""

from __future__ import annotations

import numpy as np
import pytest

from clinic_eval.statistics import bradley_terry, crossed
from clinic_eval.statistics import crossed_simulation as sim
from clinic_eval.statistics.two_way_bootstrap import bradley_terry_two_way

STUDIES = 1_200
CASES = 60
# (raters per item, raters, rater taste SD per arm, case effect SD per arm)
GRID = [
    (per_item, raters, taste, case)
    for per_item in (1, 2, 3)
    for raters in (6, 20)
    for taste, case in ((0.0, 0.0), (0.5, 0.0), (0.0, 1.0), (0.5, 1.0))
] + [(2, 10, 0.3, 0.5), (3, 12, 0.2, 0.7)]


def _seed(cell: tuple[int, int, float, float]) -> int:
    per_item, raters, taste, case = cell
    return int(per_item * 1_000_000 + raters * 10_000 + taste * 100 + case * 10)


def _band(raters: int) -> tuple[float, float]:
    return (0.02, 0.08) if raters <= 6 else (0.03, 0.07)


def _cell_id(cell: tuple[int, int, float, float]) -> str:
    per_item, raters, taste, case = cell
    return f"{per_item}per-item-{raters}raters-taste{taste}-case{case}"


@pytest.mark.parametrize("cell", GRID, ids=_cell_id)
def test_every_primary_test_and_interval_is_calibrated_under_a_crossed_null(
    cell: tuple[int, int, float, float],
) -> None:
    per_item, raters, taste, case = cell
    shape = sim.StudyShape(cases=CASES, raters=raters, raters_per_item=per_item)
    heterogeneity = sim.Heterogeneity(rater_taste=taste, case_effect=case)
    studies = sim.simulate_studies(shape, heterogeneity, studies=STUDIES, seed=_seed(cell))
    low, high = _band(raters)
    tests = {
        "preference": sim.preference_shares(studies),
        "tie_half": sim.tie_half_shares(studies),
        "likert_difference": sim.likert_differences(studies),
        "likert_net_benefit": sim.likert_differences(studies, ordinal=True),
        "hallucination_difference": sim.hallucination_differences(studies),
    }
    nulls = {"preference": 0.5, "tie_half": 0.5}
    rates = {name: float(result.rejects().mean()) for name, result in tests.items()}
    coverage = {
        name: float(result.covers(nulls.get(name, 0.0)).mean()) for name, result in tests.items()
    }
    coverage["hallucination_rate"] = float(
        sim.hallucination_rates(studies)
        .covers(sim.true_hallucination_rate(heterogeneity, 0.08))
        .mean()
    )
    coverage["win_rate"] = float(
        sim.win_rates(studies).covers(sim.true_win_rate(shape, heterogeneity)).mean()
    )
    naive = float((sim.sign_test_p(studies) < 0.05).mean())
    print(f"{_cell_id(cell)}: rejections {rates}, coverage {coverage}, naive sign test {naive}")
    for name, rate in rates.items():
        assert low <= rate <= high, f"{name} rejects a true null at {rate:.3f}"
    for name, share in coverage.items():
        assert 0.93 <= share <= 0.97, f"{name} intervals cover at {share:.3f}"
    if taste >= 0.5 and raters <= 6:
        assert naive > high, "the per-judgment sign test is the one that fails here"


BT_GRID = [(2, 6, 0.5, 1.0), (3, 20, 0.0, 0.0)]
BT_STUDIES = 500


@pytest.mark.parametrize("cell", BT_GRID, ids=_cell_id)
def test_bradley_terry_two_way_intervals_cover_under_a_crossed_null(
    cell: tuple[int, int, float, float],
) -> None:
    per_item, raters, taste, case = cell
    shape = sim.StudyShape(cases=CASES, raters=raters, raters_per_item=per_item)
    heterogeneity = sim.Heterogeneity(rater_taste=taste, case_effect=case)
    studies = sim.simulate_studies(shape, heterogeneity, studies=BT_STUDIES, seed=_seed(cell))
    covered = []
    for study in range(BT_STUDIES):
        judgments = studies.judgments(study)
        point = bradley_terry.bradley_terry(judgments)
        result = bradley_terry_two_way(judgments, point, n_boot=400, seed=study)
        covered.extend(s["low"] <= 0 <= s["high"] for s in result["strengths"].values())
    share = float(np.mean(covered))
    print(f"{_cell_id(cell)}: Bradley-Terry two-way coverage {share:.3f}")
    assert 0.93 <= share <= 0.97


def test_planted_effects_are_recovered_with_intervals_that_cover() -> None:
    shape = sim.StudyShape(cases=CASES, raters=10, raters_per_item=2)
    heterogeneity = sim.Heterogeneity(rater_taste=0.3, case_effect=0.5)
    effects = sim.Effects(strength={"A": 0.6, "B": 0.0, "C": -0.3}, likert={"A": 0.5})
    studies = sim.simulate_studies(shape, heterogeneity, effects, studies=STUDIES, seed=11)
    shares = sim.preference_shares(studies)
    for index, pair in enumerate(shape.arm_pairs()):
        truth = sim.true_decisive_share(shape, heterogeneity, effects, pair)
        assert abs(np.nanmean(shares.estimate[:, index]) - truth) < 0.005
        assert 0.93 <= shares.covers(truth)[:, index].mean() <= 0.97
    likert = sim.likert_differences(studies)
    # Rounding and clipping to 1..5 shrink a 0.5-point latent shift a little.
    assert 0.4 < np.nanmean(likert.estimate[:, 0]) < 0.5
    assert likert.rejects()[:, 0].mean() > 0.5, "A vs B on Likert is found"


def test_with_no_heterogeneity_the_clustered_test_keeps_most_of_the_naive_power() -> None:
    shape = sim.StudyShape(cases=CASES, raters=20, raters_per_item=2)
    effects = sim.Effects(strength={"A": 0.35})
    studies = sim.simulate_studies(shape, sim.Heterogeneity(), effects, studies=STUDIES, seed=5)
    clustered_power = sim.preference_shares(studies).rejects()[:, :2].mean()
    naive_power = (sim.sign_test_p(studies)[:, :2] < 0.05).mean()
    print(f"power with no heterogeneity: clustered {clustered_power:.3f}, naive {naive_power:.3f}")
    assert clustered_power > 0.85 * naive_power


def test_the_batched_estimator_is_the_one_the_report_runs() -> None:
    shape = sim.StudyShape(cases=30, raters=6, raters_per_item=2)
    studies = sim.simulate_studies(shape, sim.Heterogeneity(0.4, 0.6), studies=3, seed=2)
    batch = sim.preference_shares(studies)
    likert = sim.likert_differences(studies)
    for study in range(3):
        table = crossed.preference_pairs(studies.judgments(study))
        assert np.allclose(table["share_1"], batch.estimate[study])
        assert np.allclose(table["share_1_low"], batch.low[study])
        assert np.allclose(table["share_1_p_value"], batch.p_value[study])
        tests = crossed.likert_pairs(
            studies.ratings(study), list(shape.arms), ["reasoning_clarity"]
        )
        assert np.allclose(tests["mean_difference"], likert.estimate[study])
        assert np.allclose(tests["mean_difference_p_value"], likert.p_value[study])
