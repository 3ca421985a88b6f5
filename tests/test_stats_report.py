"""The composed study report: deterministic, JSON-clean, and it shows planted effects."""

from __future__ import annotations

import json

from clinic_eval.statistics.report import ReportOptions, build_report, report_json
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
