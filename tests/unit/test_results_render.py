"""The coordinator's results page: context numbers, server-rendered plots and the template."""

from __future__ import annotations

import base64
import copy
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from django.template.loader import render_to_string

from clinic_eval.results import plots
from clinic_eval.results.cells import Estimate, PValue
from clinic_eval.results.page import results_context
from clinic_eval.statistics.report import ReportOptions, StudyTables, build_report
from clinic_eval.statistics.simulate import LAYERS, simulate_study

# The paradox, planted: GRPO is the most accurate arm, SFT the one clinicians prefer.
STRENGTHS = {"SFT": 0.6, "GRPO": -0.1, "Physician": -0.3}
ACCURACY = {"SFT": 0.75, "GRPO": 0.9, "Physician": 0.7}
OPTIONS = ReportOptions(layers=LAYERS, seed=3, n_boot=100, primary=("preference", "SFT", "GRPO"))
PANELS = (
    "primary",
    "headline",
    "plot-forest",
    "plot-likert",
    "plot-bradley_terry",
    "plot-accuracy_preference",
    "pairwise-preference",
    "likert-tests",
    "agreement",
    "position-bias",
    "strata",
)
SRC = re.compile(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def tables() -> StudyTables:
    return simulate_study(judgments=1_500, strengths=STRENGTHS, accuracy=ACCURACY, raters=8, seed=1)


@pytest.fixture(scope="module")
def report(tables: StudyTables) -> dict[str, Any]:
    return build_report(tables, OPTIONS)


@pytest.fixture(scope="module")
def results(report: dict[str, Any], tables: StudyTables) -> dict[str, Any]:
    return results_context(report, tables.ratings, interim=False, primary_label="")


def _study() -> SimpleNamespace:
    return SimpleNamespace(title="Fertility pilot", pk=7, status="open")


def _render(results: dict[str, Any], *, interim: bool = False, simulated: bool = False) -> str:
    return render_to_string(
        "coordinator/study_results.html",
        {"study": _study(), "results": results, "interim": interim, "simulated": simulated},
    )


def _svgs(html: str) -> list[bytes]:
    return [base64.b64decode(match) for match in SRC.findall(html)]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# --- the page -----------------------------------------------------------------------------------


def test_every_panel_is_on_the_page_with_the_primary_endpoint_first(
    results: dict[str, Any],
) -> None:
    html = _render(results)
    for panel in PANELS:
        assert f'id="{panel}"' in html, panel
    assert html.index('id="primary"') < html.index('id="headline"') < html.index('id="plots"')
    assert html.index('id="plots"') < html.index('id="agreement"')
    assert len(_svgs(html)) == 4
    assert "Preference: SFT vs GRPO" in html
    assert "generalises to physicians and cases like these" in html
    assert html.index('id="pairwise-clustered"') < html.index('id="pairwise-sensitivity"')
    assert "conditional on these raters and cases" in html
    assert 'id="families"' in html and "Holm" in html
    assert 'id="paradox"' in html, "GRPO is most accurate, SFT most preferred"
    assert "Not available" not in html


def test_the_svgs_decode_parse_and_carry_no_script(results: dict[str, Any]) -> None:
    html = _render(results)
    for svg in _svgs(html):
        root = ET.fromstring(svg)
        assert _local(root.tag) == "svg"
        for element in root.iter():
            assert _local(element.tag) not in {"script", "foreignObject"}
            for name, value in element.attrib.items():
                assert not _local(name).lower().startswith("on"), name
                assert "javascript:" not in value.lower()
        assert b"<script" not in svg
        assert b"<dc:date>" not in svg, "the date would make the bytes differ per render"
    # The page itself gets no raw <svg> and no inline style, which the CSP would block.
    assert "<svg" not in html
    assert "style=" not in html


def test_plots_are_the_same_bytes_for_the_same_input(
    report: dict[str, Any], tables: StudyTables
) -> None:
    first = results_context(report, tables.ratings, interim=False, primary_label="")
    second = results_context(
        copy.deepcopy(report), tables.ratings.copy(), interim=False, primary_label=""
    )
    assert [p["src"] for p in first["plots"]] == [p["src"] for p in second["plots"]]
    with plt.rc_context({"font.size": 20, "svg.hashsalt": None}):
        assert plots.bradley_terry_plot(report) == plots.bradley_terry_plot(report)
        assert plots.forest_plot(report) == plots.forest_plot(copy.deepcopy(report))
    assert plt.get_fignums() == [], "no figure is left registered with pyplot"


def test_the_interim_banner_shows_only_while_the_study_is_open(results: dict[str, Any]) -> None:
    interim = _render(results, interim=True)
    closed = _render(results, interim=False)
    assert "Interim results: the study is still open" in interim
    assert 'id="interim-banner"' in interim
    assert "Interim results" not in closed


def test_the_simulated_badge_shows_only_for_simulated_ratings(results: dict[str, Any]) -> None:
    assert "Simulated ratings" in _render(results, simulated=True)
    assert "Simulated ratings" not in _render(results, simulated=False)


# --- missing sections -----------------------------------------------------------------------


def _without(report: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in copy.deepcopy(report).items() if k not in keys}


def test_no_accuracy_and_no_ratings_give_no_such_plots_and_no_crash(
    report: dict[str, Any],
) -> None:
    bare = _without(report, "accuracy", "likert", "hallucination")
    assert plots.accuracy_preference_plot(bare) is None
    assert plots.likert_distribution_plot(None) is None
    assert plots.likert_distribution_plot(pd.DataFrame()) is None
    assert plots.forest_plot(bare) is not None, "preference pairs still make a forest plot"
    results = results_context(bare, None, interim=True, primary_label="SFT over GRPO")
    figures = results["plot"]
    assert figures["accuracy_preference"]["src"] is None
    assert figures["likert"]["src"] is None
    assert figures["bradley_terry"]["src"] is not None
    assert results["strata"] is None
    assert results["paradox"] is None
    html = _render(results, interim=True)
    assert len(_svgs(html)) == 2
    assert html.count("Not available: the report has no data for this plot yet.") == 2
    assert 'id="strata"' not in html
    assert "SFT over GRPO" in html


def test_a_single_arm_gives_no_plots(report: dict[str, Any]) -> None:
    single = copy.deepcopy(report)
    preference = single["preference"]
    preference["win_rates"] = [r for r in preference["win_rates"] if r["arm"] == "SFT"]
    preference["pairwise"] = []
    preference["clustered"]["pairwise"] = []
    preference["clustered"]["win_rates"] = [
        r for r in preference["clustered"]["win_rates"] if r["arm"] == "SFT"
    ]
    preference["bradley_terry"]["strengths"] = {
        "SFT": preference["bradley_terry"]["strengths"]["SFT"]
    }
    single["accuracy"] = [r for r in single["accuracy"] if r["arm"] == "SFT"]
    single = _without(single, "likert")
    assert plots.bradley_terry_plot(single) is None
    assert plots.accuracy_preference_plot(single) is None
    assert plots.forest_plot(single) is None
    html = _render(results_context(single, None, interim=False, primary_label=""))
    assert _svgs(html) == []


def test_an_empty_report_renders(report: dict[str, Any]) -> None:
    empty = {"version": 1, "options": report["options"], "counts": {}, "primary": None}
    results = results_context(empty, None, interim=True, primary_label="")
    assert results["headline"]["rows"] == []
    assert results["agreement"] is None and results["position_bias"] is None
    html = _render(results, interim=True)
    assert "No primary endpoint was pre-registered" in html
    assert "No judgments yet." in html
    assert _svgs(html) == []


def test_an_unestimable_primary_and_bradley_terry_are_said_so(report: dict[str, Any]) -> None:
    broken = copy.deepcopy(report)
    broken["primary"] = {
        "endpoint": ["likert", "empathy", "SFT", "GRPO"],
        "not_estimable": "no data for this endpoint",
    }
    broken["preference"]["bradley_terry"] = {"not_estimable": "arm SFT never lost"}
    results = results_context(broken, None, interim=False, primary_label="")
    assert results["primary"]["label"] == "Empathy (Likert): SFT vs GRPO"
    assert results["plot"]["bradley_terry"]["src"] is None
    html = _render(results)
    assert "Not estimable: no data for this endpoint." in html
    assert "Bradley-Terry strengths not estimable: arm SFT never lost." in html


# --- the numbers ----------------------------------------------------------------------------


def test_headline_numbers_are_the_reports(report: dict[str, Any], results: dict[str, Any]) -> None:
    rows = {row["arm"]: row for row in results["headline"]["rows"]}
    assert [row["arm"] for row in results["headline"]["rows"]] == ["SFT", "GRPO", "Physician"]
    # The headline shows the clustered intervals, not the per-judgment Wilson ones.
    for win in report["preference"]["clustered"]["win_rates"]:
        estimate = rows[win["arm"]]["win_rate"]
        assert (estimate.estimate, estimate.low, estimate.high) == (
            win["win_rate"],
            win["win_rate_low"],
            win["win_rate_high"],
        )
    wilson = {row["arm"]: row for row in report["preference"]["win_rates"]}
    for arm, row in rows.items():
        assert row["comparisons"] == wilson[arm]["comparisons"]
    for arm, interval in report["preference"]["bradley_terry"]["strengths"].items():
        assert rows[arm]["bt_strength"].estimate == interval["estimate"]
        assert rows[arm]["bt_strength"].low == interval["low"]
    dimensions = [d["name"] for d in results["headline"]["dimensions"]]
    assert dimensions == ["reasoning_clarity", "treatment_feasibility"]
    for mean in report["likert"]["means"]:
        index = dimensions.index(mean["dimension"])
        assert rows[mean["arm"]]["likert"][index].estimate == mean["mean"]
    for rate in report["hallucination"]["clustered"]["rates"]:
        cell = rows[rate["arm"]]["hallucination"]
        assert (cell.estimate, cell.low, cell.high) == (
            rate["rate"],
            rate["rate_low"],
            rate["rate_high"],
        )
    for acc in report["accuracy"]:
        if acc["stratum"] == "all":
            cell = rows[acc["arm"]]["accuracy"][0]
            assert cell["accuracy"].estimate == acc["accuracy"]
            assert cell["macro_f1"].estimate == acc["macro_f1"]


def test_primary_pairwise_and_panels_are_the_reports(
    report: dict[str, Any], results: dict[str, Any]
) -> None:
    primary = results["primary"]
    assert primary["p_value"].value == report["primary"]["p_value"]
    assert primary["p_adjusted"].value == report["primary"]["p_adjusted_in_family"]
    assert primary["significant"] is True
    row = report["primary"]["row"]
    _, registered_a, _ = report["primary"]["endpoint"]
    # Read in the registered direction: the share won by the endpoint's first arm.
    estimate = report["primary"]["estimate"]
    assert primary["effect"].estimate == estimate
    expected = row["share_1"] if registered_a == row["arm_1"] else 1 - row["share_1"]
    assert estimate == pytest.approx(expected, abs=1e-9), "the primary is the clustered analysis"
    assert report["primary"]["sensitivity"]["p_value"] == next(
        r["sign_p"]
        for r in report["preference"]["pairwise"]
        if (r["arm_1"], r["arm_2"]) == (row["arm_1"], row["arm_2"])
    )
    assert primary["effect_label"].startswith(f"Share of decisive judgments won by {registered_a}")
    assert primary["n"] == report["primary"]["row"]["decisive"]

    pairs = results["pairwise_preference"]
    assert [p["share"]["p_adjusted"].value for p in pairs["rows"]] == [
        r["share_1_p_adjusted"] for r in report["preference"]["clustered"]["pairwise"]
    ]
    assert [p["p_adjusted"].value for p in pairs["sensitivity"]] == [
        r["sign_p_adjusted"] for r in report["preference"]["pairwise"]
    ]
    likert = results["likert_tests"]
    assert [
        (r["difference"]["p_value"].value, r["difference"]["p_adjusted"].value)
        for r in likert["rows"]
    ] == [
        (r["mean_difference_p_value"], r["mean_difference_p_adjusted"])
        for r in report["likert"]["clustered"]
    ]
    assert [(r["p_value"].value, r["p_adjusted"].value) for r in likert["sensitivity"]] == [
        (r["p_value"], r["p_adjusted"]) for r in report["likert"]["pairwise"]
    ]
    assert all(
        r["difference"]["significant"]
        for r in likert["rows"]
        if {r["arm_a"], r["arm_b"]} == {"SFT", "GRPO"}
    )

    agreement = results["agreement"]
    assert agreement["preference_alpha"].estimate == pytest.approx(
        report["agreement"]["preference_alpha_nominal"]
    )
    assert [a["dimension"] for a in agreement["likert_alpha"]] == [
        "Reasoning clarity",
        "Treatment feasibility",
    ]
    bias = results["position_bias"]
    assert (
        bias["left_share"].estimate
        == report["preference"]["position_bias"]["left_share"]["estimate"]
    )
    clustered_bias = report["preference"]["position_bias_clustered"]
    assert bias["clustered"].estimate == clustered_bias["left_share"]["estimate"]
    assert len(bias["per_rater"]) == report["counts"]["raters"]
    assert bias["biased"] is False

    strata = results["strata"]
    assert strata["kind"] == "accuracy"
    assert {row["stratum"] for row in strata["rows"]} == {"Confusion", "General"}
    assert results["paradox"] == {
        "layer": "ART strategy",
        "most_accurate": "GRPO",
        "most_preferred": "SFT",
        "present": True,
    }


def test_a_report_strata_section_is_preferred_to_accuracy(report: dict[str, Any]) -> None:
    stratified = copy.deepcopy(report)
    stratified["strata"] = {
        "Confusion": {"preference": {"win_rates": report["preference"]["win_rates"][:1]}},
    }
    strata = results_context(stratified, None, interim=False, primary_label="")["strata"]
    assert strata["kind"] == "preference"
    assert strata["rows"][0]["stratum"] == "Confusion"
    assert (
        strata["rows"][0]["win_rate"].estimate == report["preference"]["win_rates"][0]["win_rate"]
    )


def test_no_paradox_when_the_most_accurate_arm_is_the_most_preferred(
    report: dict[str, Any],
) -> None:
    agreeing = copy.deepcopy(report)
    for row in agreeing["accuracy"]:
        if row["arm"] == "SFT":
            row["accuracy"] = 0.99
    results = results_context(agreeing, None, interim=False, primary_label="")
    assert results["paradox"]["present"] is False
    assert 'id="paradox"' not in _render(results)
    assert results["plot"]["accuracy_preference"]["src"] is not None


def test_display_text() -> None:
    assert str(Estimate(0.3765, 0.3472, 0.4067, percent=True)) == "37.6% (34.7% to 40.7%)"
    assert str(Estimate(-0.1027, -0.1728, -0.0096)) == "-0.10 (-0.17 to -0.01)"
    assert str(Estimate(2.5)) == "2.50"
    assert str(PValue(2.6e-9)) == "< 0.001" and PValue(2.6e-9).equation == "p < 0.001"
    assert str(PValue(0.0421)) == "0.042" and PValue(0.0421).equation == "p = 0.042"
    assert Estimate(0.5, 0.4, 0.6, percent=True).html == (
        '50.0% <span class="ci">40.0% to 60.0%</span>'
    )
