"""The composed study report: deterministic, JSON-clean, and it shows planted effects."""

from __future__ import annotations

import json

import pytest

from clinic_eval.statistics.report import ReportOptions, StudyTables, build_report, report_json
from clinic_eval.statistics.simulate import LAYERS, simulate_study

# The alignment paradox, planted: GRPO is the most accurate, SFT the most preferred.
STRENGTHS = {"SFT": 0.6, "GRPO": -0.1, "Physician": -0.3}
ACCURACY = {"SFT": 0.75, "GRPO": 0.9, "Physician": 0.7}
OPTIONS = ReportOptions(layers=LAYERS, seed=3, n_boot=100, primary=("preference", "SFT", "GRPO"))


def report_for(seed: int = 1) -> dict:
    tables = simulate_study(
        judgments=1_500, strengths=STRENGTHS, accuracy=ACCURACY, raters=8, seed=seed
    )
    return build_report(tables, OPTIONS)


def test_the_report_is_the_same_bytes_twice_and_strict_json() -> None:
    first, second = report_json(report_for()), report_json(report_for())
    assert first == second
    json.loads(first, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))


def test_the_report_shows_the_planted_paradox() -> None:
    report = report_for()
    strengths = report["preference"]["bradley_terry"]["strengths"]
    assert strengths["SFT"]["estimate"] > strengths["GRPO"]["estimate"]
    assert strengths["SFT"]["low"] > strengths["GRPO"]["high"], "clearly separated"
    win = {row["arm"]: row["win_rate"] for row in report["preference"]["win_rates"]}
    assert win["SFT"] > win["GRPO"] > win["Physician"]
    accuracy_all = {
        row["arm"]: row["accuracy"]
        for row in report["accuracy"]
        if row["stratum"] == "all" and row["layer"] == "art_strategy"
    }
    assert accuracy_all["GRPO"] > accuracy_all["SFT"]
    primary = report["primary"]
    assert primary["endpoint"] == ["preference", "SFT", "GRPO"]
    assert primary["significant"] is True and primary["p_value"] < 0.001
    likert = report["likert"]["pairwise"]
    sft_vs_grpo = [r for r in likert if {r["arm_a"], r["arm_b"]} == {"GRPO", "SFT"}]
    assert len(sft_vs_grpo) == 2 and all(r["p_adjusted"] < 0.05 for r in sft_vs_grpo)


def test_position_is_balanced_and_agreement_is_reported() -> None:
    report = report_for()
    bias = report["preference"]["position_bias"]
    assert 0.4 < bias["left_share"]["estimate"] < 0.6
    assert bias["p_value"] > 0.01
    assert -1 <= report["agreement"]["preference_alpha_nominal"] <= 1
    assert set(report["agreement"]["likert_alpha_ordinal"]) == {
        "reasoning_clarity",
        "treatment_feasibility",
    }


def test_the_primary_endpoint_is_the_clustered_analysis_with_its_companions() -> None:
    report = report_for()
    primary = report["primary"]
    assert primary["estimator"].startswith("two-way cluster-robust")
    assert primary["generalises_to"] == "physicians and cases like these"
    assert primary["low"] < primary["estimate"] < primary["high"]
    assert primary["df"] < report["counts"]["raters"], "few raters, few degrees of freedom"
    assert primary["sensitivity"]["estimator"] == "sign test"
    model = primary["model_based"]
    assert model["model"].startswith("logistic mixed model")
    assert model["estimate"] > 0 and model["p_value"] < 0.05, "SFT is preferred over GRPO"
    assert model["sd_case"] >= 0 and model["sd_rater"] >= 0
    families = {family["name"]: family for family in report["families"]}
    assert families["preference"]["tests"] == 3 and families["likert"]["tests"] == 6
    assert all(family["correction"] == "holm" for family in families.values())


def test_one_rater_gives_no_clustered_p_value_and_says_why() -> None:
    tables = simulate_study(judgments=400, strengths=STRENGTHS, raters=1, seed=2)
    report = build_report(tables, OPTIONS)
    primary = report["primary"]
    assert "only 1 rater" in primary["not_estimable"]
    assert "p_value" not in primary
    assert "only 1 rater" in primary["model_based"]["not_run"]
    for row in report["preference"]["clustered"]["pairwise"]:
        assert row["share_1_p_value"] is None and "only 1 rater" in row["share_1_not_estimable"]
    # The per-judgment sensitivity test still runs, clearly labelled.
    assert primary["sensitivity"]["p_value"] is not None


def test_a_likert_primary_has_the_mixed_model_and_the_ordinal_model_beside_it() -> None:
    tables = simulate_study(
        judgments=1_500, strengths=STRENGTHS, accuracy=ACCURACY, raters=8, seed=1
    )
    options = ReportOptions(
        layers=LAYERS, seed=3, n_boot=100, primary=("likert", "reasoning_clarity", "SFT", "GRPO")
    )
    report = build_report(tables, options)
    primary = report["primary"]
    assert primary["estimate"] > 0 and primary["significant"]
    model = primary["model_based"]
    assert model["model"].startswith("linear mixed model")
    assert abs(model["estimate"] - primary["estimate"]) < 0.1, "same target, another estimator"
    assert model["df"] > 1 and model["ordinal"]["log_odds_ratio"] > 0


def test_when_every_decisive_judgment_goes_one_way_the_report_says_how_it_concluded() -> None:
    tables = simulate_study(
        judgments=600, strengths={"SFT": 12.0, "GRPO": -12.0}, raters=8, both_bad=0.0, seed=4
    )
    judgments = tables.judgments[tables.judgments["outcome"] != "tie"]
    report = build_report(
        StudyTables(judgments=judgments.reset_index(drop=True)),
        ReportOptions(seed=1, n_boot=100, primary=("preference", "SFT", "GRPO")),
    )
    primary = report["primary"]
    assert primary["estimate"] == 1.0
    assert "exact binomial" in primary["row"]["share_1_note"]
    assert primary["p_value"] == pytest.approx(2 * 0.5**8), "8 physicians: the smaller count"
    model = primary["model_based"]
    assert "did not converge" in model["fallback"] and "separated" in model["fallback"]
