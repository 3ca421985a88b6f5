"""The coordinator's results page, shaped from the study report: pure, no database access.

``results_context`` takes the JSON-ready report of ``clinic_eval.statistics.report`` (and the
ratings table, which the Likert distributions need) and returns what
``coordinator/study_results.html`` renders: numbers as small display objects that keep the raw
value (``.estimate``, ``.value``) beside their text, and the plots as base64 SVG data URIs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from clinic_eval.results import plots
from clinic_eval.results.cells import (
    SENSITIVITY,
    display_label,
    estimate_cell,
    p_value_cell,
)
from clinic_eval.results.sections import (
    agreement_section,
    best_of_n_section,
    families_section,
    hallucination_tests_section,
    length_section,
    likert_tests_section,
    notes_section,
    pairwise_preference_section,
    paradox_section,
    position_bias_section,
    rubric_section,
    strata_section,
)
from clinic_eval.results.span_sections import adjudication_section, spans_section


def _data_uri(svg: str | None) -> str | None:
    return plots.svg_data_uri(svg)


def _arms(report: Mapping[str, Any]) -> list[str]:
    """Every arm in the report, most preferred first (by win rate, then name)."""
    arms: set[str] = set()
    preference = report.get("preference") or {}
    arms |= {row["arm"] for row in preference.get("win_rates") or []}
    arms |= set((preference.get("bradley_terry") or {}).get("strengths") or {})
    arms |= {row["arm"] for row in (report.get("likert") or {}).get("means") or []}
    arms |= {row["arm"] for row in (report.get("hallucination") or {}).get("rates") or []}
    arms |= {row["arm"] for row in report.get("accuracy") or []}
    win = plots.preference_by_arm(report)
    return sorted(arms, key=lambda arm: (-win[arm][0] if arm in win else math.inf, arm))


def _layers(report: Mapping[str, Any]) -> list[dict[str, str]]:
    seen: dict[str, str] = {}
    for row in report.get("accuracy") or []:
        seen.setdefault(row["layer"], row.get("title") or display_label(row["layer"]))
    return [{"name": name, "title": title} for name, title in seen.items()]


def _headline(report: Mapping[str, Any]) -> dict[str, Any]:
    preference = report.get("preference") or {}
    clustered_rows = (preference.get("clustered") or {}).get("win_rates")
    win_rows = {row["arm"]: row for row in clustered_rows or preference.get("win_rates") or []}
    comparisons = {row["arm"]: row.get("comparisons") for row in preference.get("win_rates") or []}
    strengths = plots.bt_strengths(report)
    likert_means = (report.get("likert") or {}).get("means") or []
    dimensions = sorted({row["dimension"] for row in likert_means})
    means = {(row["dimension"], row["arm"]): row for row in likert_means}
    hallucination_section = report.get("hallucination") or {}
    hallucination = {
        row["arm"]: {"rate": row["rate"], "ci_low": row["rate_low"], "ci_high": row["rate_high"]}
        for row in (hallucination_section.get("clustered") or {}).get("rates") or []
    } or {
        row["arm"]: row
        for row in hallucination_section.get("rates") or []
        if row.get("kind") == "any"
    }
    layers = _layers(report)
    accuracy = {
        (row["layer"], row["arm"]): row
        for row in report.get("accuracy") or []
        if row.get("stratum") == "all"
    }
    rows = []
    for arm in _arms(report):
        win = win_rows.get(arm, {})
        bt = strengths.get(arm)
        halluc = hallucination.get(arm, {})
        rows.append(
            {
                "arm": arm,
                "comparisons": comparisons.get(arm),
                "win_rate": estimate_cell(
                    win.get("win_rate"),
                    win.get("win_rate_low"),
                    win.get("win_rate_high"),
                    percent=True,
                ),
                "bt_strength": estimate_cell(*bt) if bt else None,
                "likert": [
                    estimate_cell(means.get((d, arm), {}).get("mean"), digits=2) for d in dimensions
                ],
                "hallucination": estimate_cell(
                    halluc.get("rate"), halluc.get("ci_low"), halluc.get("ci_high"), percent=True
                ),
                "accuracy": [
                    {
                        "accuracy": estimate_cell(
                            accuracy.get((layer["name"], arm), {}).get("accuracy"),
                            accuracy.get((layer["name"], arm), {}).get("ci_low"),
                            accuracy.get((layer["name"], arm), {}).get("ci_high"),
                            percent=True,
                        ),
                        "macro_f1": estimate_cell(
                            accuracy.get((layer["name"], arm), {}).get("macro_f1"), digits=3
                        ),
                    }
                    for layer in layers
                ],
            }
        )
    bt_section = preference.get("bradley_terry") or {}
    return {
        "rows": rows,
        "dimensions": [{"name": d, "title": display_label(d)} for d in dimensions],
        "layers": layers,
        "has_preference": bool(win_rows),
        "has_bt": bool(strengths),
        "bt_not_estimable": bt_section.get("not_estimable"),
        "tie_parameter": estimate_cell(bt_section.get("tie_parameter"), digits=3),
        "has_hallucination": bool(hallucination),
    }


def _endpoint_label(endpoint: list[str]) -> str:
    kind, *rest = endpoint
    if kind == "preference":
        return f"Preference: {rest[0]} vs {rest[1]}"
    dimension, arm_a, arm_b = rest
    return f"{display_label(dimension)} (Likert): {arm_a} vs {arm_b}"


def _primary(report: Mapping[str, Any], primary_label: str) -> dict[str, Any]:
    primary = report.get("primary")
    if not primary:
        return {"registered": False, "label": primary_label}
    endpoint = list(primary.get("endpoint") or [])
    kind = endpoint[0] if endpoint else ""
    row = primary.get("row") or {}
    sensitivity = primary.get("sensitivity") or {}
    block: dict[str, Any] = {
        "registered": True,
        "label": primary_label or (_endpoint_label(endpoint) if endpoint else ""),
        "endpoint": endpoint,
        "kind": kind,
        "test": primary.get("estimator", ""),
        "generalises_to": primary.get("generalises_to", ""),
        "not_estimable": primary.get("not_estimable"),
        "sensitivity": {
            "label": SENSITIVITY,
            "test": sensitivity.get("estimator", ""),
            "p_value": p_value_cell(sensitivity.get("p_value")),
        }
        if sensitivity
        else None,
    }
    block["model_based"] = _model_based(primary.get("model_based"), kind)
    prefix = "share_1" if kind == "preference" else "mean_difference"
    block |= {
        "cases": row.get(f"{prefix}_cases"),
        "raters": row.get(f"{prefix}_raters"),
        "design_effect": estimate_cell(row.get(f"{prefix}_design_effect"), digits=2),
    }
    if block["not_estimable"]:
        return block
    alpha = float(primary.get("alpha", 0.05))
    block |= {
        "p_value": p_value_cell(primary.get("p_value")),
        "p_adjusted": p_value_cell(primary.get("p_adjusted_in_family")),
        "significant": bool(primary.get("significant")),
        "alpha": alpha,
        "df": estimate_cell(primary.get("df"), digits=1),
    }
    # The report gives the estimate in the registered direction, "arm_a against arm_b".
    estimate, low, high = primary.get("estimate"), primary.get("low"), primary.get("high")
    first, second = (
        (endpoint[1], endpoint[2]) if kind == "preference" else (endpoint[2:4] + ["", ""])[:2]
    )
    if kind == "preference":
        block |= {
            "effect_label": f"Share of decisive judgments won by {first} against {second}",
            "effect": estimate_cell(estimate, low, high, percent=True),
            "n": row.get("decisive"),
            "n_label": "decisive judgments",
        }
    else:
        block |= {
            "effect_label": f"Mean score difference, {first} minus {second}",
            "effect": estimate_cell(estimate, low, high),
            "n": row.get("n_pairs"),
            "n_label": "paired ratings",
        }
    return block


def _model_based(section: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The primary endpoint's mixed-model companion, as the page shows it."""
    if not section:
        return None
    shown: dict[str, Any] = {
        "model": section.get("model", ""),
        "not_run": section.get("not_run", ""),
        "message": section.get("message", ""),
        "fallback": section.get("fallback", ""),
    }
    if shown["not_run"]:
        return shown
    if kind == "preference":
        probability = section.get("probability") or {}
        shown["effect_label"] = "Probability of preference for the median case and physician"
        shown["effect"] = estimate_cell(
            probability.get("estimate"),
            probability.get("low"),
            probability.get("high"),
            percent=True,
        )
    else:
        shown["effect_label"] = "Mean difference"
        shown["effect"] = estimate_cell(
            section.get("estimate"), section.get("low"), section.get("high")
        )
        ordinal = section.get("ordinal") or {}
        shown["ordinal"] = (
            {
                "log_odds_ratio": estimate_cell(ordinal.get("log_odds_ratio"), digits=2),
                "p_value": p_value_cell(ordinal.get("p_value")),
            }
            if "log_odds_ratio" in ordinal
            else None
        )
    shown |= {
        "p_value": p_value_cell(section.get("p_value")),
        "sd_case": estimate_cell(section.get("sd_case"), digits=2),
        "sd_rater": estimate_cell(section.get("sd_rater"), digits=2),
    }
    return shown


PLOTS: tuple[tuple[str, str, str], ...] = (
    (
        "forest",
        "Pairwise effects",
        "Forest plot of pairwise effects with 95% intervals clustered by case and rater: "
        "preference as (wins minus losses) over decisive judgments per arm pair, and the Likert "
        "net benefit per dimension and pair; significant pairs after correction are marked.",
    ),
    (
        "likert",
        "Likert distributions",
        "Stacked bars of the share of each Likert score per arm, one panel per dimension.",
    ),
    (
        "bradley_terry",
        "Bradley-Terry strengths",
        "Bradley-Terry log-strength per arm with two-way bootstrap intervals (cases and raters "
        "resampled).",
    ),
    (
        "accuracy_preference",
        "Accuracy vs clinician preference",
        "Scatter of automatic accuracy (x) against strict win rate (y), one labelled point "
        "per arm.",
    ),
)


def _plots(report: Mapping[str, Any], ratings: pd.DataFrame | None) -> list[dict[str, Any]]:
    renderers: dict[str, Callable[[], str | None]] = {
        "forest": lambda: plots.forest_plot(report),
        "likert": lambda: plots.likert_distribution_plot(ratings),
        "bradley_terry": lambda: plots.bradley_terry_plot(report),
        "accuracy_preference": lambda: plots.accuracy_preference_plot(report),
    }
    return [
        {
            "name": name,
            "title": title,
            "alt": alt,
            "src": _data_uri(renderers[name]()),
            "wide": name == "forest",
        }
        for name, title, alt in PLOTS
    ]


def results_context(
    report: dict[str, Any],
    ratings: pd.DataFrame | None,
    *,
    interim: bool,
    primary_label: str,
) -> dict[str, Any]:
    """What ``coordinator/study_results.html`` shows, from ``build_report``'s output."""
    options = report.get("options") or {}
    alpha = float(options.get("alpha", 0.05))
    paradox = paradox_section(report)
    figures = _plots(report, ratings)
    if paradox and paradox["present"]:
        for figure in figures:
            if figure["name"] == "accuracy_preference":
                figure["alt"] += (
                    f" The most accurate arm ({paradox['most_accurate']}) is not the most "
                    f"preferred ({paradox['most_preferred']})."
                )
    counts = report.get("counts") or {}
    rubric = rubric_section(report, alpha)
    return {
        "interim": interim,
        "counts": counts,
        # A rubric-graded study has no preferences or Likert ratings: their panels would only
        # say "not available", so the page leads with the rubric instead.
        "rubric_only": rubric is not None
        and not counts.get("judgments")
        and not counts.get("ratings"),
        "alpha": alpha,
        "correction": options.get("correction", "holm"),
        "n_boot": options.get("n_boot"),
        "primary": _primary(report, primary_label),
        "headline": _headline(report),
        "pairwise_preference": pairwise_preference_section(report, alpha),
        "likert_tests": likert_tests_section(report, alpha),
        "hallucination_tests": hallucination_tests_section(report, alpha),
        "spans": spans_section(report, alpha),
        "adjudication": adjudication_section(report),
        "families": families_section(report),
        "sensitivity_label": SENSITIVITY,
        "inference": report.get("inference") or {},
        "agreement": agreement_section(report),
        "notes": notes_section(report),
        "length": length_section(report),
        "best_of_n": best_of_n_section(report),
        "position_bias": position_bias_section(report, alpha),
        "strata": strata_section(report),
        "rubric": rubric,
        "paradox": paradox,
        "plots": figures,
        "plot": {figure["name"]: figure for figure in figures},
    }
