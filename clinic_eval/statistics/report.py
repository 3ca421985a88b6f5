"""The whole study report from DataFrames: the one function `study_report` will call.

It takes the tidy tables an export holds (judgments, Likert ratings, hallucination flags,
decoded predictions and ground truth) and returns plain JSON-ready data with sorted keys, NaN
as ``None``, and every random step seeded, so the same tables always give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from clinic_eval.statistics import (
    accuracy,
    adjudicated,
    agreement,
    bradley_terry,
    clustered,
    crossed,
    hallucination,
    model_based,
    paired,
    preference,
    spans,
    two_way_bootstrap,
)
from clinic_eval.statistics.spans import SpanOptions

REPORT_VERSION = 2
# Bradley-Terry replicates each refit the model; past this many judgments the replicate count
# is scaled down, since intervals on that much data are narrow and refits only cost time.
BOOTSTRAP_BUDGET = 4_000_000
MIN_BOOT = 200
TWO_WAY_REPLICATES = 1000
TWO_WAY_FULL_UP_TO = 100_000
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
    # Spans (first showings) and every response a rater read while spans were on (spans.py).
    spans: pd.DataFrame = field(default_factory=pd.DataFrame)  # case_id, rater_id, arm, ...
    span_units: pd.DataFrame = field(default_factory=pd.DataFrame)  # ..., words, showings
    # One row per item sent to adjudication, and the tables with its answers (adjudicated.py).
    adjudications: pd.DataFrame = field(default_factory=pd.DataFrame)
    adjudicated_judgments: pd.DataFrame = field(default_factory=pd.DataFrame)
    adjudicated_ratings: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class ReportOptions:
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    correction: paired.Correction = "holm"
    alpha: float = 0.05
    seed: int = 0
    n_boot: int = 1000
    # ("preference", arm_a, arm_b) or ("likert", dimension, arm_a, arm_b)
    primary: tuple[str, ...] = ()
    spans: SpanOptions | None = None  # the rubric's categories, when it enables spans
    adjudication: bool = False  # the plan's adjudication rule is enabled


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


def plain_json(value: Any) -> Any:
    """``value`` as the report stores it: dataclasses and frames as plain JSON, NaN as None."""
    return _plain(value)


def _boot_count(requested: int, rows: int) -> int:
    if rows <= 0:
        return requested
    return int(min(requested, max(MIN_BOOT, BOOTSTRAP_BUDGET // rows)))


def _adjusted(table: pd.DataFrame, column: str, options: ReportOptions) -> None:
    table[column.removesuffix("_value") + "_adjusted"] = paired.adjust_p_values(
        table[column].to_numpy(dtype=float), method=options.correction
    )


def _preference(judgments: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    coded = crossed.code_judgments(judgments)
    crossed_pairs = crossed.preference_pairs(coded)
    _adjusted(crossed_pairs, "share_1_p_value", options)
    _adjusted(crossed_pairs, "tie_half_1_p_value", options)
    pairwise = preference.pairwise_win_rates(judgments, codes=coded.codes)
    pairwise["sign_p_adjusted"] = paired.adjust_p_values(
        pairwise["sign_p"].to_numpy(), method=options.correction
    )
    section: dict[str, Any] = {
        "clustered": {
            "pairwise": crossed_pairs,
            "win_rates": crossed.win_rates(coded),
        },
        # Sensitivity rows: the per-judgment analysis, conditional on these raters and cases.
        "win_rates": preference.win_rates(judgments, codes=coded.codes),
        "pairwise": pairwise,
        "conditional": {
            "estimator": "exact sign test and Wilson intervals, each judgment independent",
            "generalises_to": clustered.CONDITIONAL,
        },
    }
    if {"left_arm", "right_arm"} <= set(judgments.columns):
        positional = judgments.assign(outcome=_positional(judgments))
        section["position_bias"] = preference.position_bias(positional)
        section["position_bias_clustered"] = crossed.position_bias(judgments, coded=coded)
    return section


def _bradley_terry(judgments: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    coded = crossed.code_judgments(judgments)
    try:
        fit = bradley_terry.bradley_terry(judgments, codes=coded.codes)
    except ValueError as exc:
        return {"not_estimable": str(exc)}
    # 1,000 replicates up to 10^5 judgments; beyond, fewer (at least 200), each bound with its
    # Monte Carlo error beside it. The interval's width is analytic either way.
    replicates = (
        max(options.n_boot, TWO_WAY_REPLICATES)
        if len(judgments) <= TWO_WAY_FULL_UP_TO
        else _boot_count(TWO_WAY_REPLICATES, len(judgments))
    )
    two_way = two_way_bootstrap.bradley_terry_two_way(
        coded, fit, n_boot=replicates, seed=options.seed
    )
    section: dict[str, Any] = {
        "tie_parameter": fit.tie_parameter,
        "estimator": two_way.get("estimator"),
        "generalises_to": two_way.get("generalises_to"),
    }
    if "strengths" in two_way:
        for key in ("strengths", "bootstrap", "case_clustered", "independent"):
            section[key] = two_way[key]
    else:
        section["strengths"] = {
            arm: {"estimate": value, "low": None, "high": None}
            for arm, value in zip(fit.arms, fit.strengths, strict=True)
        }
        section["interval_not_estimable"] = two_way.get("not_estimable")
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
    tables = paired.score_tables(ratings, arms, dimensions)
    tests, friedman = paired.likert_family(
        ratings,
        arms,
        dimensions,
        correction=options.correction,
        tables=tables,
        n_boot=options.n_boot,
        seed=options.seed,
    )
    crossed_tests = crossed.likert_pairs(ratings, arms, dimensions, tables=tables)
    if not crossed_tests.empty:
        _adjusted(crossed_tests, "mean_difference_p_value", options)
        _adjusted(crossed_tests, "net_benefit_p_value", options)
    means = ratings.groupby(["dimension", "arm"])["score"].agg(["mean", "count"]).reset_index()
    return {
        "means": means,
        "clustered": crossed_tests,
        "pairwise": tests,
        "friedman": friedman,
        "conditional": {
            "estimator": "Wilcoxon signed-rank over (case, rater) pairs, each pair independent; "
            "Friedman as a descriptive omnibus",
            "generalises_to": clustered.CONDITIONAL,
        },
    }


def _hallucination(flags: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    arms = sorted(flags["arm"].unique())
    units = hallucination.flag_units(flags)
    rates, table = hallucination.hallucination_family(flags, arms, units=units)
    if not table.empty:
        table["p_adjusted"] = paired.adjust_p_values(
            table["p_value"].to_numpy(), method=options.correction
        )
    crossed_rates, crossed_pairs = crossed.hallucination(flags, arms, units=units)
    if not crossed_pairs.empty:
        _adjusted(crossed_pairs, "difference_p_value", options)
    return {
        "clustered": {"rates": crossed_rates, "pairwise": crossed_pairs},
        "rates": rates,
        "pairwise": table,
        "conditional": {
            "estimator": "exact McNemar and Wilson intervals, each rated response independent",
            "generalises_to": clustered.CONDITIONAL,
        },
    }


def unit_codes(case_id: pd.Series, *parts: pd.Series) -> np.ndarray:
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
        unit = unit_codes(judgments["case_id"], judgments["arm_a"], judgments["arm_b"])
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
        unit = unit_codes(ratings["case_id"], ratings["arm"])
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
    """The pre-registered endpoint from the clustered analysis, with its per-judgment
    sensitivity row beside it."""
    if not options.primary:
        return None
    kind, *rest = options.primary
    endpoint = list(options.primary)
    if kind == "preference":
        arm_a, arm_b = sorted(rest)
        preference_section = report.get("preference", {})
        rows = (preference_section.get("clustered") or {}).get("pairwise") or []
        naive_rows = preference_section.get("pairwise") or []
        match = [r for r in rows if (r["arm_1"], r["arm_2"]) == (arm_a, arm_b)]
        naive = [r for r in naive_rows if (r["arm_1"], r["arm_2"]) == (arm_a, arm_b)]
        prefix, naive_key = "share_1", "sign_p"
    else:
        dimension, arm_a, arm_b = rest
        likert = report.get("likert", {})

        def same(r: Mapping[str, Any]) -> bool:
            return r["dimension"] == dimension and {r["arm_a"], r["arm_b"]} == {arm_a, arm_b}

        match = [r for r in likert.get("clustered") or [] if same(r)]
        naive = [r for r in likert.get("pairwise") or [] if same(r)]
        prefix, naive_key = "mean_difference", "p_value"
    if not match:
        return {"endpoint": endpoint, "not_estimable": "no data for this endpoint"}
    row = match[0]
    sensitivity = (
        {
            "p_value": naive[0][naive_key],
            "estimator": "sign test" if kind == "preference" else "Wilcoxon signed-rank",
            "generalises_to": clustered.CONDITIONAL,
            "row": naive[0],
        }
        if naive
        else None
    )
    block: dict[str, Any] = {
        "endpoint": endpoint,
        "estimator": row["estimator"],
        "generalises_to": row["generalises_to"],
        "alpha": options.alpha,
        "row": row,
        "sensitivity": sensitivity,
    }
    if row.get(f"{prefix}_not_estimable"):
        return {**block, "not_estimable": row[f"{prefix}_not_estimable"]}
    p_value = row[f"{prefix}_p_value"]
    estimate, low, high = row[prefix], row[f"{prefix}_low"], row[f"{prefix}_high"]
    # Read in the registered direction, "arm_a against arm_b", whichever order the row has.
    registered_first = options.primary[1] if kind == "preference" else options.primary[2]
    row_first = row["arm_1"] if kind == "preference" else row["arm_a"]
    if registered_first != row_first and None not in (estimate, low, high):
        if kind == "preference":
            estimate, low, high = (round(1 - v, 10) for v in (estimate, high, low))
        else:
            estimate, low, high = (round(-v, 10) for v in (estimate, high, low))
    return {
        **block,
        "direction": " vs ".join(options.primary[1:] if kind == "preference" else rest[1:]),
        "estimate": estimate,
        "low": low,
        "high": high,
        "df": row[f"{prefix}_df"],
        "p_value": p_value,
        # The primary endpoint is pre-registered, so its own p-value is the confirmatory one;
        # the adjusted value shows where it stands within its family.
        "p_adjusted_in_family": row[f"{prefix}_p_adjusted"],
        "significant": p_value is not None and p_value < options.alpha,
    }


def primary_from(
    judgments: pd.DataFrame, ratings: pd.DataFrame, options: ReportOptions
) -> dict[str, Any] | None:
    """The primary endpoint's clustered analysis on these tables, as ``primary`` reports it
    (the adjudication section runs it on the adjudicated judgments)."""
    kind = options.primary[0] if options.primary else ""
    section: dict[str, Any] = {}
    if kind == "preference" and len(judgments):
        section["preference"] = _preference(judgments, options)
    elif kind == "likert" and len(ratings):
        section["likert"] = _likert(ratings, options)
    return _primary(_plain(section), options)


def _families(report: Mapping[str, Any], options: ReportOptions) -> list[dict[str, Any]]:
    """The multiplicity families the report corrects within, stated as the plan does."""
    families = []
    preference_rows = ((report.get("preference") or {}).get("clustered") or {}).get("pairwise")
    if preference_rows:
        families.append(
            {
                "name": "preference",
                "tests": len(preference_rows),
                "members": "every arm pair, decisive share (and separately the tie-as-half rate)",
            }
        )
    likert_rows = (report.get("likert") or {}).get("clustered")
    if likert_rows:
        families.append(
            {
                "name": "likert",
                "tests": len(likert_rows),
                "members": "every arm pair on every dimension, mean difference (and separately "
                "the net benefit)",
            }
        )
    hallucination_rows = ((report.get("hallucination") or {}).get("clustered") or {}).get(
        "pairwise"
    )
    if hallucination_rows:
        families.append(
            {
                "name": "hallucination",
                "tests": len(hallucination_rows),
                "members": "every arm pair, difference in the share of flagged responses",
            }
        )
    span_rows = (report.get("spans") or {}).get("pairwise")
    if span_rows:
        families.append(
            {
                "name": "spans",
                "tests": len(span_rows),
                "members": "every arm pair, for any span and for each category: difference in "
                "the share of responses with a span",
            }
        )
    for family in families:
        family["correction"] = options.correction
    return families


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
        # Bradley-Terry is its own section so that on large studies it runs beside the rest.
        sections["bradley_terry"] = partial(_bradley_terry, tables.judgments, options)
    if len(tables.ratings):
        sections["likert"] = partial(_likert, tables.ratings, options)
    if len(tables.flags):
        sections["hallucination"] = partial(_hallucination, tables.flags, options)
    if len(tables.judgments):
        sections["agreement"] = partial(_agreement, tables)
    if options.primary:
        sections["model_based"] = partial(
            model_based.model_based,
            tables.judgments,
            tables.ratings,
            options.primary,
            options.alpha,
        )
    if options.spans is not None or len(tables.spans):
        adjust = partial(paired.adjust_p_values, method=options.correction)
        sections["spans"] = partial(
            spans.span_report, tables.spans, tables.span_units, options.spans, adjust
        )
    if options.adjudication:
        sections["adjudication"] = partial(
            adjudicated.adjudication_report,
            tables.adjudications,
            (tables.judgments, tables.ratings),
            (tables.adjudicated_judgments, tables.adjudicated_ratings),
            options.primary,
            partial(primary_from, options=options),
        )
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
    if "bradley_terry" in report:
        report["preference"]["bradley_terry"] = report.pop("bradley_terry")
    companion = report.pop("model_based", None)
    plain: dict[str, Any] = _plain(report)
    plain["primary"] = _primary(plain, options)
    if plain["primary"] is not None:
        plain["primary"]["model_based"] = _plain(companion)
    plain["families"] = _families(plain, options)
    plain["inference"] = {
        "estimator": clustered.ESTIMATOR,
        "generalises_to": clustered.GENERALISES_TO,
        "sensitivity": clustered.CONDITIONAL,
    }
    return plain


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False)
