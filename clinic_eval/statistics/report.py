"""The whole study report from DataFrames: the one function `study_report` will call.

It takes the tidy tables an export holds (judgments, Likert ratings, hallucination flags,
decoded predictions and ground truth) and returns plain JSON-ready data with sorted keys, NaN
as ``None``, and every random step seeded, so the same tables always give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from clinic_eval.statistics import accuracy, agreement, paired, preference

REPORT_VERSION = 1
# Bradley-Terry replicates each refit the model; past this many judgments the replicate count
# is scaled down, since intervals on that much data are narrow and refits only cost time.
BOOTSTRAP_BUDGET = 4_000_000
MIN_BOOT = 200


@dataclass(frozen=True)
class StudyTables:
    judgments: pd.DataFrame  # case_id, rater_id, arm_a, arm_b, outcome [, left_arm, right_arm]
    ratings: pd.DataFrame = field(default_factory=pd.DataFrame)  # case_id, rater_id, arm, ...
    flags: pd.DataFrame = field(default_factory=pd.DataFrame)  # case_id, rater_id, arm, kind
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)  # case_id, arm, layers
    truth: pd.DataFrame = field(default_factory=pd.DataFrame)  # case_id, stratum, layers


@dataclass(frozen=True)
class ReportOptions:
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    correction: str = "holm"
    alpha: float = 0.05
    seed: int = 0
    n_boot: int = 1000
    # ("preference", arm_a, arm_b) or ("likert", dimension, arm_a, arm_b)
    primary: tuple[str, ...] = ()


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses and frames become dicts and lists, NaN becomes None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, pd.DataFrame):
        if not isinstance(value.index, pd.RangeIndex):
            value = value.reset_index()
        return [_plain(row) for row in value.to_dict(orient="records")]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else round(number, 10)
    return value


def _boot_count(requested: int, rows: int) -> int:
    if rows <= 0:
        return requested
    return int(min(requested, max(MIN_BOOT, BOOTSTRAP_BUDGET // rows)))


def _preference(judgments: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    pairwise = preference.pairwise_win_rates(judgments)
    pairwise["sign_p_adjusted"] = paired.adjust_p_values(
        pairwise["sign_p"].to_numpy(), method=options.correction
    )
    section: dict[str, Any] = {
        "win_rates": preference.win_rates(judgments),
        "pairwise": pairwise,
    }
    try:
        fit = preference.bradley_terry(judgments)
        intervals = preference.bradley_terry_bootstrap(
            judgments, n_boot=_boot_count(options.n_boot, len(judgments)), seed=options.seed
        )
        section["bradley_terry"] = {
            "tie_parameter": fit.tie_parameter,
            "strengths": {arm: intervals[arm] for arm in fit.arms},
        }
    except ValueError as exc:
        section["bradley_terry"] = {"not_estimable": str(exc)}
    if {"left_arm", "right_arm"} <= set(judgments.columns):
        section["position_bias"] = preference.position_bias(
            judgments.assign(outcome=_positional(judgments))
        )
    return section


def _positional(judgments: pd.DataFrame) -> pd.Series:
    """Outcomes as left/right: "a" means arm_a won, whichever side arm_a was shown on."""
    a_on_left = judgments["left_arm"] == judgments["arm_a"]
    outcome = judgments["outcome"]
    return (
        outcome.mask((outcome == "a") & a_on_left, "left")
        .mask((outcome == "a") & ~a_on_left, "right")
        .mask((outcome == "b") & a_on_left, "right")
        .mask((outcome == "b") & ~a_on_left, "left")
    )


def _likert(ratings: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    arms = sorted(ratings["arm"].unique())
    dimensions = sorted(ratings["dimension"].unique())
    tests = paired.pairwise_likert_tests(
        ratings,
        arms,
        dimensions,
        correction=options.correction,
        n_boot=options.n_boot,
        seed=options.seed,
    )
    means = ratings.groupby(["dimension", "arm"])["score"].agg(["mean", "count"]).reset_index()
    friedman = {}
    if len(arms) >= 3:
        friedman = {d: paired.friedman(ratings, d, arms) for d in dimensions}
    return {"means": means, "pairwise": tests, "friedman": friedman}


def _hallucination(flags: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    arms = sorted(flags["arm"].unique())
    tests = []
    for arm_a, arm_b in combinations(arms, 2):
        result = paired.mcnemar_pairs(flags, arm_a, arm_b)
        tests.append({"arm_a": arm_a, "arm_b": arm_b, **dataclasses.asdict(result)})
    table = pd.DataFrame(tests)
    if not table.empty:
        table["p_adjusted"] = paired.adjust_p_values(
            table["p_value"].to_numpy(), method=options.correction
        )
    return {"rates": paired.hallucination_rates(flags), "pairwise": table}


def _agreement(tables: StudyTables) -> dict[str, Any]:
    section: dict[str, Any] = {}
    judgments = tables.judgments
    if judgments["rater_id"].nunique() >= 2:
        # One unit per (case, arm pair); outcomes coded as categories for nominal alpha.
        codes = {"a": 0.0, "b": 1.0, "tie": 2.0, "both_bad": 3.0}
        units = (
            judgments["case_id"].astype(str) + "|" + judgments["arm_a"] + "|" + judgments["arm_b"]
        )
        long = pd.DataFrame(
            {
                "unit": units,
                "rater": judgments["rater_id"],
                "value": judgments["outcome"].map(codes),
            }
        ).drop_duplicates(["unit", "rater"])
        section["preference_alpha_nominal"] = agreement.krippendorff_alpha(long, "nominal")
    ratings = tables.ratings
    if not ratings.empty and ratings["rater_id"].nunique() >= 2:
        section["likert_alpha_ordinal"] = {}
        for dimension, group in ratings.groupby("dimension"):
            units = group["case_id"].astype(str) + "|" + group["arm"]
            long = pd.DataFrame(
                {"unit": units, "rater": group["rater_id"], "value": group["score"].astype(float)}
            ).drop_duplicates(["unit", "rater"])
            section["likert_alpha_ordinal"][dimension] = agreement.krippendorff_alpha(
                long, "ordinal"
            )
    return section


def _primary(report: dict[str, Any], options: ReportOptions) -> dict[str, Any] | None:
    if not options.primary:
        return None
    kind, *rest = options.primary
    rows: Sequence[dict[str, Any]]
    if kind == "preference":
        arm_a, arm_b = sorted(rest)
        rows = report["preference"]["pairwise"]
        match = [r for r in rows if (r["arm_1"], r["arm_2"]) == (arm_a, arm_b)]
        p_key, adjusted_key = "sign_p", "sign_p_adjusted"
    else:
        dimension, arm_a, arm_b = rest
        rows = report.get("likert", {}).get("pairwise", [])
        match = [
            r
            for r in rows
            if r["dimension"] == dimension and {r["arm_a"], r["arm_b"]} == {arm_a, arm_b}
        ]
        p_key, adjusted_key = "p_value", "p_adjusted"
    if not match:
        return {"endpoint": list(options.primary), "not_estimable": "no data for this endpoint"}
    row = match[0]
    return {
        "endpoint": list(options.primary),
        "p_value": row[p_key],
        # The primary endpoint is pre-registered, so its own p-value is the confirmatory one;
        # the adjusted value shows where it stands within the exploratory family.
        "p_adjusted_in_family": row[adjusted_key],
        "significant": row[p_key] is not None and row[p_key] < options.alpha,
        "alpha": options.alpha,
        "row": row,
    }


def build_report(tables: StudyTables, options: ReportOptions) -> dict[str, Any]:
    """Every statistic of the study, JSON-ready; deterministic for the same tables and seed."""
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "options": {
            "correction": options.correction,
            "alpha": options.alpha,
            "seed": options.seed,
            "n_boot": options.n_boot,
        },
        "counts": {
            "judgments": len(tables.judgments),
            "ratings": len(tables.ratings),
            "flags": len(tables.flags),
            "raters": int(tables.judgments["rater_id"].nunique()) if len(tables.judgments) else 0,
            "cases": int(tables.judgments["case_id"].nunique()) if len(tables.judgments) else 0,
        },
    }
    if len(tables.judgments):
        report["preference"] = _preference(tables.judgments, options)
    if len(tables.ratings):
        report["likert"] = _likert(tables.ratings, options)
    if len(tables.flags):
        report["hallucination"] = _hallucination(tables.flags, options)
    if len(tables.judgments):
        report["agreement"] = _agreement(tables)
    if len(tables.predictions) and len(tables.truth) and options.layers:
        report["accuracy"] = accuracy.layer_accuracy(
            tables.predictions, tables.truth, options.layers
        )
    plain = _plain(report)
    plain["primary"] = _primary(plain, options)
    return plain


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False)
