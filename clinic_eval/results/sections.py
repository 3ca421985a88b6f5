from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinic_eval.results import plots
from clinic_eval.results.cells import (
    SENSITIVITY,
    as_number,
    display_label,
    estimate_cell,
    is_significant,
    p_value_cell,
)


def _rubric_scores(rows: list[Mapping[str, Any]], key: str = "arm") -> list[dict[str, Any]]:
    return [
        {
            "name": row[key],
            "score": estimate_cell(
                row.get("score"), row.get("ci_low"), row.get("ci_high"), percent=True
            ),
            "n": row.get("n_responses"),
            "undefined": row.get("n_undefined"),
        }
        for row in rows
        if row.get("stratum") == "all"
    ]


def rubric_section(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
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
            "agreement": estimate_cell(row.get("agreement"), None, None, percent=True),
            "kappa": estimate_cell(row.get("kappa")),
            "macro_f1": estimate_cell(row.get("macro_f1")),
        }
        for row in rubric.get("grader_agreement") or []
        if row.get("scope") == "all"
    ]
    physicians = [
        {
            "pairs": row.get("n_pairs"),
            "comparisons": row.get("n_comparisons"),
            "agreement": estimate_cell(row.get("percent_agreement"), None, None, percent=True),
            "kappa": estimate_cell(row.get("mean_kappa")),
        }
        for row in rubric.get("physician_agreement") or []
        if row.get("scope") == "all"
    ]
    axes: dict[str, dict[str, Any]] = {}
    for row in rubric.get("axis_scores") or []:
        if row.get("stratum") == "all":
            axes.setdefault(row["axis"], {})[row["arm"]] = estimate_cell(
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
                "difference": estimate_cell(
                    row.get("mean_difference"), row.get("ci_low"), row.get("ci_high"), percent=True
                ),
                "p_value": p_value_cell(row.get("p_value")),
                "p_adjusted": p_value_cell(row.get("p_adjusted")),
                "significant": is_significant(row.get("p_adjusted"), alpha),
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


def clustered_cells(row: Mapping[str, Any], prefix: str, alpha: float, **kind: Any) -> dict:
    """The display cells of one clustered estimate: value with interval, p, adjusted p."""
    return {
        "value": estimate_cell(
            row.get(prefix), row.get(f"{prefix}_low"), row.get(f"{prefix}_high"), **kind
        ),
        "p_value": p_value_cell(row.get(f"{prefix}_p_value")),
        "p_adjusted": p_value_cell(row.get(f"{prefix}_p_adjusted")),
        "significant": is_significant(row.get(f"{prefix}_p_adjusted"), alpha),
        "df": estimate_cell(row.get(f"{prefix}_df"), digits=1),
        "design_effect": estimate_cell(row.get(f"{prefix}_design_effect"), digits=2),
        "not_estimable": row.get(f"{prefix}_not_estimable") or "",
        "note": row.get(f"{prefix}_note") or "",
    }


def pairwise_preference_section(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
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
            "share": clustered_cells(row, "share_1", alpha, percent=True),
            "tie_half": clustered_cells(row, "tie_half_1", alpha, percent=True),
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
            "win_rate_1": estimate_cell(
                row.get("win_rate_1"),
                row.get("win_rate_1_low"),
                row.get("win_rate_1_high"),
                percent=True,
            ),
            "p_value": p_value_cell(row.get("sign_p")),
            "p_adjusted": p_value_cell(row.get("sign_p_adjusted")),
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


def likert_tests_section(report: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    likert = report.get("likert") or {}
    clustered = likert.get("clustered") or []
    rows = [
        {
            "dimension": display_label(row["dimension"]),
            "arm_a": row["arm_a"],
            "arm_b": row["arm_b"],
            "mean_a": estimate_cell(row.get("mean_a")),
            "mean_b": estimate_cell(row.get("mean_b")),
            "n_pairs": row.get("n_pairs"),
            "cases": row.get("mean_difference_cases"),
            "raters": row.get("mean_difference_raters"),
            "difference": clustered_cells(row, "mean_difference", alpha),
            "net_benefit": clustered_cells(row, "net_benefit", alpha),
        }
        for row in clustered
    ]
    sensitivity = []
    for row in likert.get("pairwise") or []:
        sensitivity.append(
            {
                "dimension": display_label(row["dimension"]),
                "arm_a": row["arm_a"],
                "arm_b": row["arm_b"],
                "n_pairs": row.get("n_pairs"),
                "rank_biserial": estimate_cell(
                    row.get("rank_biserial"),
                    row.get("rank_biserial_ci_low"),
                    row.get("rank_biserial_ci_high"),
                ),
                "median_difference": estimate_cell(
                    row.get("median_difference"),
                    row.get("median_difference_ci_low"),
                    row.get("median_difference_ci_high"),
                    digits=1,
                ),
                "method": row.get("method"),
                "p_value": p_value_cell(row.get("p_value")),
                "p_adjusted": p_value_cell(row.get("p_adjusted")),
            }
        )
    friedman = [
        {
            "dimension": display_label(dimension),
            "statistic": estimate_cell(result.get("statistic")),
            "p_value": p_value_cell(result.get("p_value")),
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


def hallucination_tests_section(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
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
                "difference": clustered_cells(row, "difference", alpha, percent=True),
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
                "p_value": p_value_cell(row.get("p_value")),
                "p_adjusted": p_value_cell(row.get("p_adjusted")),
            }
            for row in section.get("pairwise") or []
        ],
        "sensitivity_label": SENSITIVITY,
        "estimator": clustered[0].get("estimator"),
    }


def families_section(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": display_label(family["name"]),
            "tests": family.get("tests"),
            "members": family.get("members"),
            "correction": "Holm" if family.get("correction") == "holm" else "Benjamini-Hochberg",
        }
        for family in report.get("families") or []
    ]


def agreement_section(report: Mapping[str, Any]) -> dict[str, Any] | None:
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
        "preference_alpha": estimate_cell(section.get("preference_alpha_nominal"), digits=3),
        "likert_alpha": [
            {"dimension": display_label(d), "alpha": estimate_cell(value, digits=3)}
            for d, value in sorted(likert.items())
        ],
        "raters": (report.get("counts") or {}).get("raters"),
        "fleiss_kappa": estimate_cell(fleiss, digits=3)
        if not isinstance(fleiss, Mapping)
        else None,
        "fleiss_note": fleiss.get("not_estimable") if isinstance(fleiss, Mapping) else "",
        "cohen_pairs": [
            {
                "raters": f"{row['rater_a']} · {row['rater_b']}",
                "n": row.get("n"),
                "kappa": estimate_cell(row.get("kappa"), digits=3),
                "agreement": estimate_cell(row.get("percent_agreement"), percent=True),
            }
            for row in pairs
        ],
        "intra_rater": {
            "n_pairs": pooled.get("n_pairs"),
            "identical": estimate_cell(pooled.get("identical_share"), percent=True),
            "kappa": estimate_cell(pooled.get("kappa"), digits=3),
        }
        if pooled
        else None,
    }


def notes_section(report: Mapping[str, Any]) -> list[str]:
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


def length_section(report: Mapping[str, Any]) -> dict[str, Any] | None:
    length = report.get("length")
    if not length or not length.get("decisive"):
        return None
    share = length.get("longer_share") or {}
    adjusted = report.get("length_adjusted") or {}
    return {
        "adjusted": {
            "odds_ratio": estimate_cell(
                adjusted.get("odds_ratio_per_doubling"),
                adjusted.get("odds_ratio_low"),
                adjusted.get("odds_ratio_high"),
            ),
            "p_value": p_value_cell(adjusted.get("p_value")),
            "not_estimable": adjusted.get("not_estimable") or "",
            "decisive": adjusted.get("decisive"),
        }
        if adjusted
        else None,
        "longer_share": estimate_cell(
            share.get("estimate"), share.get("low"), share.get("high"), percent=True
        ),
        "unequal": length.get("unequal"),
        "p_value": p_value_cell(length.get("p_value")),
        "rho": estimate_cell(length.get("spearman_rho"), digits=3),
    }


def best_of_n_section(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    section = report.get("best_of_n") or {}
    clustered = section.get("clustered") or []
    if clustered:
        return [
            {
                "arm": row.get("arm"),
                "share": estimate_cell(
                    row.get("share"), row.get("share_low"), row.get("share_high"), percent=True
                ),
                "chance": estimate_cell(row.get("chance_share"), percent=True),
                "wins": round((row.get("share") or 0) * (row.get("shown") or 0)),
                "shown": row.get("shown"),
            }
            for row in clustered
        ]
    rows = section.get("shares") or []
    return [
        {
            "arm": row.get("arm"),
            "share": estimate_cell(
                row.get("share"), row.get("share_low"), row.get("share_high"), percent=True
            ),
            "chance": estimate_cell(row.get("chance_share"), percent=True),
            "wins": row.get("wins"),
            "shown": row.get("shown"),
        }
        for row in rows
    ]


def position_bias_section(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
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
        "clustered": estimate_cell(
            left.get("estimate"), left.get("low"), left.get("high"), percent=True
        ),
        "clustered_p": p_value_cell(p_value),
        "not_estimable": left.get("not_estimable") or "",
        "per_rater": [
            {
                "rater": row["rater"],
                "decisive": row["decisive"],
                "share": estimate_cell(row["left_share"], row["low"], row["high"], percent=True),
            }
            for row in clustered.get("per_rater") or []
        ],
        "heterogeneity_p": p_value_cell(heterogeneity.get("p_value")),
        "heterogeneity_df": heterogeneity.get("df"),
        "left_share": estimate_cell(
            share.get("estimate"), share.get("low"), share.get("high"), percent=True
        ),
        "left_wins": bias.get("left_wins"),
        "right_wins": bias.get("right_wins"),
        "decisive": bias.get("decisive"),
        "ties": bias.get("ties"),
        "both_bad": bias.get("both_bad"),
        "p_value": p_value_cell(bias.get("p_value")),
        "biased": is_significant(p_value if p_value is not None else bias.get("p_value"), alpha),
    }


def strata_section(report: Mapping[str, Any]) -> dict[str, Any] | None:
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
                        "win_rate": estimate_cell(
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
            "layer": row.get("title") or display_label(row["layer"]),
            "stratum": row["stratum"],
            "arm": row["arm"],
            "n": row.get("n"),
            "accuracy": estimate_cell(
                row.get("accuracy"), row.get("ci_low"), row.get("ci_high"), percent=True
            ),
            "macro_f1": estimate_cell(row.get("macro_f1"), digits=3),
        }
        for row in sorted(accuracy, key=lambda r: (r["layer"], str(r["stratum"]), r["arm"]))
    ]
    return {"kind": "accuracy", "rows": rows}


def paradox_section(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The most accurate arm and the most preferred one, when accuracy and preference exist."""
    found = plots.accuracy_by_arm(report)
    win = plots.preference_by_arm(report)
    if found is None or not win:
        return None
    layer, title, rows = found
    accuracy = {
        arm: value
        for arm, row in rows.items()
        if arm in win and (value := as_number(row.get("accuracy"))) is not None
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
