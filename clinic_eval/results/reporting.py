"""The study report from tidy export tables: one path for the database and for an export.

Pure (pandas, no ORM). ``exports.study_report`` feeds it frames built from the export row
sources; ``study_report --from-export`` feeds it the same files read back from CSV. Both go
through ``tables_from_frames`` and ``options_from_meta``, so they print identical numbers.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import pandas as pd

from clinic_eval.results import annotation_tables
from clinic_eval.statistics import agreement, crossed, preference, rubric, rubric_agreement
from clinic_eval.statistics.report import ReportOptions, StudyTables, build_report
from clinic_eval.statistics.report import plain_json as plain

RUBRIC_FILES = ("rubric_criteria.csv", "rubric_grades.csv", "grader_verdicts.csv")
REPORT_FILES = (
    "judgments.csv",
    "ratings.csv",
    "hallucinations.csv",
    "responses.csv",
    "cases.csv",
    *RUBRIC_FILES,
    *annotation_tables.SPAN_FILES,
)
# Exports made before criterion rubrics (or spans) existed lack these; they read back empty.
OPTIONAL_FILES = frozenset((*RUBRIC_FILES, *annotation_tables.SPAN_FILES))
MODEL_GRADER_PREFIX = "model:"


def _pivot_layers(frame: pd.DataFrame, source: str, layers: Mapping[str, Any]) -> pd.DataFrame:
    decisions = frame[source].tolist()
    columns = {
        layer: [(d or {}).get(layer) if isinstance(d, dict) else None for d in decisions]
        for layer in layers
    }
    return pd.DataFrame(columns, index=frame.index)


def _one_score_per_response(ratings: pd.DataFrame) -> pd.DataFrame:
    """A rater who met one response in two comparisons (SFT vs GRPO and SFT vs physician on
    the same case) scored it twice; the statistics pair one score per (case, rater, arm), so
    the two are averaged."""
    keys = ["case_id", "rater", "arm", "dimension"]
    if ratings.empty:
        return ratings[[*keys, "score"]].reset_index(drop=True)
    return ratings.groupby(keys, sort=True)["score"].mean().reset_index()[[*keys, "score"]]


def _judgment_table(judgments: pd.DataFrame) -> pd.DataFrame:
    judgments = judgments[(judgments["mode"] == "pairwise") & ~judgments["is_repeat"].astype(bool)]
    columns = ["case_id", "rater", "arm_a", "arm_b", "outcome", "left_arm", "right_arm"]
    return judgments[columns].rename(columns={"rater": "rater_id"}).reset_index(drop=True)


def _rating_table(ratings: pd.DataFrame) -> pd.DataFrame:
    ratings = ratings[~ratings["is_repeat"].astype(bool)]
    return _one_score_per_response(ratings).rename(columns={"rater": "rater_id"})


def tables_from_frames(frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> StudyTables:
    """The statistics' input tables. Repeat showings are left out (they measure consistency)."""
    layers = meta.get("decision_layers", {})
    flags = frames["hallucinations.csv"]
    flags = flags[~flags["is_repeat"].astype(bool)]
    responses = frames["responses.csv"]
    responses = responses[responses["sample_index"] == 0]
    cases = frames["cases.csv"]
    predictions = pd.concat(
        [
            responses[["case_id", "arm"]].reset_index(drop=True),
            _pivot_layers(responses, "parsed_decision", layers).reset_index(drop=True),
        ],
        axis=1,
    )
    truth = pd.concat(
        [
            cases[["case_id", "stratum"]].reset_index(drop=True),
            _pivot_layers(cases, "ground_truth", layers).reset_index(drop=True),
        ],
        axis=1,
    )
    spans, span_units = annotation_tables.span_tables(frames, meta)
    extra: dict[str, pd.DataFrame] = {}
    if annotation_tables.adjudication_enabled(meta):
        adjudications = annotation_tables.adjudication_table(frames)
        judged, rated = annotation_tables.adjudicated_frames(frames, adjudications)
        extra = {
            "adjudications": adjudications,
            "adjudicated_judgments": _judgment_table(judged),
            "adjudicated_ratings": _rating_table(rated),
        }
    return StudyTables(
        judgments=_judgment_table(frames["judgments.csv"]),
        ratings=_rating_table(frames["ratings.csv"]),
        flags=flags[["case_id", "rater", "arm", "kind"]]
        .rename(columns={"rater": "rater_id"})
        .reset_index(drop=True),
        predictions=predictions,
        truth=truth,
        spans=spans,
        span_units=span_units,
        **extra,
    )


def options_from_meta(meta: Mapping[str, Any], *, n_boot: int = 1000) -> ReportOptions:
    plan = meta.get("analysis_plan", {})
    primary = plan.get("primary", {})
    endpoint: tuple[str, ...] = ()
    if primary.get("arm_a") and primary.get("arm_b"):
        if primary.get("kind") == "likert" and primary.get("dimension"):
            endpoint = ("likert", primary["dimension"], primary["arm_a"], primary["arm_b"])
        elif primary.get("kind") == "preference":
            endpoint = ("preference", primary["arm_a"], primary["arm_b"])
    return ReportOptions(
        layers=meta.get("decision_layers", {}),
        correction=plan.get("correction", "holm"),
        alpha=plan.get("alpha", 0.05),
        seed=meta.get("study", {}).get("seed", 0),
        n_boot=n_boot,
        primary=endpoint,
        spans=annotation_tables.span_options(meta),
        adjudication=annotation_tables.adjudication_enabled(meta),
    )


def _consistency_and_agreement(judgments: pd.DataFrame) -> dict[str, Any]:
    """Intra-rater consistency on repeated items, Fleiss' and Cohen's kappa on preferences."""
    section: dict[str, Any] = {}
    choice = judgments["preferred_arm"].where(
        judgments["preferred_arm"] != "", judgments["preference"]
    )
    long = pd.DataFrame(
        {
            "unit": judgments["case_id"] + "|" + judgments["arm_set"],
            "rater": judgments["rater"],
            "value": choice,
            "repeat": judgments["is_repeat"].astype(int),
        }
    )
    if long["repeat"].any():
        section["intra_rater_preference"] = agreement.intra_rater_consistency(long)
    first = long[long["repeat"] == 0].drop(columns="repeat")
    if first["rater"].nunique() >= 2:
        pairs = agreement.pairwise_cohen_kappa(first)
        section["cohen_kappa_pairs"] = pairs[pairs["n"] > 0].reset_index(drop=True)
        try:
            section["fleiss_kappa_preference"] = agreement.fleiss_kappa(
                agreement.fleiss_table(first).to_numpy()
            )
        except ValueError as exc:
            section["fleiss_kappa_preference"] = {"not_estimable": str(exc)}
    return section


def report_extras(frames: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """What the tidy files allow beyond the core tables: best-of-N shares, per-stratum win
    rates, length and preference, intra-rater consistency and kappas."""
    judgments = frames["judgments.csv"]
    first = judgments[~judgments["is_repeat"].astype(bool)]
    extras: dict[str, Any] = {}
    best = first[first["mode"] == "best_of_n"]
    if len(best):
        rows = pd.DataFrame(
            {
                "case_id": best["case_id"].to_numpy(),
                "rater_id": best["rater"].to_numpy(),
                "arms": [tuple(shown.split(" | ")) for shown in best["shown_arms"]],
                "winner": [arm or None for arm in best["preferred_arm"]],
            }
        )
        extras["best_of_n"] = {
            "clustered": crossed.best_of_n_shares(rows),
            "shares": preference.best_of_n_shares(rows[["arms", "winner"]]),
        }
    pairwise = first[first["mode"] == "pairwise"].rename(columns={"rater": "rater_id"})
    if len(pairwise):
        columns = ["case_id", "rater_id", "arm_a", "arm_b", "outcome"]
        # Each stratum as a sub-report of the same shape as the whole one.
        extras["strata"] = {
            str(stratum): {
                "preference": {
                    "clustered": {"win_rates": crossed.win_rates(group[columns])},
                    "win_rates": preference.win_rates(group[columns]),
                }
            }
            for stratum, group in pairwise.groupby("stratum", sort=True)
        }
        responses = frames["responses.csv"]
        shown = responses[responses["sample_index"] == 0].set_index(["case_id", "arm"])
        length = shown["display_length"]

        def lengths(arms: pd.Series) -> list[Any]:
            keys = pd.MultiIndex.from_arrays([pairwise["case_id"], arms])
            return length.reindex(keys).tolist()

        with_lengths = pd.DataFrame(
            {
                "case_id": pairwise["case_id"].to_numpy(),
                "rater_id": pairwise["rater_id"].to_numpy(),
                "arm_a": pairwise["arm_a"].to_numpy(),
                "arm_b": pairwise["arm_b"].to_numpy(),
                "length_a": lengths(pairwise["arm_a"]),
                "length_b": lengths(pairwise["arm_b"]),
                "outcome": pairwise["outcome"].to_numpy(),
            }
        )
        extras["length"] = preference.length_preference(with_lengths)
        extras["length_adjusted"] = crossed.length_adjusted(with_lengths)
    # Rubric judgments carry no preference ("none" throughout): their agreement is per criterion.
    preferences = judgments[judgments["mode"] != "rubric"]
    if len(preferences):
        extras["consistency"] = _consistency_and_agreement(preferences)
    return extras


def _response_key(frame: pd.DataFrame) -> pd.Series:
    return (
        frame["case_id"].astype(str)
        + " | "
        + frame["arm"].astype(str)
        + " | "
        + frame["sample_index"].astype(str)
    )


def rubric_tables(frames: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rubric statistics' inputs: verified criteria, and every verdict on them (physicians'
    first showings, and each grader model's parseable verdicts as ``model:<grader>``)."""
    criteria = frames["rubric_criteria.csv"]
    criteria = criteria[criteria["verified"].astype(bool)]
    criteria = criteria[["criterion_id", "case_id", "points", "axis", "level"]]
    physician = frames["rubric_grades.csv"]
    physician = physician[~physician["is_repeat"].astype(bool)]
    model = frames["grader_verdicts.csv"]
    model = model[model["met"].notna()]
    columns = ["response_id", "case_id", "stratum", "arm", "criterion_id", "grader", "met"]
    grades = pd.concat(
        [
            physician.assign(response_id=_response_key(physician), grader=physician["rater"]),
            model.assign(
                response_id=_response_key(model), grader=MODEL_GRADER_PREFIX + model["grader"]
            ),
        ],
        ignore_index=True,
    ).reindex(columns=columns)
    grades = grades[grades["criterion_id"].isin(criteria["criterion_id"])]
    grades["met"] = grades["met"].astype(bool)
    return criteria.reset_index(drop=True), grades.reset_index(drop=True)


class _BootOptions(TypedDict):
    """The bootstrap settings every rubric statistic takes."""

    n_boot: int
    seed: int


def rubric_report(
    frames: Mapping[str, pd.DataFrame], options: ReportOptions
) -> dict[str, Any] | None:
    """Rubric scores per arm (physician consensus and each grader model), per axis and
    stratum, paired arm comparisons, and agreement; None when the study graded no rubric."""
    criteria, grades = rubric_tables(frames)
    if criteria.empty or grades.empty:
        return None
    boot: _BootOptions = {"n_boot": options.n_boot, "seed": options.seed}
    scores = rubric.response_scores(criteria, grades, model_prefix=MODEL_GRADER_PREFIX)
    axes = rubric.response_axis_scores(criteria, grades, model_prefix=MODEL_GRADER_PREFIX)
    graders = sorted(g for g in grades["grader"].unique() if g.startswith(MODEL_GRADER_PREFIX))
    section: dict[str, Any] = {
        "criteria": len(criteria),
        "physician_verdicts": int((~grades["grader"].str.startswith(MODEL_GRADER_PREFIX)).sum()),
        "model_verdicts": int(grades["grader"].str.startswith(MODEL_GRADER_PREFIX).sum()),
        "arm_scores": rubric.arm_scores(scores, **boot),
        "axis_scores": rubric.axis_scores(axes, **boot),
        "paired": rubric.paired_arm_comparisons(scores, correction=options.correction, **boot),
        "physician_agreement": rubric_agreement.physician_agreement(
            criteria, grades, model_prefix=MODEL_GRADER_PREFIX
        ),
        "graders": {
            grader.removeprefix(MODEL_GRADER_PREFIX): {
                "arm_scores": rubric.arm_scores(scores, kind="model", grader=grader, **boot),
            }
            for grader in graders
        },
    }
    if graders:
        section["grader_agreement"] = rubric_agreement.grader_agreement(
            criteria, grades, model_prefix=MODEL_GRADER_PREFIX
        )
    return section


def report_from_frames(
    frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """The full report, with what it was computed from: status (interim?), hash, filters."""
    study = meta.get("study", {})
    options = options_from_meta(meta)
    report = build_report(tables_from_frames(frames, meta), options)
    report.update(plain(report_extras(frames)))
    rubric = rubric_report(frames, options)
    if rubric is not None:
        report["rubric"] = plain(rubric)
    report["study"] = {
        "title": study.get("title", ""),
        "status": study.get("status", ""),
        "interim": study.get("status") != "closed",
        "design_hash": meta.get("design_hash", ""),
        "filters": meta.get("filters", {}),
    }
    return report


# --- Reading an export back -----------------------------------------------------------------


def _read_member(source: Path, name: str) -> str:
    if source.is_dir():
        return (source / name).read_text(encoding="utf-8")
    with zipfile.ZipFile(source) as archive:
        return archive.read(name).decode("utf-8")


def read_export(source: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The frames and study.json of an export (a folder or the zip itself), typed as exported."""
    from clinic_eval.results.export_schema import FILE_COLUMNS, decode

    meta = json.loads(_read_member(source, "study.json"))
    frames = {}
    for name in REPORT_FILES:
        columns = FILE_COLUMNS[name]
        try:
            text = _read_member(source, name)
        except (FileNotFoundError, KeyError):
            if name not in OPTIONAL_FILES:
                raise
            frames[name] = pd.DataFrame(columns=[c.name for c in columns])
            continue
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        if header != [c.name for c in columns]:
            raise ValueError(f"{name}: unexpected columns {header}")
        kinds = [c.kind for c in columns]
        rows = [
            tuple(decode(kind, cell) for kind, cell in zip(kinds, row, strict=True))
            for row in reader
        ]
        frames[name] = pd.DataFrame.from_records(rows, columns=header)
    return frames, meta


def report_text(report: Mapping[str, Any]) -> str:
    """A plain-text summary for the terminal; the JSON holds everything."""
    lines = []
    study = report.get("study", {})
    lines.append(f"{study.get('title', 'Study')}  [{study.get('status', '')}]")
    if study.get("interim"):
        lines.append("INTERIM: the study is still open; these numbers will change.")
    counts = report.get("counts", {})
    rubric = report.get("rubric")
    if rubric and not counts.get("judgments") and not counts.get("ratings"):
        lines.append(
            f"verified criteria {rubric['criteria']}, physician verdicts "
            f"{rubric['physician_verdicts']}, grader-model verdicts {rubric['model_verdicts']}"
        )
    else:
        names = ("judgments", "ratings", "flags", "raters", "cases")
        lines.append(", ".join(f"{name} {counts.get(name, 0)}" for name in names))
    inference = report.get("inference") or {}
    if inference:
        lines.append(
            f"Inference: {inference.get('estimator')}; generalises to "
            f"{inference.get('generalises_to')}."
        )
    primary = report.get("primary")
    if primary:
        lines.append("")
        lines.append(f"Primary endpoint: {' '.join(map(str, primary.get('endpoint', [])))}")
        if "not_estimable" in primary:
            lines.append(f"  not estimable: {primary['not_estimable']} (no p-value)")
        else:
            lines.append(
                f"  estimate {_num(primary.get('estimate'))} [{_num(primary.get('low'))}, "
                f"{_num(primary.get('high'))}], t on {_num(primary.get('df'))} df, "
                f"p = {_num(primary.get('p_value'))}, adjusted within family = "
                f"{_num(primary.get('p_adjusted_in_family'))}, alpha = {primary.get('alpha')}"
            )
        sensitivity = primary.get("sensitivity")
        if sensitivity:
            lines.append(
                f"  sensitivity ({sensitivity['estimator']}, conditional on these raters and "
                f"cases): p = {_num(sensitivity.get('p_value'))}"
            )
    families = report.get("families") or []
    if families:
        lines.append(
            "Families: "
            + "; ".join(f"{f['name']} {f['tests']} tests ({f['correction']})" for f in families)
        )
    preference = report.get("preference", {})
    clustered_pairs = (preference.get("clustered") or {}).get("pairwise") or []
    if clustered_pairs:
        lines += ["", "Preference among decisive judgments (clustered by case and rater)"]
        for row in clustered_pairs:
            lines.append(
                f"  {row['arm_1']} vs {row['arm_2']}: {_pct(row['share_1'])} "
                f"[{_pct(row['share_1_low'])}, {_pct(row['share_1_high'])}] "
                f"p = {_num(row.get('share_1_p_value'))}, adjusted = "
                f"{_num(row.get('share_1_p_adjusted'))}"
                + (
                    f"  ({row['share_1_not_estimable']})"
                    if row.get("share_1_not_estimable")
                    else ""
                )
            )
    clustered_wins = (preference.get("clustered") or {}).get("win_rates") or []
    if clustered_wins:
        lines += ["", "Win rates (strict; ties and both-unacceptable are not wins; clustered)"]
        for row in clustered_wins:
            lines.append(
                f"  {row['arm']:<24} {_pct(row['win_rate'])} "
                f"[{_pct(row['win_rate_low'])}, {_pct(row['win_rate_high'])}]"
            )
    likert = report.get("likert", {})
    if likert.get("clustered"):
        lines += ["", "Likert mean differences (clustered by case and rater)"]
        for row in likert["clustered"]:
            lines.append(
                f"  {row['dimension']:<24} {row['arm_a']} - {row['arm_b']}: "
                f"{_num(row.get('mean_difference'))} [{_num(row.get('mean_difference_low'))}, "
                f"{_num(row.get('mean_difference_high'))}] p = "
                f"{_num(row.get('mean_difference_p_value'))}, adjusted = "
                f"{_num(row.get('mean_difference_p_adjusted'))}"
            )
    lines += ["", "Sensitivity: per-judgment tests, conditional on these raters and cases"]
    for row in preference.get("pairwise") or []:
        lines.append(f"  sign test {row['arm_1']} vs {row['arm_2']}: p = {_num(row.get('sign_p'))}")
    for row in likert.get("pairwise") or []:
        lines.append(
            f"  Wilcoxon {row['dimension']} {row['arm_a']} vs {row['arm_b']}: "
            f"p = {_num(row.get('p_value'))}"
        )
    lines += _rubric_lines(report.get("rubric"))
    lines += _span_lines(report.get("spans"), report.get("adjudication"))
    accuracy = [row for row in report.get("accuracy") or [] if row.get("stratum") == "all"]
    if accuracy:
        lines += ["", "Automatic accuracy against ground truth (all strata)"]
        for row in accuracy:
            lines.append(
                f"  {row['layer']:<16} {row['arm']:<24} {_pct(row['accuracy'])}  "
                f"macro-F1 {_num(row.get('macro_f1'))}  n={row['n']}"
            )
    return "\n".join(lines) + "\n"


def _rubric_lines(rubric: Mapping[str, Any] | None) -> list[str]:
    if not rubric:
        return []

    def scores(title: str, rows: list[Mapping[str, Any]]) -> list[str]:
        return [f"  {title}"] + [
            f"    {row['arm']:<22} {_pct(row['score'])} "
            f"[{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]  n={row['n_responses']}"
            for row in rows
            if row.get("stratum") == "all"
        ]

    lines = ["", "Rubric scores (HealthBench: met points / positive points, mean clipped to 0-1)"]
    lines += scores("physician consensus", rubric.get("arm_scores") or [])
    for grader, section in (rubric.get("graders") or {}).items():
        lines += scores(f"grader {grader}", section.get("arm_scores") or [])
    for row in rubric.get("paired") or []:
        if row.get("axis") is None:
            lines.append(
                f"  {row['arm_a']} vs {row['arm_b']}: difference "
                f"{_num(row.get('mean_difference'))}, p = {_num(row.get('p_value'))}, "
                f"adjusted = {_num(row.get('p_adjusted'))}"
            )
    for row in rubric.get("grader_agreement") or []:
        if row.get("scope") == "all":
            lines.append(
                f"  grader {row.get('grader')} vs physician majority: kappa "
                f"{_fixed(row.get('kappa'))}, macro-F1 {_fixed(row.get('macro_f1'))}, "
                f"n={row.get('n')}"
            )
    return lines


def _span_lines(
    spans: Mapping[str, Any] | None, adjudication: Mapping[str, Any] | None
) -> list[str]:
    lines: list[str] = []
    if spans:
        counts = spans.get("counts") or {}
        lines.append("")
        lines.append(
            f"Spans: {counts.get('spans', 0)} on {counts.get('responses_marked', 0)} of "
            f"{counts.get('responses', 0)} rated responses (share with a span, clustered)"
        )
        for row in spans.get("shares") or []:
            if row["scope"] == "any":
                lines.append(
                    f"  {row['arm']:<24} {_pct(row['rate'])} "
                    f"[{_pct(row['rate_low'])}, {_pct(row['rate_high'])}]"
                )
    if adjudication:
        counts = adjudication.get("counts") or {}
        sensitivity = adjudication.get("sensitivity_primary") or {}
        lines.append("")
        lines.append(
            f"Adjudication: {counts.get('triggered', 0)} sent, {counts.get('done', 0)} done, "
            f"{counts.get('changed', 0)} changed the primary endpoint's item"
        )
        if sensitivity:
            lines.append(
                f"  primary on adjudicated judgments (sensitivity): estimate "
                f"{_num(sensitivity.get('estimate'))}, p = {_num(sensitivity.get('p_value'))}"
            )
    return lines


def _fixed(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    # The report rounds to 10 decimals, so a zero means "below 5e-11".
    return "< 1e-10" if value == 0 else f"{value:.4g}"


def _pct(value: Any) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}%"


SUMMARY_TABLES = {
    "summary/preference_clustered.csv": ("preference", "clustered", "pairwise"),
    "summary/win_rates_clustered.csv": ("preference", "clustered", "win_rates"),
    "summary/likert_clustered.csv": ("likert", "clustered"),
    "summary/hallucination_rates_clustered.csv": ("hallucination", "clustered", "rates"),
    "summary/hallucination_clustered.csv": ("hallucination", "clustered", "pairwise"),
    "summary/win_rates.csv": ("preference", "win_rates"),
    "summary/pairwise_preference.csv": ("preference", "pairwise"),
    "summary/likert_means.csv": ("likert", "means"),
    "summary/likert_tests.csv": ("likert", "pairwise"),
    "summary/hallucination_rates.csv": ("hallucination", "rates"),
    "summary/hallucination_tests.csv": ("hallucination", "pairwise"),
    "summary/span_shares_clustered.csv": ("spans", "shares"),
    "summary/spans_clustered.csv": ("spans", "pairwise"),
    "summary/spans_per_1000_words.csv": ("spans", "per_1000_words"),
    "summary/accuracy.csv": ("accuracy", None),
}


def summary_files(report: Mapping[str, Any]) -> dict[str, str]:
    """The report's tables as CSVs, plus report.json, for the export zip."""
    from clinic_eval.statistics.report import report_json
    from clinic_eval.web.csvsafe import csv_safe

    files = {"report.json": report_json(report)}
    for name, path in SUMMARY_TABLES.items():
        rows: Any = report
        for key in path:
            if key is None:
                break
            rows = rows.get(key) if isinstance(rows, Mapping) else None
        if not isinstance(rows, list) or not rows:
            continue
        header = list(rows[0])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [csv_safe(json.dumps(v) if isinstance(v, dict | list) else v) for v in row.values()]
            )
        files[name] = buffer.getvalue()
    return files
