"""spans.csv and adjudications.csv: in the zip, the per-file download, the API and the data
dictionary; cells neutralised; the report from the database and from the export identical on a
study with spans and adjudications; the report's span numbers against the database; the
results page's span and adjudication panels."""

from __future__ import annotations

import copy
import csv
import io
import json
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from clinic_eval.config import default_rubric, preference_choices
from clinic_eval.models import Adjudication, Judgment, ResponseSpan, User
from clinic_eval.rating import services
from clinic_eval.results import exports, reporting
from clinic_eval.results.export_schema import SCHEMAS, decode
from clinic_eval.results.exports import ExportFilters, RowCounter
from clinic_eval.spans.text import SpanInput
from clinic_eval.statistics.report import report_json
from tests.conftest import logged_in
from tests.support import rating_study
from tests.support.rating_study import ARM_LABELS, ORIGINAL_LABEL, OpenStudy, physicians

pytestmark = pytest.mark.django_db

LABELS = (*ARM_LABELS[:2], ORIGINAL_LABEL)
# Each arm's text: a formula-like opening (neutralised in the CSV), a passage twice ("IVF").
TEXTS = {
    LABELS[0]: "=cmd|' /C calc'!A0 first. Start IVF now.\nCheck AMH before IVF.",
    LABELS[1]: "Offer IUI & clomiphene for 3 cycles. Tubal flushing is not needed.",
    LABELS[2]: "+1 cycle of IVF, then review. Stop smoking.",
}
QUOTES = {
    LABELS[0]: [("=cmd|' /C calc'!A0 first.", None), ("IVF", 2), ("Start IVF now.", None)],
    LABELS[1]: [("Offer IUI & clomiphene", None), ("Tubal flushing is not needed.", None)],
    LABELS[2]: [("+1 cycle of IVF", None), ("Stop smoking.", None)],
}
SCHEMAS_BY_NAME = {schema.name: schema for schema in SCHEMAS}
CATEGORIES = ("factual_error", "reasoning_error", "unsupported_claim", "unsafe")
HARMS = ("none", "minor", "moderate", "severe")


@pytest.fixture
def spans_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    rubric = default_rubric()
    rubric["spans"] = {**rubric["spans"], "enabled": True}
    monkeypatch.setattr(rating_study, "default_rubric", lambda: copy.deepcopy(rubric))
    yield


def _spans(rng: random.Random, labels: list[str]) -> tuple[SpanInput, ...]:
    spans = []
    for position, label in enumerate(labels):
        for quote, occurrence in QUOTES[label]:
            if rng.random() < 0.45:
                spans.append(
                    SpanInput(
                        position=position,
                        category=rng.choice(CATEGORIES),
                        harm=rng.choice(HARMS),
                        quote=quote,
                        occurrence=occurrence,
                        note=rng.choice(["", "=SUM(A1:A9)", "dose?"]),
                    )
                )
        if rng.random() < 0.3:
            spans.append(
                SpanInput(position=position, category="omission", harm="moderate", note="-AMH")
            )
    return tuple(spans)


def spans_study(coordinator: User) -> OpenStudy:
    """Four physicians, two per item, every rater rating their queue with spans; the plan
    names all four as adjudicators and a preference primary endpoint."""
    raters = physicians(4, prefix="spanner")
    built = rating_study.open_study(
        coordinator=coordinator,
        raters=raters,
        n_cases=8,
        labels=LABELS,
        raters_per_item=2,
        texts=TEXTS,
        repeat_fraction=0.2,
        analysis_plan={
            "primary": {"kind": "preference", "arm_a": LABELS[0], "arm_b": LABELS[1]},
            "adjudication": {"enabled": True, "adjudicators": [r.username for r in raters]},
        },
    )
    study, rng = built.study, random.Random(11)
    arm_of = {r.pk: r.arm.label for r in built.responses}
    for rater in raters:
        while (seat := services.assignment_next(rater=rater, study=study)) is not None:
            labels = [arm_of[pk] for pk in seat.shown_order]
            data = services.JudgmentInput(
                preference=rng.choice(preference_choices(study.design, len(labels))),
                ratings=tuple(
                    services.RatingInput(
                        position=position,
                        scores={
                            "reasoning_clarity": rng.randint(1, 5),
                            "treatment_feasibility": rng.randint(1, 5),
                        },
                        hallucination="none",
                    )
                    for position in range(len(labels))
                ),
                spans=_spans(rng, labels),
            )
            services.judgment_record(assignment=seat, rater=rater, data=data)
    # Adjudicators resolve most items: the preference flips to the other response of the
    # first one's judgment, the scores are set, and a formula-like reason is kept verbatim.
    for index, adjudication in enumerate(Adjudication.objects.filter(study=study)):
        if index % 4 == 3:
            continue
        order = adjudication.shown_order
        adjudication.preference = ["A", "B", "tie"][index % 3]
        adjudication.preferred_response_id = order[index % 3] if index % 3 < 2 else None
        adjudication.ratings = [
            {
                "position": position,
                "response": pk,
                "scores": {"reasoning_clarity": 5 - position, "treatment_feasibility": 3},
                "hallucination": "none",
                "severity": "",
                "note": "",
            }
            for position, pk in enumerate(order)
        ]
        adjudication.reason = "=Because the dose is wrong"
        adjudication.status = Adjudication.Status.DONE
        adjudication.done_at = timezone.now()
        adjudication.save()
    return built


@pytest.fixture
def built(coordinator: User, spans_on: None) -> OpenStudy:
    return spans_study(coordinator)


def zip_bytes(study: Any) -> bytes:
    extras = lambda: reporting.summary_files(exports.study_report(study))  # noqa: E731
    return b"".join(exports.stream_zip(study, ExportFilters(), RowCounter(), extras))


def test_the_report_with_spans_and_adjudications_round_trips_exactly(
    built: OpenStudy, tmp_path: Path
) -> None:
    study = built.study
    assert ResponseSpan.objects.filter(judgment__study=study).count() > 20
    assert Adjudication.objects.filter(study=study, status="done").exists()
    from_db = report_json(exports.study_report(study))
    archive = tmp_path / "export.zip"
    archive.write_bytes(zip_bytes(study))
    from_zip = report_json(reporting.report_from_frames(*reporting.read_export(archive)))
    assert from_db == from_zip
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(archive).extractall(folder)
    assert report_json(reporting.report_from_frames(*reporting.read_export(folder))) == from_db
    report = json.loads(from_db)
    assert report["spans"]["shares"] and report["spans"]["pairwise"]
    assert report["spans"]["agreement"]["overlap_f1"][0]["key"] == "any"
    assert "spans" in {family["name"] for family in report["families"]}
    section = report["adjudication"]
    assert section["counts"]["triggered"] == Adjudication.objects.filter(study=study).count()
    done = Adjudication.objects.filter(study=study, status="done").count()
    assert section["counts"]["done"] == done
    assert section["sensitivity_primary"]["endpoint"] == report["primary"]["endpoint"]
    text = reporting.report_text(report)
    assert "Spans: " in text and "Adjudication: " in text and "adjudicated judgments" in text
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"spans.csv", "adjudications.csv", "summary/spans_clustered.csv"} <= names
    assert "summary/span_shares_clustered.csv" in names


def test_spans_csv_has_one_row_per_span_with_exact_ranges_and_safe_cells(built: OpenStudy) -> None:
    study = built.study
    archive = zipfile.ZipFile(io.BytesIO(zip_bytes(study)))
    text = archive.read("spans.csv").decode()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    stored = list(
        ResponseSpan.objects.filter(judgment__study=study).select_related(
            "response__arm", "judgment__assignment", "judgment__rater"
        )
    )
    assert len(rows) == len(stored)
    by_key = {
        (s.judgment.assignment.public_id, "ABC"[s.position], s.start, s.category, s.note): s
        for s in stored
    }
    for cells in rows:
        row = {c.name: decode(c.kind, cells[c.name]) for c in SCHEMAS_BY_NAME["spans.csv"].columns}
        start = row["start"]
        span = by_key[(row["item_id"], row["position"], start, row["category"], row["note"])]
        assert row["arm"] == span.response.arm.label
        assert row["rater"] == span.judgment.rater.username
        assert row["end"] == span.end
        if start is not None:
            assert row["quote"] == span.response.display_text[start : span.end]
        assert row["is_repeat"] == span.judgment.assignment.is_repeat
    assert "'=cmd|" in text and "'=SUM(A1:A9)" in text and "'-AMH" in text
    assert not any(cells["quote"].startswith(("=", "+", "-", "@")) for cells in rows)
    dictionary = archive.read("data_dictionary.csv").decode()
    for schema in SCHEMAS:
        if schema.name in ("spans.csv", "adjudications.csv"):
            for column in schema.header:
                assert f"{schema.name},{column}," in dictionary


def test_adjudications_csv_names_the_final_answer_by_arm(built: OpenStudy) -> None:
    study = built.study
    frames = exports.study_frames(study, ExportFilters())
    table = frames["adjudications.csv"]
    stored = {a.public_id: a for a in Adjudication.objects.filter(study=study)}
    assert len(table) == len(stored) > 0
    arm_of = {r.pk: r.arm.label for r in built.responses}
    for row in table.to_dict(orient="records"):
        adjudication = stored[row["adjudication_id"]]
        assert row["shown_arms"] == " | ".join(arm_of[pk] for pk in adjudication.shown_order)
        assert row["triggers"] == " | ".join(adjudication.triggers)
        assert row["status"] == adjudication.status
        if adjudication.status == "done":
            assert row["preferred_arm"] == arm_of.get(adjudication.preferred_response_id, "")
            first = arm_of[adjudication.shown_order[0]]
            assert row["ratings"][first]["scores"] == {
                "reasoning_clarity": 5,
                "treatment_feasibility": 3,
            }
            assert "response" not in row["ratings"][first]
            assert row["reason"] == "=Because the dose is wrong"
        else:
            assert row["ratings"] is None and pd.isna(row["done_at"])
    raw = zipfile.ZipFile(io.BytesIO(zip_bytes(study))).read("adjudications.csv").decode()
    assert "'=Because the dose is wrong" in raw


def test_the_report_span_shares_match_the_database(built: OpenStudy) -> None:
    study = built.study
    report = exports.study_report(study)
    judgments = Judgment.objects.filter(study=study, assignment__is_repeat=False)
    arm_of = {r.pk: r.arm.label for r in built.responses}
    case_of = {r.pk: r.case_id for r in built.responses}
    read: dict[str, set[tuple[int, int]]] = {}
    for judgment in judgments.select_related("assignment"):
        for pk in judgment.assignment.shown_order:
            read.setdefault(arm_of[pk], set()).add((case_of[pk], judgment.rater_id))
    marked: dict[str, set[tuple[int, int]]] = {}
    for span in ResponseSpan.objects.filter(judgment__in=judgments).select_related("judgment"):
        marked.setdefault(arm_of[span.response_id], set()).add(
            (case_of[span.response_id], span.judgment.rater_id)
        )
    shares = {row["arm"]: row for row in report["spans"]["shares"] if row["scope"] == "any"}
    for arm, units in read.items():
        assert shares[arm]["n"] == len(units)
        assert shares[arm]["count"] == len(marked.get(arm, set()))
        assert shares[arm]["rate"] == pytest.approx(len(marked.get(arm, set())) / len(units))


def test_single_files_download_and_the_api_lists_them(built: OpenStudy, coordinator: User) -> None:
    study = built.study
    client = logged_in(coordinator)
    response = client.get(reverse("coordinator:study_export_file", args=[study.pk, "spans.csv"]))
    body = b"".join(response.streaming_content).decode()
    assert body.startswith("item_id,rater,case_id,stratum,arm,position,sample_index,start,end,")
    api = APIClient()
    api.force_authenticate(coordinator)
    file = api.get(reverse("api:study_export_file", args=[study.pk, "adjudications.csv"]))
    assert b"".join(file.streaming_content).startswith(b"adjudication_id,case_id,stratum,")


def test_the_results_page_shows_the_span_and_adjudication_panels(
    built: OpenStudy, coordinator: User
) -> None:
    from django.core.cache import cache

    cache.clear()
    study = built.study
    html = logged_in(coordinator).get(reverse("coordinator:study_results", args=[study.pk]))
    page = html.content.decode()
    for marker in (
        'id="spans"', 'id="span-shares"', 'id="span-harms"', 'id="span-pairwise"',
        "Spans per 1,000 words", 'id="span-overlap"', "Fleiss", 'id="adjudication"',
        'id="adjudication-sensitivity"', 'id="primary-adjudicated"', "Unsupported claim",
    ):  # fmt: skip
        assert marker in page, marker
    # A done adjudication changes the cache key, so the page is recomputed.
    from clinic_eval.results import selectors

    before = selectors.study_data_version(study=study)
    pending = Adjudication.objects.filter(study=study, status="pending").first()
    assert pending is not None
    pending.status, pending.done_at = "done", timezone.now()
    pending.save()
    assert selectors.study_data_version(study=study) != before
