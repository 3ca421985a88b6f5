"""Tidy CSV exports of a study, streamed with constant memory, and the typed columns behind them.

Each file is a list of typed columns and a generator of rows read from the database in
chunks. ``study_report`` builds its tables from the same generators (``clinic_eval.reporting``),
and ``--from-export`` decodes the CSVs back into the same values, so both print the same
numbers. The files and their columns are documented in docs/exports.md and in the
``data_dictionary.csv`` inside every zip.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from django.db.models import Q, QuerySet
from django.utils import timezone

from clinic_eval.audit import selectors as audit_selectors
from clinic_eval.config import position_letter
from clinic_eval.models import (
    Adjudication,
    Assignment,
    Case,
    CriterionGrade,
    GraderVerdict,
    Judgment,
    JudgmentEdit,
    Response,
    ResponseRating,
    ResponseSpan,
    Study,
)
from clinic_eval.results import reporting
from clinic_eval.results.export_schema import SCHEMAS, Column, FileSchema, encode
from clinic_eval.results.reporting import REPORT_FILES
from clinic_eval.rubrics import selectors as rubrics_selectors
from clinic_eval.statistics.report import StudyTables

CHUNK_ROWS = 5_000
EXPORT_VERSION = 1


@dataclass(frozen=True)
class ExportFilters:
    stratum: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"stratum": self.stratum} if self.stratum else {}


RowSource = Callable[[Study, ExportFilters], Iterator[tuple]]


@dataclass(frozen=True)
class ExportFile:
    schema: FileSchema
    rows: RowSource

    @property
    def name(self) -> str:
        return self.schema.name

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.schema.columns

    @property
    def header(self) -> list[str]:
        return self.schema.header


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _cases(study: Study, filters: ExportFilters) -> QuerySet[Case]:
    cases = Case.objects.filter(study=study)
    return cases.filter(stratum=filters.stratum) if filters.stratum else cases


def _case_filter(prefix: str, filters: ExportFilters) -> Q:
    return Q(**{f"{prefix}stratum": filters.stratum}) if filters.stratum else Q()


def _arm_of_response(study: Study) -> dict[int, str]:
    return dict(Response.objects.filter(case__study=study).values_list("pk", "arm__label"))


def _chunked(queryset: QuerySet, *fields: str) -> Iterator[tuple]:
    return queryset.values_list(*fields).iterator(chunk_size=CHUNK_ROWS)


# --- Row sources ----------------------------------------------------------------------------


def judgment_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    arms = _arm_of_response(study)
    mode = study.design_config.mode
    judgments = Judgment.objects.filter(
        _case_filter("assignment__comparison__case__", filters), study=study
    ).order_by("assignment_id")
    for row in _chunked(
        judgments,
        "assignment__public_id",
        "rater__username",
        "assignment__comparison__case__external_id",
        "assignment__comparison__case__stratum",
        "assignment__comparison__arm_set",
        "assignment__shown_order",
        "assignment__is_repeat",
        "preference",
        "preferred_response_id",
        "rationale",
        "seconds_on_item",
        "revision",
        "created_at",
        "updated_at",
    ):
        (item, rater, case, stratum, arm_set, shown, repeat, preference, preferred) = row[:9]
        shown_arms = [arms[pk] for pk in shown]
        preferred_arm = arms.get(preferred, "") if preferred else ""
        arm_a = arm_b = outcome = left = right = ""
        if mode == "pairwise" and len(shown_arms) == 2:
            arm_a, arm_b = sorted(shown_arms)
            left, right = shown_arms
            outcome = {"tie": "tie", "none": "both_bad"}.get(preference) or (
                "a" if preferred_arm == arm_a else "b"
            )
        yield (
            item, rater, case, stratum, mode, arm_set, " | ".join(shown_arms), preference,
            preferred_arm, arm_a, arm_b, outcome, left, right, repeat, *row[9:],
        )  # fmt: skip


def rating_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    dimensions = [d.key for d in study.rubric_config.dimensions]
    ratings = ResponseRating.objects.filter(
        _case_filter("judgment__assignment__comparison__case__", filters),
        judgment__study=study,
    ).order_by("judgment_id", "position")
    for item, rater, case, arm, position, scores, repeat in _chunked(
        ratings,
        "judgment__assignment__public_id",
        "judgment__rater__username",
        "judgment__assignment__comparison__case__external_id",
        "response__arm__label",
        "position",
        "scores",
        "judgment__assignment__is_repeat",
    ):
        letter = position_letter(position)
        for dimension in dimensions:
            if dimension in scores:
                yield item, rater, case, arm, letter, dimension, scores[dimension], repeat


def flag_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    flags = (
        ResponseRating.objects.filter(
            _case_filter("judgment__assignment__comparison__case__", filters),
            judgment__study=study,
        )
        .exclude(hallucination="")
        .order_by("judgment_id", "position")
    )
    for item, rater, case, arm, position, kind, severity, note, repeat in _chunked(
        flags,
        "judgment__assignment__public_id",
        "judgment__rater__username",
        "judgment__assignment__comparison__case__external_id",
        "response__arm__label",
        "position",
        "hallucination",
        "severity",
        "note",
        "judgment__assignment__is_repeat",
    ):
        yield item, rater, case, arm, position_letter(position), kind, severity, note, repeat


def span_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    spans = ResponseSpan.objects.filter(
        _case_filter("judgment__assignment__comparison__case__", filters),
        judgment__study=study,
    ).order_by("judgment__assignment_id", "position", "start", "id")
    for row in _chunked(
        spans,
        "judgment__assignment__public_id",
        "judgment__rater__username",
        "response__case__external_id",
        "response__case__stratum",
        "response__arm__label",
        "position",
        "response__sample_index",
        "start",
        "end",
        "quote",
        "category",
        "harm",
        "case_field",
        "note",
        "judgment__assignment__is_repeat",
    ):
        yield (*row[:5], position_letter(row[5]), *row[6:])


def adjudication_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    """One row per adjudication; the final ratings keyed by arm (stored per on-screen position,
    each with the response it resolves to)."""
    arms = _arm_of_response(study)
    adjudications = Adjudication.objects.filter(
        _case_filter("comparison__case__", filters), study=study
    ).order_by("created_at", "id")
    for row in _chunked(
        adjudications,
        "public_id",
        "comparison__case__external_id",
        "comparison__case__stratum",
        "comparison__arm_set",
        "shown_order",
        "triggers",
        "adjudicator__username",
        "status",
        "created_at",
        "done_at",
        "preference",
        "preferred_response_id",
        "ratings",
        "reason",
    ):
        (public_id, case, stratum, arm_set, shown, triggers, adjudicator) = row[:7]
        status, created, done, preference, preferred, ratings, reason = row[7:]
        shown_arms = [arms[pk] for pk in shown]
        final = {
            arms[entry["response"]]: {
                k: v for k, v in entry.items() if k not in ("position", "response")
            }
            for entry in ratings or []
            if entry.get("response") in arms
        }
        yield (
            public_id, case, stratum, arm_set, " | ".join(shown_arms), " | ".join(triggers),
            _text(adjudicator), status, created, done, preference,
            arms.get(preferred, "") if preferred else "", final if ratings else None, reason,
        )  # fmt: skip


def response_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    responses = Response.objects.filter(
        _case_filter("case__", filters), case__study=study
    ).order_by("case__external_id", "arm__label", "sample_index")
    for row in _chunked(
        responses,
        "case__external_id",
        "arm__label",
        "arm__kind",
        "sample_index",
        "review",
        "display_text",
        "parsed_decision",
        "parse_problems",
        "leak_flags",
        "provenance",
        "raw_text",
    ):
        yield (*row[:5], len(row[5]), *row[5:])


def case_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    yield from _chunked(
        _cases(study, filters).order_by("external_id"),
        "external_id",
        "stratum",
        "narrative",
        "fields",
        "ground_truth",
        "original_decision",
        "original_author_ref",
    )


def assignment_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    arms = _arm_of_response(study)
    seats = Assignment.objects.filter(
        _case_filter("comparison__case__", filters), study=study
    ).order_by("rater__username", "queue_position", "id")
    for row in _chunked(
        seats,
        "public_id",
        "rater__username",
        "comparison__case__external_id",
        "comparison__case__stratum",
        "comparison__arm_set",
        "shown_order",
        "queue_position",
        "is_repeat",
        "status",
        "first_shown_at",
        "done_at",
    ):
        item, rater, case, stratum, arm_set, shown = row[:6]
        yield (item, _text(rater), case, stratum, arm_set, " | ".join(arms[pk] for pk in shown),
               *row[6:])  # fmt: skip


def unblinding_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    arms = _arm_of_response(study)
    samples = dict(Response.objects.filter(case__study=study).values_list("pk", "sample_index"))
    seats = Assignment.objects.filter(
        _case_filter("comparison__case__", filters), study=study
    ).order_by("id")
    for item, case, shown in _chunked(
        seats, "public_id", "comparison__case__external_id", "shown_order"
    ):
        for position, pk in enumerate(shown):
            yield item, position_letter(position), case, arms[pk], samples[pk]


def edit_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    edits = JudgmentEdit.objects.filter(
        _case_filter("judgment__assignment__comparison__case__", filters),
        judgment__study=study,
    ).order_by("edited_at", "id")
    yield from _chunked(
        edits,
        "judgment__assignment__public_id",
        "editor__username",
        "edited_at",
        "reason",
        "before",
        "after",
    )


def criteria_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    by_case, by_stratum = rubrics_selectors.rubrics_by_scope(study=study)
    for case_pk, case_id, stratum in (
        _cases(study, filters).order_by("external_id").values_list("pk", "external_id", "stratum")
    ):
        rubric = by_case.get(case_pk) or by_stratum.get(stratum)
        if rubric is None:
            continue
        scope = "case" if rubric.case_id else "stratum"
        for criterion in rubric.criteria.all():
            # rubrics_by_scope sets ``usable`` on every rubric it returns.
            yield (
                case_id, stratum, criterion.pk, scope, rubric.version, rubric.source,
                rubric.usable, criterion.points, criterion.axis, criterion.level,  # type: ignore[attr-defined]
                criterion.text, criterion.tags,
            )  # fmt: skip


def grade_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    grades = CriterionGrade.objects.filter(
        _case_filter("response__case__", filters), judgment__study=study
    ).order_by("judgment__assignment_id", "position", "criterion__position", "criterion_id")
    yield from _chunked(
        grades,
        "judgment__assignment__public_id",
        "judgment__rater__username",
        "response__case__external_id",
        "response__case__stratum",
        "response__arm__label",
        "position",
        "response__sample_index",
        "criterion_id",
        "met",
        "note",
        "judgment__assignment__is_repeat",
    )


def verdict_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    verdicts = GraderVerdict.objects.filter(
        _case_filter("response__case__", filters), response__case__study=study
    ).order_by("grader__label", "response__case__external_id", "response__arm__label", "id")
    yield from _chunked(
        verdicts,
        "grader__label",
        "response__case__external_id",
        "response__case__stratum",
        "response__arm__label",
        "response__sample_index",
        "criterion_id",
        "met",
        "attempts",
        "error",
        "provenance",
        "raw_output",
    )


def audit_rows(study: Study, filters: ExportFilters) -> Iterator[tuple]:
    # Events are not about one case, so the case filters do not apply.
    events = audit_selectors.study_audit_events(study=study).order_by("at", "id")
    yield from _chunked(
        events,
        "at",
        "actor_username",
        "action",
        "target",
        "summary",
        "before",
        "after",
        "ip_address",
        "via",
    )


ROW_SOURCES: dict[str, RowSource] = {
    "judgments.csv": judgment_rows,
    "ratings.csv": rating_rows,
    "hallucinations.csv": flag_rows,
    "spans.csv": span_rows,
    "responses.csv": response_rows,
    "cases.csv": case_rows,
    "assignments.csv": assignment_rows,
    "unblinding_key.csv": unblinding_rows,
    "judgment_edits.csv": edit_rows,
    "adjudications.csv": adjudication_rows,
    "rubric_criteria.csv": criteria_rows,
    "rubric_grades.csv": grade_rows,
    "grader_verdicts.csv": verdict_rows,
    "audit_trail.csv": audit_rows,
}
FILES = tuple(ExportFile(schema, ROW_SOURCES[schema.name]) for schema in SCHEMAS)
FILES_BY_NAME = {file.name: file for file in FILES}


def study_meta(study: Study, filters: ExportFilters) -> dict[str, Any]:
    """What an export needs to reproduce the analysis: design, rubric, plan, layers, seed.

    In the canonical form study.json holds (keys sorted), so the database path and the export
    path iterate decision layers, dimensions and arms in the same order.
    """
    meta = {
        "export_version": EXPORT_VERSION,
        "study": {"title": study.title, "status": study.status, "seed": study.seed},
        "design_hash": study.design_hash,
        "design": study.design,
        "rubric": study.rubric,
        "analysis_plan": study.analysis_plan,
        "decision_layers": study.decision_layers,
        "filters": filters.as_dict(),
    }
    return json.loads(json.dumps(meta, sort_keys=True))


# --- Writing --------------------------------------------------------------------------------


class _Sink:
    """A write-only, unseekable file: zipfile streams into it, the view drains it."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def close(self) -> None:
        # Part of the file protocol only: zipfile never closes a file object it was given.
        pass

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def encoded_rows(file: ExportFile, rows: Iterable[tuple]) -> Iterator[list[Any]]:
    kinds = [column.kind for column in file.columns]
    for row in rows:
        yield [encode(kind, value) for kind, value in zip(kinds, row, strict=True)]


@dataclass
class RowCounter:
    rows: int = 0


def stream_csv(
    file: ExportFile, study: Study, filters: ExportFilters, counter: RowCounter
) -> Iterator[bytes]:
    """One CSV, in chunks of a few thousand rows: memory stays flat in the row count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(file.header)
    for index, row in enumerate(encoded_rows(file, file.rows(study, filters)), start=1):
        writer.writerow(row)
        counter.rows += 1
        if index % CHUNK_ROWS == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def data_dictionary_rows() -> Iterator[list[str]]:
    yield ["file", "column", "type", "description"]
    for file in FILES:
        yield [file.name, "", "", file.schema.description]
        for column in file.columns:
            yield [file.name, column.name, column.kind, column.description]


def stream_zip(
    study: Study,
    filters: ExportFilters,
    counter: RowCounter,
    extras: Callable[[], dict[str, str]] | None = None,
) -> Iterator[bytes]:
    """Every file, the data dictionary, study.json and ``extras()`` (summary tables) in a zip."""
    sink = _Sink()
    stamp = timezone.now().timetuple()[:6]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:

        def member(name: str) -> zipfile.ZipInfo:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            return info

        for file in FILES:
            with archive.open(member(file.name), "w", force_zip64=True) as handle:
                for chunk in stream_csv(file, study, filters, counter):
                    handle.write(chunk)
                    yield sink.drain()
        dictionary = io.StringIO()
        csv.writer(dictionary, lineterminator="\r\n").writerows(data_dictionary_rows())
        archive.writestr(member("data_dictionary.csv"), dictionary.getvalue())
        meta = json.dumps(study_meta(study, filters), sort_keys=True, indent=2, ensure_ascii=False)
        archive.writestr(member("study.json"), meta)
        for name, content in (extras() if extras else {}).items():
            archive.writestr(member(name), content)
            yield sink.drain()
    yield sink.drain()


def study_frames(study: Study, filters: ExportFilters) -> dict[str, pd.DataFrame]:
    """The report's input files as frames, typed exactly as an export would decode them."""
    return {
        name: pd.DataFrame.from_records(
            list(FILES_BY_NAME[name].rows(study, filters)), columns=FILES_BY_NAME[name].header
        )
        for name in REPORT_FILES
    }


def study_report(study: Study, filters: ExportFilters | None = None) -> dict[str, Any]:
    filters = filters or ExportFilters()
    return reporting.report_from_frames(study_frames(study, filters), study_meta(study, filters))


def study_analysis(study: Study, filters: ExportFilters) -> tuple[dict[str, Any], StudyTables]:
    """The report and the tables it was computed from (the results page plots the ratings)."""
    frames = study_frames(study, filters)
    meta = study_meta(study, filters)
    return reporting.report_from_frames(frames, meta), reporting.tables_from_frames(frames, meta)
