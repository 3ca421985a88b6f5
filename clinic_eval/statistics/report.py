"""The whole study report from DataFrames: the one function `study_report` will call.

It takes the tidy tables an export holds (judgments, Likert ratings, hallucination flags,
decoded predictions and ground truth) and returns plain JSON-ready data with sorted keys, NaN
as ``None``, and every random step seeded, so the same tables always give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from clinic_eval.statistics import accuracy, agreement, paired, preference

REPORT_VERSION = 1
# Bradley-Terry replicates each refit the model; past this many judgments the replicate count
# is scaled down, since intervals on that much data are narrow and refits only cost time.
BOOTSTRAP_BUDGET = 4_000_000
MIN_BOOT = 200
# Report sections computed at once on large studies (the target machine has two cores). Below
# PARALLEL_FROM judgments the sections take well under a second and contending for the GIL
# cost more than the second core gave (0.6 s became 0.9 s at 10^4 judgments).
REPORT_THREADS = 2
PARALLEL_FROM = 100_000


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
        bootstrap: dict[str, int] = {}
        # Skipped replicates are counted into the report, where a reader of the numbers sees them.
        intervals = preference.bradley_terry_bootstrap(
            judgments,
            n_boot=_boot_count(options.n_boot, len(judgments)),
            seed=options.seed,
            point=fit,
            diagnostics=bootstrap,
        )
        section["bradley_terry"] = {
            "tie_parameter": fit.tie_parameter,
            "strengths": {arm: intervals[arm] for arm in fit.arms},
            "bootstrap": bootstrap,
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
    tests, friedman = paired.likert_family(
        ratings,
        arms,
        dimensions,
        correction=options.correction,
        n_boot=options.n_boot,
        seed=options.seed,
    )
    means = ratings.groupby(["dimension", "arm"])["score"].agg(["mean", "count"]).reset_index()
    return {"means": means, "pairwise": tests, "friedman": friedman}


def _hallucination(flags: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    arms = sorted(flags["arm"].unique())
    rates, table = paired.hallucination_family(flags, arms)
    if not table.empty:
        table["p_adjusted"] = paired.adjust_p_values(
            table["p_value"].to_numpy(), method=options.correction
        )
    return {"rates": rates, "pairwise": table}


def _unit_codes(case_id: pd.Series, *parts: pd.Series) -> np.ndarray:
    """Integer unit ids that sort and compare like the strings ``"case|part|part..."``.

    Krippendorff's alpha sums over units in their sorted order, so the units keep the order
    of those strings (which the report has always used) without building and sorting a
    string per judgment: when no case id contains "|", ``"c|rest"`` strings order by
    ``c + "|"`` first and by ``rest`` within a case. Otherwise the strings are built as before.
    """
    cases, case_values = pd.factorize(case_id)
    case_text = pd.Index(case_values).astype(str)
    factorized = [pd.factorize(part) for part in parts]
    missing = (cases < 0).any() or any((codes < 0).any() for codes, _ in factorized)
    # numpy's fixed-width strings drop trailing NULs, so such ids also take the slow path.
    odd = any("|" in text or "\x00" in text for text in case_text.tolist())
    if missing or odd:
        text = case_id.astype(str)
        for part in parts:
            text = text + "|" + part
        return pd.factorize(text, sort=True)[0]
    sizes = tuple(len(uniques) for _, uniques in factorized)
    rest_codes, combinations = pd.factorize(
        np.ravel_multi_index([codes for codes, _ in factorized], sizes)
    )
    rest_text = [
        "|".join(str(uniques[k]) for (_, uniques), k in zip(factorized, combination, strict=True))
        for combination in zip(*np.unravel_index(combinations, sizes), strict=True)
    ]
    # Equal strings get equal ranks, as they would be one unit.
    _, case_rank = np.unique((case_text + "|").to_numpy(dtype=str), return_inverse=True)
    distinct_rest, rest_rank = np.unique(np.array(rest_text, dtype=str), return_inverse=True)
    if any(text.endswith("\x00") for text in rest_text):
        raise ValueError("arm names must not end in a NUL character")
    return case_rank.reshape(-1)[cases] * len(distinct_rest) + rest_rank.reshape(-1)[rest_codes]


def _first_per_rater(unit: np.ndarray, rater: np.ndarray) -> np.ndarray:
    """Mask of each rater's first row per unit (``drop_duplicates(["unit", "rater"])``).

    ``rater`` holds rater codes from ``pd.factorize(..., use_na_sentinel=False)``.
    """
    key = pd.Series(unit * (int(rater.max(initial=0)) + 1) + rater)
    return ~key.duplicated().to_numpy()


def _agreement(tables: StudyTables) -> dict[str, Any]:
    section: dict[str, Any] = {}
    judgments = tables.judgments
    if judgments["rater_id"].nunique() >= 2:
        # One unit per (case, arm pair); outcomes coded as categories for nominal alpha.
        codes = {"a": 0.0, "b": 1.0, "tie": 2.0, "both_bad": 3.0}
        unit = _unit_codes(judgments["case_id"], judgments["arm_a"], judgments["arm_b"])
        rater, _ = pd.factorize(judgments["rater_id"], use_na_sentinel=False)
        first = _first_per_rater(unit, rater)
        value = judgments["outcome"].map(codes).to_numpy(dtype=float, na_value=np.nan)
        section["preference_alpha_nominal"] = agreement.krippendorff_alpha_coded(
            unit[first], value[first], "nominal"
        )
    ratings = tables.ratings
    if not ratings.empty and ratings["rater_id"].nunique() >= 2:
        section["likert_alpha_ordinal"] = {}
        # Unit codes keep their order and equality on any subset, so one coding serves every
        # dimension.
        unit = _unit_codes(ratings["case_id"], ratings["arm"])
        rater, _ = pd.factorize(ratings["rater_id"], use_na_sentinel=False)
        value = ratings["score"].to_numpy(dtype=float, na_value=np.nan)
        dimension_code, dimensions = pd.factorize(ratings["dimension"], sort=True)
        for code, dimension in enumerate(dimensions):
            rows = np.flatnonzero(dimension_code == code)
            first = rows[_first_per_rater(unit[rows], rater[rows])]
            section["likert_alpha_ordinal"][dimension] = agreement.krippendorff_alpha_coded(
                unit[first], value[first], "ordinal"
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
    sections: dict[str, Callable[[], Any]] = {}
    if len(tables.judgments):
        sections["preference"] = partial(_preference, tables.judgments, options)
    if len(tables.ratings):
        sections["likert"] = partial(_likert, tables.ratings, options)
    if len(tables.flags):
        sections["hallucination"] = partial(_hallucination, tables.flags, options)
    if len(tables.judgments):
        sections["agreement"] = partial(_agreement, tables)
    if len(tables.predictions) and len(tables.truth) and options.layers:
        sections["accuracy"] = partial(
            accuracy.layer_accuracy, tables.predictions, tables.truth, options.layers
        )
    # The sections are independent pure functions and much of their numpy/pandas work releases
    # the GIL, so they share the cores of the machine; every random step has its own seeded
    # generator, so the result does not depend on which thread runs what.
    workers = REPORT_THREADS if len(tables.judgments) >= PARALLEL_FROM else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(section) for name, section in sections.items()}
        for name, future in futures.items():
            report[name] = future.result()
    plain = _plain(report)
    plain["primary"] = _primary(plain, options)
    return plain


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False)
