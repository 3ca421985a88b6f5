"""Exports: tidy files, exact round trip to the report, safe cells, streaming, logging."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from clinic_eval.models import Assignment, Judgment, ResponseRating, User
from clinic_eval.results import exports, reporting, selectors
from clinic_eval.results.export_schema import SCHEMAS, decode, encode
from clinic_eval.results.exports import ExportFilters, RowCounter
from clinic_eval.statistics.report import report_json
from clinic_eval.web.csvsafe import csv_safe, csv_unescape
from tests.support.rated_study import rated_study

pytestmark = pytest.mark.django_db


def zip_bytes(built_study: object, filters: ExportFilters | None = None) -> bytes:
    counter = RowCounter()
    extras = lambda: reporting.summary_files(  # noqa: E731
        exports.study_report(built_study, filters)  # type: ignore[arg-type]
    )
    return b"".join(
        exports.stream_zip(built_study, filters or ExportFilters(), counter, extras)  # type: ignore[arg-type]
    )


@pytest.fixture
def built(coordinator: User) -> object:
    return rated_study(coordinator)


def test_the_report_from_the_database_and_from_its_export_agree_exactly(
    built: object, tmp_path: Path
) -> None:
    study = built.study  # type: ignore[attr-defined]
    from_db = report_json(exports.study_report(study))
    archive = tmp_path / "export.zip"
    archive.write_bytes(zip_bytes(study))
    frames, meta = reporting.read_export(archive)
    from_zip = report_json(reporting.report_from_frames(frames, meta))
    assert from_db == from_zip
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(archive).extractall(folder)
    from_folder = report_json(reporting.report_from_frames(*reporting.read_export(folder)))
    assert from_folder == from_db
    report = json.loads(from_db)
    assert report["counts"]["judgments"] > 20 and report["preference"]["win_rates"]
    assert report["likert"]["pairwise"] and report["hallucination"]["rates"]
    assert report["accuracy"] and report["study"]["interim"] is True


def test_every_file_has_its_documented_columns_and_one_row_per_unit(built: object) -> None:
    study = built.study  # type: ignore[attr-defined]
    archive = zipfile.ZipFile(io.BytesIO(zip_bytes(study)))
    names = set(archive.namelist())
    assert {s.name for s in SCHEMAS} | {"data_dictionary.csv", "study.json", "report.json"} <= names
    assert "summary/win_rates.csv" in names and "summary/likert_tests.csv" in names
    dictionary = list(csv.DictReader(io.StringIO(archive.read("data_dictionary.csv").decode())))
    documented = {(row["file"], row["column"]) for row in dictionary if row["column"]}
    tables = {}
    for schema in SCHEMAS:
        rows = list(csv.reader(io.StringIO(archive.read(schema.name).decode(), newline="")))
        assert rows[0] == schema.header
        assert {(schema.name, c) for c in schema.header} <= documented
        tables[schema.name] = rows[1:]
    assert len(tables["judgments.csv"]) == Judgment.objects.filter(study=study).count()
    ratings = ResponseRating.objects.filter(judgment__study=study).count()
    assert len(tables["ratings.csv"]) == ratings * 2  # two Likert dimensions
    assert len(tables["hallucinations.csv"]) == ratings
    assert len(tables["assignments.csv"]) == Assignment.objects.filter(study=study).count()
    assert len(tables["unblinding_key.csv"]) == 2 * len(tables["assignments.csv"])
    assert len(tables["judgment_edits.csv"]) == 2


def test_cells_are_neutralised_quoted_and_read_back_exactly(built: object) -> None:
    study = built.study  # type: ignore[attr-defined]
    text = zip_bytes(study)
    judgments = zipfile.ZipFile(io.BytesIO(text)).read("judgments.csv").decode()
    assert '"\'=HYPERLINK(""http://x"")"' in judgments, "a formula is neutralised and quoted"
    assert '"Two lines:\nfirst, then second"' in judgments, "embedded newlines are quoted"
    assert "\r\n" in judgments and "'-2 doses too many" in judgments
    rows = list(csv.DictReader(io.StringIO(judgments, newline="")))
    assert {decode("text", r["rationale"]) for r in rows} >= {
        '=HYPERLINK("http://x")',
        "Two lines:\nfirst, then second",
    }


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("text", "=1+2"), ("text", "'=x"), ("text", "''"), ("text", "'"), ("text", "-3"),
        ("text", "\tTab"), ("text", "plain"), ("text", ""), ("int", 7), ("float", 0.1 + 0.2),
        ("float", None), ("bool", True), ("json", {"a": ["=b", 1]}), ("json", -1),
    ],
)  # fmt: skip
def test_every_kind_of_cell_round_trips(kind: str, value: object) -> None:
    cell = encode(kind, value)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([cell])
    (read,) = next(csv.reader(io.StringIO(buffer.getvalue(), newline="")))
    assert decode(kind, read) == value
    if isinstance(cell, str) and cell:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_formula_escaping_is_its_own_inverse_on_awkward_text() -> None:
    for text in ["=", "'", "''", "'''=", "@x", "+", "'+1", "a=b", "\r=", "'\t"]:
        assert csv_unescape(str(csv_safe(text))) == text


def test_a_stratum_filter_limits_every_row_file(built: object) -> None:
    study = built.study  # type: ignore[attr-defined]
    first = study.cases.order_by("external_id").first()
    first.stratum = "Confusion"
    first.save()
    filters = ExportFilters(stratum="Confusion")
    frames = exports.study_frames(study, filters)
    assert set(frames["cases.csv"]["case_id"]) == {first.external_id}
    assert set(frames["judgments.csv"]["case_id"]) <= {first.external_id}
    assert exports.study_meta(study, filters)["filters"] == {"stratum": "Confusion"}


def test_the_csv_stream_comes_in_chunks_and_counts_rows(
    built: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "CHUNK_ROWS", 10)
    study = built.study  # type: ignore[attr-defined]
    counter = RowCounter()
    file = exports.FILES_BY_NAME["ratings.csv"]
    chunks = list(exports.stream_csv(file, study, ExportFilters(), counter))
    assert len(chunks) > 5
    assert counter.rows == ResponseRating.objects.filter(judgment__study=study).count() * 2


def test_study_report_prints_the_same_json_from_the_database_and_the_export(
    built: object, tmp_path: Path
) -> None:
    from django.core.management import call_command

    study = built.study  # type: ignore[attr-defined]
    archive = tmp_path / "export.zip"
    archive.write_bytes(zip_bytes(study))
    outputs = []
    for source in (["--study", str(study.pk)], ["--from-export", str(archive)]):
        out = io.StringIO()
        call_command("study_report", *source, "--format", "json", stdout=out)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] and json.loads(outputs[0])["counts"]["judgments"] > 0
    text = io.StringIO()
    call_command("study_report", "--study", str(study.pk), stdout=text)
    assert "INTERIM" in text.getvalue() and "Win rates" in text.getvalue()
    assert "SFT-arm-q7" in text.getvalue()


def test_study_report_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="is not a clinic-eval export"):
        call_command("study_report", "--from-export", str(tmp_path))


def test_downloads_stream_and_are_logged_with_who_what_filters_and_rows(
    built: object, coordinator: User
) -> None:
    from django.urls import reverse

    from clinic_eval.models import ExportLog
    from tests.conftest import logged_in

    study = built.study  # type: ignore[attr-defined]
    client = logged_in(coordinator)
    response = client.get(reverse("coordinator:study_export", args=[study.pk]))
    assert response.streaming and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert "judgments.csv" in archive.namelist()
    single = client.get(
        reverse("coordinator:study_export_file", args=[study.pk, "ratings.csv"]),
        {"stratum": "General"},
    )
    body = b"".join(single.streaming_content).decode()
    assert body.startswith("item_id,rater,case_id,arm,position,dimension,score,is_repeat\r\n")
    logs = list(ExportLog.objects.order_by("started_at"))
    assert [(log.what, log.user, log.via) for log in logs] == [
        ("zip", coordinator, "web"),
        ("ratings.csv", coordinator, "web"),
    ]
    assert logs[1].filters == {"stratum": "General"}
    assert logs[1].row_count == body.count("\r\n") - 1 and logs[1].finished_at is not None
    assert logs[0].row_count > logs[1].row_count
    missing = client.get(reverse("coordinator:study_export_file", args=[study.pk, "x.csv"]))
    assert missing.status_code == 404


def test_the_report_api_returns_the_study_report(built: object, coordinator: User) -> None:
    from django.urls import reverse
    from rest_framework.test import APIClient

    study = built.study  # type: ignore[attr-defined]
    client = APIClient()
    client.force_authenticate(coordinator)
    response = client.get(reverse("api:study_report", args=[study.pk]))
    assert response.status_code == 200
    assert response.content.decode() == report_json(exports.study_report(study))
    file = client.get(reverse("api:study_export_file", args=[study.pk, "cases.csv"]))
    assert b"".join(file.streaming_content).startswith(b"case_id,stratum,narrative")


def test_the_results_page_shows_every_panel_and_is_cached_until_data_change(
    built: object, coordinator: User
) -> None:
    from django.core.cache import cache
    from django.urls import reverse

    from tests.conftest import logged_in

    cache.clear()
    study = built.study  # type: ignore[attr-defined]
    client = logged_in(coordinator)
    url = reverse("coordinator:study_results", args=[study.pk])
    html = client.get(url).content.decode()
    markers = (
        'id="primary"', "Interim results", "data:image/svg+xml;base64,", "Win rate",
        "Fleiss", "Cohen's κ per pair", "Same rater, repeated items", "Length and preference",
    )  # fmt: skip
    for marker in markers:
        assert marker in html, marker
    assert html.count("data:image/svg+xml;base64,") >= 3
    import re

    def without_token(page: str) -> str:
        page = re.sub(r'"X-CSRFToken": "[^"]+"', "", page)
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page)

    before = selectors.study_data_version(study=study)
    assert without_token(client.get(url).content.decode()) == without_token(html)
    assert "By stratum" in client.get(url, {"stratum": "General"}).content.decode()
    judgment = Judgment.objects.filter(study=study).first()
    judgment.rationale = "edited"
    judgment.save()
    assert selectors.study_data_version(study=study) != before


def test_the_report_adds_strata_length_consistency_and_kappas(built: object) -> None:
    study = built.study  # type: ignore[attr-defined]
    report = exports.study_report(study)
    assert set(report["strata"]) == {"General"}
    whole = report["strata"]["General"]["preference"]
    assert whole["win_rates"] == report["preference"]["win_rates"]
    assert whole["clustered"]["win_rates"] == report["preference"]["clustered"]["win_rates"]
    assert report["length"]["decisive"] > 0
    consistency = report["consistency"]
    assert consistency["intra_rater_preference"][-1]["rater"] == "all"
    pairs = consistency["cohen_kappa_pairs"]
    assert {"rater_a", "rater_b", "kappa"} <= set(pairs[0]) and all(p["n"] > 0 for p in pairs)
    assert "fleiss_kappa_preference" in consistency


def test_best_of_n_studies_report_winning_shares(coordinator: User) -> None:
    built = rated_study(coordinator, mode="best_of_n", raters_per_item=1, n_cases=4)
    report = exports.study_report(built.study)
    shares = {row["arm"]: row for row in report["best_of_n"]["shares"]}
    assert set(shares) == {arm.label for arm in built.arms}
    judged = Judgment.objects.filter(study=built.study, assignment__is_repeat=False).count()
    assert sum(row["shown"] for row in shares.values()) == 3 * judged
    assert all(abs(row["chance_share"] - 1 / 3) < 1e-9 for row in shares.values())
    clustered = {row["arm"]: row for row in report["best_of_n"]["clustered"]}
    for arm, row in shares.items():
        assert clustered[arm]["share"] == row["share"] and clustered[arm]["shown"] == row["shown"]
        assert clustered[arm]["generalises_to"] == "physicians and cases like these"
    from django.urls import reverse

    from tests.conftest import logged_in

    page = logged_in(coordinator).get(reverse("coordinator:study_results", args=[built.study.pk]))
    assert "Best of N: winning share" in page.content.decode()
