"""The coordinator's results page, shaped from the study report: pure, no database access.

``results_context`` takes the JSON-ready report of ``clinic_eval.statistics.report`` (and the
ratings table, which the Likert distributions need) and returns what
``coordinator/study_results.html`` renders: numbers as small display objects that keep the raw
value (``.estimate``, ``.value``) beside their text, and the plots as base64 SVG data URIs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from django.utils.html import format_html
from django.utils.safestring import SafeString

from clinic_eval import plots

SENSITIVITY = "Sensitivity: conditional on these raters and cases (each judgment independent)"


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


@dataclass(frozen=True)
class Estimate:
    """A point estimate with an optional interval; ``str()`` is what the page shows."""

    estimate: float
    low: float | None = None
    high: float | None = None
    percent: bool = False
    digits: int = 2

    def _format(self, value: float) -> str:
        if self.percent:
            return f"{100 * value:.1f}%"
        return f"{value:.{self.digits}f}"

    @property
    def text(self) -> str:
        return self._format(self.estimate)

    @property
    def interval(self) -> str:
        if self.low is None or self.high is None:
            return ""
        return f"{self._format(self.low)} to {self._format(self.high)}"

    @property
    def html(self) -> SafeString:
        """The estimate, then its interval on a line of its own: keeps table columns narrow."""
        interval = self.interval
        if not interval:
            return format_html("{}", self.text)
        return format_html('{} <span class="ci">{}</span>', self.text, interval)

    def __str__(self) -> str:
        interval = self.interval
        return f"{self.text} ({interval})" if interval else self.text


def _estimate(
    value: Any, low: Any = None, high: Any = None, *, percent: bool = False, digits: int = 2
) -> Estimate | None:
    number = _number(value)
    if number is None:
        return None
    return Estimate(number, _number(low), _number(high), percent=percent, digits=digits)


@dataclass(frozen=True)
class PValue:
    value: float

    def __str__(self) -> str:
        if self.value < 0.001:
            return "< 0.001"
        return f"{self.value:.3f}"

    @property
    def equation(self) -> str:
        """For running text: "p < 0.001" or "p = 0.012"."""
        text = str(self)
        return f"p {text}" if text.startswith("<") else f"p = {text}"


def _p(value: Any) -> PValue | None:
    number = _number(value)
    return None if number is None else PValue(number)


def _significant(p_adjusted: Any, alpha: float) -> bool:
    number = _number(p_adjusted)
    return number is not None and number < alpha


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


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
        seen.setdefault(row["layer"], row.get("title") or _label(row["layer"]))
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
                "win_rate": _estimate(
                    win.get("win_rate"),
                    win.get("win_rate_low"),
                    win.get("win_rate_high"),
                    percent=True,
                ),
                "bt_strength": _estimate(*bt) if bt else None,
                "likert": [
                    _estimate(means.get((d, arm), {}).get("mean"), digits=2) for d in dimensions
                ],
                "hallucination": _estimate(
                    halluc.get("rate"), halluc.get("ci_low"), halluc.get("ci_high"), percent=True
                ),
                "accuracy": [
                    {
                        "accuracy": _estimate(
                            accuracy.get((layer["name"], arm), {}).get("accuracy"),
                            accuracy.get((layer["name"], arm), {}).get("ci_low"),
                            accuracy.get((layer["name"], arm), {}).get("ci_high"),
                            percent=True,
                        ),
                        "macro_f1": _estimate(
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
        "dimensions": [{"name": d, "title": _label(d)} for d in dimensions],
        "layers": layers,
        "has_preference": bool(win_rows),
        "has_bt": bool(strengths),
        "bt_not_estimable": bt_section.get("not_estimable"),
        "tie_parameter": _estimate(bt_section.get("tie_parameter"), digits=3),
        "has_hallucination": bool(hallucination),
    }


def _endpoint_label(endpoint: list[str]) -> str:
    kind, *rest = endpoint
    if kind == "preference":
        return f"Preference: {rest[0]} vs {rest[1]}"
    dimension, arm_a, arm_b = rest
    return f"{_label(dimension)} (Likert): {arm_a} vs {arm_b}"


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
            "p_value": _p(sensitivity.get("p_value")),
        }
        if sensitivity
        else None,
    }
    block["model_based"] = _model_based(primary.get("model_based"), kind)
    prefix = "share_1" if kind == "preference" else "mean_difference"
    block |= {
        "cases": row.get(f"{prefix}_cases"),
        "raters": row.get(f"{prefix}_raters"),
        "design_effect": _estimate(row.get(f"{prefix}_design_effect"), digits=2),
    }
    if block["not_estimable"]:
        return block
    alpha = float(primary.get("alpha", 0.05))
    block |= {
        "p_value": _p(primary.get("p_value")),
        "p_adjusted": _p(primary.get("p_adjusted_in_family")),
        "significant": bool(primary.get("significant")),
        "alpha": alpha,
        "df": _estimate(primary.get("df"), digits=1),
    }
    # The report gives the estimate in the registered direction, "arm_a against arm_b".
    estimate, low, high = primary.get("estimate"), primary.get("low"), primary.get("high")
    first, second = (
        (endpoint[1], endpoint[2]) if kind == "preference" else (endpoint[2:4] + ["", ""])[:2]
    )
    if kind == "preference":
        block |= {
            "effect_label": f"Share of decisive judgments won by {first} against {second}",
            "effect": _estimate(estimate, low, high, percent=True),
            "n": row.get("decisive"),
            "n_label": "decisive judgments",
        }
    else:
        block |= {
            "effect_label": f"Mean score difference, {first} minus {second}",
            "effect": _estimate(estimate, low, high),
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
        shown["effect"] = _estimate(
            probability.get("estimate"),
            probability.get("low"),
            probability.get("high"),
            percent=True,
        )
    else:
        shown["effect_label"] = "Mean difference"
        shown["effect"] = _estimate(
            section.get("estimate"), section.get("low"), section.get("high")
        )
        ordinal = section.get("ordinal") or {}
        shown["ordinal"] = (
            {
                "log_odds_ratio": _estimate(ordinal.get("log_odds_ratio"), digits=2),
                "p_value": _p(ordinal.get("p_value")),
            }
            if "log_odds_ratio" in ordinal
            else None
        )
    shown |= {
        "p_value": _p(section.get("p_value")),
        "sd_case": _estimate(section.get("sd_case"), digits=2),
        "sd_rater": _estimate(section.get("sd_rater"), digits=2),
    }
    return shown


def _rubric_scores(rows: list[Mapping[str, Any]], key: str = "arm") -> list[dict[str, Any]]:
    return [
        {
            "name": row[key],
            "score": _estimate(
                row.get("score"), row.get("ci_low"), row.get("ci_high"), percent=True
            ),
            "n": row.get("n_responses"),
            "undefined": row.get("n_undefined"),
        }
        for row in rows
        if row.get("stratum") == "all"
    ]


def _rubric(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
    """Rubric scores beside each other: physicians' consensus and every grader model, then the
    paired arm tests, per-axis scores and how far the grader can be trusted."""
    rubric = report.get("rubric")
    if not rubric:
        return None
    graders = rubric.get("graders") or {}
    agreement = [
        {
            "grader": row.get("grader", "").removeprefix("model:"),
            "n": row.get("n"),
            "ties": row.get("n_ties"),
            "agreement": _estimate(row.get("agreement"), None, None, percent=True),
            "kappa": _estimate(row.get("kappa")),
            "macro_f1": _estimate(row.get("macro_f1")),
        }
        for row in rubric.get("grader_agreement") or []
        if row.get("scope") == "all"
    ]
    physicians = [
        {
            "pairs": row.get("n_pairs"),
            "comparisons": row.get("n_comparisons"),
            "agreement": _estimate(row.get("percent_agreement"), None, None, percent=True),
            "kappa": _estimate(row.get("mean_kappa")),
        }
        for row in rubric.get("physician_agreement") or []
        if row.get("scope") == "all"
    ]
    axes: dict[str, dict[str, Any]] = {}
    for row in rubric.get("axis_scores") or []:
        if row.get("stratum") == "all":
            axes.setdefault(row["axis"], {})[row["arm"]] = _estimate(
                row.get("score"), row.get("ci_low"), row.get("ci_high"), percent=True
            )
    arms = sorted({arm for by_arm in axes.values() for arm in by_arm})
    return {
        "criteria": rubric.get("criteria"),
        "physician_verdicts": rubric.get("physician_verdicts"),
        "model_verdicts": rubric.get("model_verdicts"),
        "consensus": _rubric_scores(rubric.get("arm_scores") or []),
        "graders": {name: _rubric_scores(g.get("arm_scores") or []) for name, g in graders.items()},
        "paired": [
            {
                "pair": f"{row['arm_a']} vs {row['arm_b']}",
                "n": row.get("n_cases"),
                "difference": _estimate(
                    row.get("mean_difference"), row.get("ci_low"), row.get("ci_high"), percent=True
                ),
                "p_value": _p(row.get("p_value")),
                "p_adjusted": _p(row.get("p_adjusted")),
                "significant": _significant(row.get("p_adjusted"), alpha),
            }
            for row in rubric.get("paired") or []
        ],
        "axis_arms": arms,
        "axes": [
            {"axis": axis, "scores": [by_arm.get(arm, "—") for arm in arms]}
            for axis, by_arm in sorted(axes.items())
        ],
        "grader_agreement": agreement,
        "physician_agreement": physicians[0] if physicians else None,
    }


def _clustered_cells(row: Mapping[str, Any], prefix: str, alpha: float, **kind: Any) -> dict:
    """The display cells of one clustered estimate: value with interval, p, adjusted p."""
    return {
        "value": _estimate(
            row.get(prefix), row.get(f"{prefix}_low"), row.get(f"{prefix}_high"), **kind
        ),
        "p_value": _p(row.get(f"{prefix}_p_value")),
        "p_adjusted": _p(row.get(f"{prefix}_p_adjusted")),
        "significant": _significant(row.get(f"{prefix}_p_adjusted"), alpha),
        "df": _estimate(row.get(f"{prefix}_df"), digits=1),
        "design_effect": _estimate(row.get(f"{prefix}_design_effect"), digits=2),
        "not_estimable": row.get(f"{prefix}_not_estimable") or "",
        "note": row.get(f"{prefix}_note") or "",
    }


def _pairwise_preference(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
    preference = report.get("preference") or {}
    clustered = (preference.get("clustered") or {}).get("pairwise") or []
    if not clustered:
        return None
    rows = [
        {
            "arm_1": row["arm_1"],
            "arm_2": row["arm_2"],
            "decisive": row.get("decisive"),
            "cases": row.get("share_1_cases"),
            "raters": row.get("share_1_raters"),
            "share": _clustered_cells(row, "share_1", alpha, percent=True),
            "tie_half": _clustered_cells(row, "tie_half_1", alpha, percent=True),
        }
        for row in clustered
    ]
    sensitivity = [
        {
            "arm_1": row["arm_1"],
            "arm_2": row["arm_2"],
            "comparisons": row.get("comparisons"),
            "wins_1": row.get("wins_1"),
            "wins_2": row.get("wins_2"),
            "ties": row.get("ties"),
            "both_bad": row.get("both_bad"),
            "win_rate_1": _estimate(
                row.get("win_rate_1"),
                row.get("win_rate_1_low"),
                row.get("win_rate_1_high"),
                percent=True,
            ),
            "p_value": _p(row.get("sign_p")),
            "p_adjusted": _p(row.get("sign_p_adjusted")),
        }
        for row in preference.get("pairwise") or []
    ]
    return {
        "rows": rows,
        "sensitivity": sensitivity,
        "estimator": clustered[0].get("estimator"),
        "generalises_to": clustered[0].get("generalises_to"),
        "sensitivity_label": SENSITIVITY,
    }


def _likert_tests(report: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    likert = report.get("likert") or {}
    clustered = likert.get("clustered") or []
    rows = [
        {
            "dimension": _label(row["dimension"]),
            "arm_a": row["arm_a"],
            "arm_b": row["arm_b"],
            "mean_a": _estimate(row.get("mean_a")),
            "mean_b": _estimate(row.get("mean_b")),
            "n_pairs": row.get("n_pairs"),
            "cases": row.get("mean_difference_cases"),
            "raters": row.get("mean_difference_raters"),
            "difference": _clustered_cells(row, "mean_difference", alpha),
            "net_benefit": _clustered_cells(row, "net_benefit", alpha),
        }
        for row in clustered
    ]
    sensitivity = []
    for row in likert.get("pairwise") or []:
        sensitivity.append(
            {
                "dimension": _label(row["dimension"]),
                "arm_a": row["arm_a"],
                "arm_b": row["arm_b"],
                "n_pairs": row.get("n_pairs"),
                "rank_biserial": _estimate(
                    row.get("rank_biserial"),
                    row.get("rank_biserial_ci_low"),
                    row.get("rank_biserial_ci_high"),
                ),
                "median_difference": _estimate(
                    row.get("median_difference"),
                    row.get("median_difference_ci_low"),
                    row.get("median_difference_ci_high"),
                    digits=1,
                ),
                "method": row.get("method"),
                "p_value": _p(row.get("p_value")),
                "p_adjusted": _p(row.get("p_adjusted")),
            }
        )
    friedman = [
        {
            "dimension": _label(dimension),
            "statistic": _estimate(result.get("statistic")),
            "p_value": _p(result.get("p_value")),
            "n_blocks": result.get("n_blocks"),
        }
        for dimension, result in sorted((likert.get("friedman") or {}).items())
    ]
    return {
        "rows": rows,
        "sensitivity": sensitivity,
        "sensitivity_label": SENSITIVITY,
        "friedman": friedman,
        "estimator": clustered[0].get("estimator") if clustered else "",
        "generalises_to": clustered[0].get("generalises_to") if clustered else "",
    }


def _hallucination_tests(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
    section = report.get("hallucination") or {}
    clustered = (section.get("clustered") or {}).get("pairwise") or []
    if not clustered:
        return None
    return {
        "rows": [
            {
                "arm_a": row["arm_a"],
                "arm_b": row["arm_b"],
                "n_pairs": row.get("n_pairs"),
                "only_a": row.get("only_a"),
                "only_b": row.get("only_b"),
                "difference": _clustered_cells(row, "difference", alpha, percent=True),
            }
            for row in clustered
        ],
        "sensitivity": [
            {
                "arm_a": row["arm_a"],
                "arm_b": row["arm_b"],
                "b": row.get("b"),
                "c": row.get("c"),
                "n_pairs": row.get("n_pairs"),
                "p_value": _p(row.get("p_value")),
                "p_adjusted": _p(row.get("p_adjusted")),
            }
            for row in section.get("pairwise") or []
        ],
        "sensitivity_label": SENSITIVITY,
        "estimator": clustered[0].get("estimator"),
    }


def _families(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": _label(family["name"]),
            "tests": family.get("tests"),
            "members": family.get("members"),
            "correction": "Holm" if family.get("correction") == "holm" else "Benjamini-Hochberg",
        }
        for family in report.get("families") or []
    ]


def _agreement(report: Mapping[str, Any]) -> dict[str, Any] | None:
    section = report.get("agreement")
    if not section:
        return None
    likert = section.get("likert_alpha_ordinal") or {}
    consistency = report.get("consistency") or {}
    fleiss = consistency.get("fleiss_kappa_preference")
    pairs = consistency.get("cohen_kappa_pairs") or []
    intra = [row for row in consistency.get("intra_rater_preference") or [] if row]
    pooled = next((row for row in intra if row.get("rater") == "all"), None)
    return {
        "preference_alpha": _estimate(section.get("preference_alpha_nominal"), digits=3),
        "likert_alpha": [
            {"dimension": _label(d), "alpha": _estimate(value, digits=3)}
            for d, value in sorted(likert.items())
        ],
        "raters": (report.get("counts") or {}).get("raters"),
        "fleiss_kappa": _estimate(fleiss, digits=3) if not isinstance(fleiss, Mapping) else None,
        "fleiss_note": fleiss.get("not_estimable") if isinstance(fleiss, Mapping) else "",
        "cohen_pairs": [
            {
                "raters": f"{row['rater_a']} · {row['rater_b']}",
                "n": row.get("n"),
                "kappa": _estimate(row.get("kappa"), digits=3),
                "agreement": _estimate(row.get("percent_agreement"), percent=True),
            }
            for row in pairs
        ],
        "intra_rater": {
            "n_pairs": pooled.get("n_pairs"),
            "identical": _estimate(pooled.get("identical_share"), percent=True),
            "kappa": _estimate(pooled.get("kappa"), digits=3),
        }
        if pooled
        else None,
    }


def _notes(report: Mapping[str, Any]) -> list[str]:
    """Caveats the numbers carry, said next to them."""
    notes = []
    fit = (report.get("preference") or {}).get("bradley_terry") or {}
    bootstrap = fit.get("bootstrap")
    if bootstrap and bootstrap.get("skipped"):
        notes.append(
            f"{bootstrap['skipped']} of {bootstrap['replicates']} Bradley-Terry bootstrap "
            "replicates had no finite estimate (an arm never won or never lost in the "
            "resample) and were skipped."
        )
    if fit.get("interval_not_estimable"):
        notes.append(f"Bradley-Terry intervals not estimable: {fit['interval_not_estimable']}.")
    return notes


def _length(report: Mapping[str, Any]) -> dict[str, Any] | None:
    length = report.get("length")
    if not length or not length.get("decisive"):
        return None
    share = length.get("longer_share") or {}
    adjusted = report.get("length_adjusted") or {}
    return {
        "adjusted": {
            "odds_ratio": _estimate(
                adjusted.get("odds_ratio_per_doubling"),
                adjusted.get("odds_ratio_low"),
                adjusted.get("odds_ratio_high"),
            ),
            "p_value": _p(adjusted.get("p_value")),
            "not_estimable": adjusted.get("not_estimable") or "",
            "decisive": adjusted.get("decisive"),
        }
        if adjusted
        else None,
        "longer_share": _estimate(
            share.get("estimate"), share.get("low"), share.get("high"), percent=True
        ),
        "unequal": length.get("unequal"),
        "p_value": _p(length.get("p_value")),
        "rho": _estimate(length.get("spearman_rho"), digits=3),
    }


def _best_of_n(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    section = report.get("best_of_n") or {}
    clustered = section.get("clustered") or []
    if clustered:
        return [
            {
                "arm": row.get("arm"),
                "share": _estimate(
                    row.get("share"), row.get("share_low"), row.get("share_high"), percent=True
                ),
                "chance": _estimate(row.get("chance_share"), percent=True),
                "wins": round((row.get("share") or 0) * (row.get("shown") or 0)),
                "shown": row.get("shown"),
            }
            for row in clustered
        ]
    rows = section.get("shares") or []
    return [
        {
            "arm": row.get("arm"),
            "share": _estimate(
                row.get("share"), row.get("share_low"), row.get("share_high"), percent=True
            ),
            "chance": _estimate(row.get("chance_share"), percent=True),
            "wins": row.get("wins"),
            "shown": row.get("shown"),
        }
        for row in rows
    ]


def _position_bias(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
    preference = report.get("preference") or {}
    bias = preference.get("position_bias")
    if not bias:
        return None
    share = bias.get("left_share") or {}
    clustered = preference.get("position_bias_clustered") or {}
    left = clustered.get("left_share") or {}
    heterogeneity = clustered.get("rater_heterogeneity") or {}
    p_value = left.get("p_value")
    return {
        "clustered": _estimate(
            left.get("estimate"), left.get("low"), left.get("high"), percent=True
        ),
        "clustered_p": _p(p_value),
        "not_estimable": left.get("not_estimable") or "",
        "per_rater": [
            {
                "rater": row["rater"],
                "decisive": row["decisive"],
                "share": _estimate(row["left_share"], row["low"], row["high"], percent=True),
            }
            for row in clustered.get("per_rater") or []
        ],
        "heterogeneity_p": _p(heterogeneity.get("p_value")),
        "heterogeneity_df": heterogeneity.get("df"),
        "left_share": _estimate(
            share.get("estimate"), share.get("low"), share.get("high"), percent=True
        ),
        "left_wins": bias.get("left_wins"),
        "right_wins": bias.get("right_wins"),
        "decisive": bias.get("decisive"),
        "ties": bias.get("ties"),
        "both_bad": bias.get("both_bad"),
        "p_value": _p(bias.get("p_value")),
        "biased": _significant(p_value if p_value is not None else bias.get("p_value"), alpha),
    }


def _strata(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per-stratum breakdown: the report's own section when it has one, else accuracy.

    A report ``strata`` section is read as {stratum: sub-report of the same shape}; its win
    rates are tabulated per arm.
    """
    strata = report.get("strata")
    if isinstance(strata, Mapping) and strata:
        rows = []
        for stratum, sub in sorted(strata.items()):
            sub_preference = sub.get("preference") or {}
            clustered = (sub_preference.get("clustered") or {}).get("win_rates")
            counts = {r["arm"]: r.get("comparisons") for r in sub_preference.get("win_rates") or []}
            for row in clustered or sub_preference.get("win_rates") or []:
                rows.append(
                    {
                        "stratum": stratum,
                        "arm": row["arm"],
                        "n": counts.get(row["arm"], row.get("comparisons")),
                        "win_rate": _estimate(
                            row.get("win_rate"),
                            row.get("win_rate_low"),
                            row.get("win_rate_high"),
                            percent=True,
                        ),
                    }
                )
        if rows:
            return {"kind": "preference", "rows": rows}
    accuracy = [r for r in report.get("accuracy") or [] if r.get("stratum") != "all"]
    if not accuracy:
        return None
    rows = [
        {
            "layer": row.get("title") or _label(row["layer"]),
            "stratum": row["stratum"],
            "arm": row["arm"],
            "n": row.get("n"),
            "accuracy": _estimate(
                row.get("accuracy"), row.get("ci_low"), row.get("ci_high"), percent=True
            ),
            "macro_f1": _estimate(row.get("macro_f1"), digits=3),
        }
        for row in sorted(accuracy, key=lambda r: (r["layer"], str(r["stratum"]), r["arm"]))
    ]
    return {"kind": "accuracy", "rows": rows}


def _paradox(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The most accurate arm and the most preferred one, when accuracy and preference exist."""
    found = plots.accuracy_by_arm(report)
    win = plots.preference_by_arm(report)
    if found is None or not win:
        return None
    layer, title, rows = found
    accuracy = {
        arm: value
        for arm, row in rows.items()
        if arm in win and (value := _number(row.get("accuracy"))) is not None
    }
    if len(accuracy) < 2:
        return None
    most_accurate = max(accuracy, key=lambda arm: (accuracy[arm], arm))
    most_preferred = max(accuracy, key=lambda arm: (win[arm][0], arm))
    return {
        "layer": title,
        "most_accurate": most_accurate,
        "most_preferred": most_preferred,
        "present": most_accurate != most_preferred,
    }


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
    paradox = _paradox(report)
    figures = _plots(report, ratings)
    if paradox and paradox["present"]:
        for figure in figures:
            if figure["name"] == "accuracy_preference":
                figure["alt"] += (
                    f" The most accurate arm ({paradox['most_accurate']}) is not the most "
                    f"preferred ({paradox['most_preferred']})."
                )
    counts = report.get("counts") or {}
    rubric = _rubric(report, alpha)
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
        "pairwise_preference": _pairwise_preference(report, alpha),
        "likert_tests": _likert_tests(report, alpha),
        "hallucination_tests": _hallucination_tests(report, alpha),
        "families": _families(report),
        "sensitivity_label": SENSITIVITY,
        "inference": report.get("inference") or {},
        "agreement": _agreement(report),
        "notes": _notes(report),
        "length": _length(report),
        "best_of_n": _best_of_n(report),
        "position_bias": _position_bias(report, alpha),
        "strata": _strata(report),
        "rubric": rubric,
        "paradox": paradox,
        "plots": figures,
        "plot": {figure["name"]: figure for figure in figures},
    }
