"""Imports through the service and the management commands, against PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from pytest_django.fixtures import Settings as SettingsWrapper

from clinic_eval.errors import DomainError
from clinic_eval.imports import services as imports_services
from clinic_eval.models import Arm, Case, DataImport, Response, Study, User
from clinic_eval.studies import services
from tests.support.factories import ArmFactory, CaseFactory, StudyFactory

pytestmark = pytest.mark.django_db


def case_line(case_id: str, **overrides: object) -> str:
    record = {
        "case_id": case_id,
        "stratum": "General",
        "narrative": f"Narrative of {case_id}.",
        "ground_truth": {"art_strategy": "IVF"},
        "original_decision": {"text": f"IVF for {case_id}.", "author": "dr-01"},
    }
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def run_import(
    study: Study, content: bytes, *, kind: str = "cases", name: str = "f.jsonl"
) -> DataImport:
    data_import = imports_services.data_import_create(
        study=study, kind=kind, filename=name, content=content, created_by=None
    )
    return imports_services.data_import_run(import_id=data_import.pk)


def table_counts() -> dict[str, int]:
    return {
        "cases": Case.objects.count(),
        "responses": Response.objects.count(),
        "arms": Arm.objects.count(),
    }


def test_a_good_file_imports_every_case(study: Study, physician: User) -> None:
    content = "\n".join(case_line(f"C-{i}") for i in range(1, 6)).encode()
    data_import = run_import(study, content)
    assert data_import.status == DataImport.Status.SUCCEEDED
    assert data_import.row_count == 5
    assert data_import.content is None, "the uploaded bytes are not kept after the import"
    assert sorted(study.cases.values_list("external_id", flat=True)) == [
        f"C-{i}" for i in range(1, 6)
    ]
    case = study.cases.get(external_id="C-1")
    assert case.original_author == physician, "author refs that are usernames are linked"
    assert case.data_import == data_import


def test_a_file_with_four_bad_lines_imports_nothing(study: Study) -> None:
    CaseFactory(study=study, external_id="EXISTING")
    before = table_counts()
    lines = [
        case_line("C-1").encode(),
        case_line("C-2", narrative=None).encode(),
        case_line("C-1").encode(),
        case_line("C-3", ground_truth={"protocol": "ultra-long"}).encode(),
        case_line("C-4", narrative="caf\u00e9").encode().replace(b"\\u00e9", b"\xe9"),
        case_line("EXISTING").encode(),
        case_line("C-5").encode(),
    ]
    data_import = run_import(study, b"\n".join(lines))
    assert data_import.status == DataImport.Status.FAILED
    assert [(e["line"], e["message"].split(" (")[0]) for e in data_import.errors] == [
        (2, "missing required field 'narrative'"),
        (3, "duplicate case_id 'C-1'"),
        (4, "ground_truth.protocol: unknown label 'ultra-long'"),
        (5, "not valid UTF-8"),
        (6, "case_id 'EXISTING' already exists in this study"),
    ]
    assert data_import.error_count == 5 and data_import.row_count == 0
    assert table_counts() == before


def test_reimporting_the_same_file_is_refused(study: Study) -> None:
    content = "\n".join(case_line(f"C-{i}") for i in range(3)).encode()
    first = run_import(study, content)
    second = run_import(study, content, name="renamed.jsonl")
    assert first.status == DataImport.Status.SUCCEEDED
    assert second.status == DataImport.Status.FAILED
    assert "already imported into this study on" in second.errors[0]["message"]
    assert f"(import #{first.pk})" in second.errors[0]["message"]
    assert study.cases.count() == 3


def test_the_same_file_can_go_into_another_study(study: Study, foreign_study: Study) -> None:
    content = case_line("C-1").encode()
    assert run_import(study, content).status == DataImport.Status.SUCCEEDED
    assert run_import(foreign_study, content).status == DataImport.Status.SUCCEEDED


def test_an_oversized_file_is_refused_before_it_is_read(
    study: Study, settings: SettingsWrapper
) -> None:
    settings.IMPORT_MAX_BYTES = 2048
    with pytest.raises(DomainError, match="bytes; the limit is 2,048 bytes"):
        run_import(study, b"x" * 2049)
    assert not DataImport.objects.exists()


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [(b"  \n", "a.jsonl", "is empty"), (b"{}", "cases.txt", "cannot tell the format")],
)
def test_unreadable_files_are_refused(
    study: Study, content: bytes, name: str, message: str
) -> None:
    with pytest.raises(DomainError, match=message):
        run_import(study, content, name=name)


def test_a_file_of_only_a_csv_header_has_no_cases(study: Study) -> None:
    data_import = run_import(study, b"case_id,stratum,narrative\n", name="empty.csv")
    assert data_import.errors == [{"line": None, "message": "the file holds no cases"}]


def test_running_a_finished_import_again_changes_nothing(study: Study) -> None:
    data_import = run_import(study, case_line("C-1").encode())
    again = imports_services.data_import_run(import_id=data_import.pk)
    assert again.status == DataImport.Status.SUCCEEDED
    assert again.attempts == 1
    assert study.cases.count() == 1


def test_an_import_whose_worker_kept_dying_is_failed(study: Study) -> None:
    data_import = imports_services.data_import_create(
        study=study,
        kind="cases",
        filename="a.jsonl",
        content=case_line("C-1").encode(),
        created_by=None,
    )
    DataImport.objects.filter(pk=data_import.pk).update(
        status=DataImport.Status.RUNNING, attempts=imports_services.MAX_IMPORT_ATTEMPTS
    )
    finished = imports_services.data_import_run(import_id=data_import.pk)
    assert finished.status == DataImport.Status.FAILED
    assert "the worker stopped 3 times" in finished.errors[0]["message"]
    assert not study.cases.exists()


def test_physician_original_arm_gets_one_response_per_case(study: Study) -> None:
    arm = services.arm_create(study=study, label="Physician", kind=Arm.Kind.PHYSICIAN_ORIGINAL)
    run_import(study, "\n".join(case_line(f"C-{i}") for i in range(4)).encode())
    run_import(study, case_line("C-9", original_decision=None).encode())
    assert arm.responses.count() == 4, "cases without an original decision give no response"
    response = arm.responses.get(case__external_id="C-2")
    assert response.display_text == "IVF for C-2."
    assert services.physician_original_responses_sync(study=study) == 0


def test_responses_import_for_imported_arms(study: Study) -> None:
    run_import(study, "\n".join(case_line(f"C-{i}") for i in range(2)).encode())
    ArmFactory(study=study, label="SFT", kind=Arm.Kind.IMPORTED)
    ArmFactory(study=study, label="Generated", kind=Arm.Kind.MODEL)
    lines = [
        {"case_id": "C-0", "arm": "SFT", "text": "Plan: IVF", "decision": {"art_strategy": "IVF"}},
        {"case_id": "C-1", "arm": "SFT", "text": "Plan: ICSI"},
    ]
    content = "\n".join(json.dumps(line) for line in lines).encode()
    data_import = run_import(study, content, kind="responses")
    assert data_import.status == DataImport.Status.SUCCEEDED, data_import.errors
    response = Response.objects.get(case__external_id="C-0", arm__label="SFT")
    assert response.parsed_decision == {"art_strategy": "IVF"}
    assert response.provenance["sha256"] == data_import.sha256

    model_arm_line = json.dumps({"case_id": "C-0", "arm": "Generated", "text": "x"}).encode()
    refused = run_import(study, model_arm_line, kind="responses")
    assert "is not an imported-outputs arm" in refused.errors[0]["message"]


@pytest.mark.django_db(transaction=True)
def test_two_workers_running_one_import_store_it_once() -> None:
    """A duplicated delivery: both callers run at once; the rows exist exactly once."""
    coordinator = User.objects.create(username="c", role=User.Role.COORDINATOR)
    study = StudyFactory(created_by=coordinator)
    content = "\n".join(case_line(f"C-{i}") for i in range(300)).encode()
    data_import = imports_services.data_import_create(
        study=study, kind="cases", filename="a.jsonl", content=content, created_by=None
    )
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver() -> None:
        barrier.wait()
        try:
            outcomes.append(imports_services.data_import_run(import_id=data_import.pk).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == ["succeeded", "succeeded"]
    assert study.cases.count() == 300


def test_import_cases_command_reports_lines_and_exits_nonzero(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(case_line("C-1") + "\n" + case_line("C-2", stratum="Elsewhere") + "\n")
    with pytest.raises(CommandError, match="1 problem\\(s\\) in bad.jsonl; nothing was imported"):
        call_command("import_cases", "--study", str(study.pk), str(path))
    assert "bad.jsonl: line 2: unknown stratum 'Elsewhere'" in capsys.readouterr().err
    assert not study.cases.exists()


def test_import_cases_command_imports_csv(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cases.csv"
    path.write_text("case_id,stratum,narrative,truth.art_strategy\nC-1,General,Text,ICSI\n")
    call_command("import_cases", "--study", str(study.pk), str(path))
    assert "Imported 1 cases from cases.csv" in capsys.readouterr().out
    assert study.cases.get().ground_truth == {"art_strategy": "ICSI"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "999999", "x.jsonl"], "there is no study with id 999999"),
        (["--study", "{study}", "/nonexistent/x.jsonl"], "cannot read /nonexistent/x.jsonl"),
    ],
)
def test_import_cases_command_refuses_bad_arguments(
    study: Study, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("import_cases", *[a.format(study=study.pk) for a in args])


def test_import_responses_command(study: Study, tmp_path: Path) -> None:
    CaseFactory(study=study, external_id="C-1")
    ArmFactory(study=study, label="DPO", kind=Arm.Kind.IMPORTED)
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps({"case_id": "C-1", "arm": "DPO", "text": "Plan."}) + "\n")
    call_command("import_responses", "--study", str(study.pk), str(path))
    assert Response.objects.filter(arm__label="DPO").count() == 1


def test_the_synthetic_generator_output_imports_cleanly(study: Study) -> None:
    from clinic_eval import synthetic

    cases = synthetic.generate_cases(n=400, seed=7)
    for label in synthetic.SIMULATED_ARMS:
        services.arm_create(study=study, label=label, kind=Arm.Kind.IMPORTED)
    imported = run_import(study, synthetic.dumps_jsonl(cases).encode())
    assert imported.status == DataImport.Status.SUCCEEDED, imported.errors[:3]
    responses = synthetic.generate_simulated_responses(cases, seed=7)
    imported = run_import(study, synthetic.dumps_jsonl(responses).encode(), kind="responses")
    assert imported.status == DataImport.Status.SUCCEEDED, imported.errors[:3]
    assert Response.objects.filter(case__study=study).count() == 400 * 4


def test_the_documented_examples_import_and_csv_means_the_same_as_jsonl(
    study: Study, foreign_study: Study
) -> None:
    examples = Path(__file__).resolve().parents[2] / "docs" / "examples"
    from_jsonl = run_import(study, (examples / "cases.jsonl").read_bytes())
    from_csv = run_import(foreign_study, (examples / "cases.csv").read_bytes(), name="cases.csv")
    assert (from_jsonl.status, from_csv.status) == ("succeeded", "succeeded")

    def content(s: Study) -> list[tuple]:
        return list(
            s.cases.order_by("external_id").values_list(
                "external_id",
                "stratum",
                "narrative",
                "fields",
                "ground_truth",
                "original_text",
                "original_decision",
                "original_author_ref",
            )
        )

    assert content(study) == content(foreign_study)
    for label in ("SFT-sim", "GRPO-sim"):
        ArmFactory(study=study, label=label, kind=Arm.Kind.IMPORTED)
    responses = run_import(study, (examples / "responses.jsonl").read_bytes(), kind="responses")
    assert responses.status == "succeeded", responses.errors


def test_the_command_prints_twenty_problems_and_says_how_many_more(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "responses.jsonl"
    lines = [json.dumps({"case_id": f"C-{i}", "arm": "SFT", "text": "x"}) for i in range(45)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError, match="45 problem"):
        call_command("import_responses", "--study", str(study.pk), str(path))
    printed = capsys.readouterr().err.splitlines()
    assert len(printed) == 21
    assert printed[0].startswith("responses.jsonl: line 1: case_id 'C-0' is not a case")
    assert printed[-1] == "... and 25 more; the study's import page lists the first 45"


def test_an_import_submitted_in_a_rolled_back_transaction_never_runs(
    study: Study, coordinator: User, django_capture_on_commit_callbacks: Callable
) -> None:
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        contextlib.suppress(RuntimeError),
        transaction.atomic(),
    ):
        imports_services.data_import_submit(
            study=study,
            kind="cases",
            filename="a.jsonl",
            content=case_line("C-1").encode(),
            created_by=coordinator,
        )
        raise RuntimeError("the surrounding request failed")
    assert callbacks == []
    assert not DataImport.objects.exists() and not study.cases.exists()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        imports_services.data_import_submit(
            study=study,
            kind="cases",
            filename="a.jsonl",
            content=case_line("C-1").encode(),
            created_by=coordinator,
        )
    assert len(callbacks) == 1, "the task is queued by the commit, not before it"
    assert study.cases.count() == 1
