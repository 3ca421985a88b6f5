"""The file parser and validators on raw bytes, without a database."""

from __future__ import annotations

import json

import pytest

from clinic_eval.imports import parsing as importing
from clinic_eval.vocabulary import DEFAULT_DECISION_LAYERS, STRATA


def case(case_id: str = "C-1", **overrides: object) -> dict:
    record = {
        "case_id": case_id,
        "stratum": "General",
        "narrative": "32-year-old woman with bilateral tubal occlusion.",
        "fields": {"age": 32, "tubal_findings": "bilateral occlusion"},
        "ground_truth": {"diagnosis": ["tubal_factor"], "art_strategy": "IVF"},
        "original_decision": {"text": "IVF.", "decision": {"art_strategy": "IVF"}, "author": "d1"},
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


def jsonl(*records: dict | str) -> bytes:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return ("\n".join(lines) + "\n").encode()


def check_cases(
    content: bytes, fmt: str = "jsonl", existing: set[str] | None = None
) -> importing.Validated[importing.CaseRow]:
    return importing.validate_cases(
        importing.read_records(content, fmt, kind="cases"),
        strata=list(STRATA),
        layers=DEFAULT_DECISION_LAYERS,
        existing_ids=existing or set(),
        max_rows=1000,
    )


def messages(result: importing.Validated) -> list[str]:
    return [str(error) for error in result.errors]


def test_valid_jsonl_cases_become_rows() -> None:
    result = check_cases(jsonl(case("C-1"), case("C-2", stratum="Confusion")))
    assert result.errors == []
    assert [row.external_id for row in result.rows] == ["C-1", "C-2"]
    first = result.rows[0]
    assert first.fields == {"age": 32, "tubal_findings": "bilateral occlusion"}
    assert first.ground_truth == {"diagnosis": ["tubal_factor"], "art_strategy": "IVF"}
    assert first.original_author_ref == "d1"
    assert result.rows[1].line == 2


def test_one_error_per_bad_line_with_line_numbers() -> None:
    """The issue's example: missing field, duplicate id, bad label and non-UTF-8 bytes."""
    good = [json.dumps(case(f"C-{i}")).encode() for i in range(1, 8)]
    missing_narrative = json.dumps(case("C-20", narrative=None)).encode()
    duplicate = json.dumps(case("C-2")).encode()
    bad_label = json.dumps(case("C-21", ground_truth={"art_strategy": "IVF+"})).encode()
    bad_bytes = (
        json.dumps(case("C-22", narrative="caf\u00e9"), ensure_ascii=False)
        .encode()
        .replace(b"\xc3\xa9", b"\xe9")
    )
    lines = [
        good[0],
        good[1],
        missing_narrative,
        good[2],
        duplicate,
        good[3],
        bad_label,
        good[4],
        bad_bytes,
        good[5],
    ]
    result = check_cases(b"\n".join(lines) + b"\n")
    bad_position = bad_bytes.index(b"\xe9") + 1  # the line before it is ASCII
    assert messages(result) == [
        "line 3: missing required field 'narrative'",
        "line 5: duplicate case_id 'C-2' (first seen on line 2)",
        "line 7: ground_truth.art_strategy: unknown label 'IVF+' "
        "(allowed: IUI, IVF, ICSI, PGT-A, PGT-M, PGT-SR)",
        f"line 9: not valid UTF-8 (byte 0xe9 at position {bad_position})",
    ]


def test_same_problems_in_csv_are_reported_on_their_lines() -> None:
    content = (
        b"case_id,stratum,narrative,field.age,truth.diagnosis,truth.art_strategy,original.text\n"
        b'C-1,General,"Line one\nline two of a quoted narrative",31,'
        b"tubal_factor;endometriosis,IVF,IVF.\n"
        b"C-2,General,,33,tubal_factor,IVF,\n"
        b"C-1,General,Duplicate,33,,IVF,\n"
        b"C-3,General,Bad label,33,,IVF+,\n"
    ) + b"C-4,General,caf\xe9,30,,IVF,\n"
    result = check_cases(content, "csv")
    assert messages(result) == [
        "line 4: missing required field 'narrative'",
        "line 5: duplicate case_id 'C-1' (first seen on line 2)",
        "line 6: ground_truth.art_strategy: unknown label 'IVF+' "
        "(allowed: IUI, IVF, ICSI, PGT-A, PGT-M, PGT-SR)",
        "line 7: not valid UTF-8 (byte 0xe9 at position 4)",
    ]
    assert result.rows[0].narrative == "Line one\nline two of a quoted narrative"
    assert result.rows[0].fields == {"age": 31}
    assert result.rows[0].ground_truth["diagnosis"] == ["tubal_factor", "endometriosis"]


def test_csv_values_are_typed_and_empty_cells_absent() -> None:
    content = (
        b"case_id,stratum,narrative,field.age,field.bmi,field.smoker,field.note,"
        b"original.text,original.author,original.dose_band\n"
        b"C-1,General,Text,34,22.5,false,0012 is a code,Plan.,dr-7,151-225 IU\n"
        b"C-2,General,Text,,,,,,,\n"
    )
    result = check_cases(content, "csv")
    assert result.errors == []
    first, second = result.rows
    assert first.fields == {"age": 34, "bmi": 22.5, "smoker": False, "note": "0012 is a code"}
    assert first.original_decision == {"dose_band": "151-225 IU"}
    assert first.original_author_ref == "dr-7"
    assert second.fields == {} and second.original_text == ""


def test_csv_header_problems_stop_the_file_at_line_one() -> None:
    content = b"case_id,stratum,narative\nC-1,General,Text\n"
    result = check_cases(content, "csv")
    assert len(result.errors) == 1
    assert result.errors[0].line == 1
    assert "unknown column 'narative'" in result.errors[0].message


def test_csv_rows_with_the_wrong_number_of_cells() -> None:
    result = check_cases(b"case_id,stratum,narrative\nC-1,General,Text,extra\n", "csv")
    assert messages(result) == ["line 2: has 4 cells; the header has 3"]


def test_byte_order_mark_crlf_and_blank_lines_are_accepted() -> None:
    content = b"\xef\xbb\xbf" + jsonl(case("C-1")).replace(b"\n", b"\r\n") + b"\r\n\r\n"
    content += json.dumps(case("C-2")).encode() + b"\r\n"
    result = check_cases(content)
    assert result.errors == []
    assert [(row.line, row.external_id) for row in result.rows] == [(1, "C-1"), (4, "C-2")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"case_id": "C-9", ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps(case("C-9", fields={"x": float("nan")})), "NaN is not allowed"),
        (json.dumps(case("C-9", narrative="a\x00b")), "contains a NUL character"),
        (json.dumps(case("C-9", extra=1)), "unknown field 'extra'"),
        (json.dumps(case("bad id!")), "case_id 'bad id!' must be 1-64 characters"),
        (json.dumps(case("C-9", stratum="Other")), "unknown stratum 'Other'"),
        (json.dumps(case("C-9", stratum=None)), "missing required field 'stratum'"),
        (json.dumps(case(None)), "missing required field 'case_id'"),
        (json.dumps(case("C-9", narrative=5)), "narrative must be text"),
        (json.dumps(case("C-9", narrative="x" * 20_001)), "the limit is 20,000"),
        (json.dumps(case("C-9", fields={"Age": 3})), "field name 'Age'"),
        (json.dumps(case("C-9", fields={"a": [1]})), "fields.a must be text, a number"),
        (json.dumps(case("C-9", ground_truth={"diagnosis": []})), "non-empty list"),
        (json.dumps(case("C-9", ground_truth={"diagnosis": ["flu"]})), "unknown label 'flu'"),
        (json.dumps(case("C-9", ground_truth={"plan": "x"})), "unknown decision layer 'plan'"),
        (json.dumps(case("C-9", original_decision={"decision": {}})), "original_decision.text"),
        (
            json.dumps(case("C-9", original_decision={"text": "x", "author": "a b"})),
            "original_decision.author 'a b'",
        ),
    ],
)
def test_each_kind_of_bad_case_line_is_named(line: str, message: str) -> None:
    result = check_cases(jsonl(case("C-1"), line))
    assert len(result.errors) == 1
    assert result.errors[0].line == 2
    assert message in result.errors[0].message


def test_existing_ids_in_the_study_are_reported() -> None:
    result = check_cases(jsonl(case("C-1"), case("C-2")), existing={"C-2"})
    assert messages(result) == ["line 2: case_id 'C-2' already exists in this study"]


def test_too_many_records_stops_with_one_error() -> None:
    records = importing.read_records(
        jsonl(*(case(f"C-{i}") for i in range(5))), "jsonl", kind="cases"
    )
    result = importing.validate_cases(
        records,
        strata=list(STRATA),
        layers=DEFAULT_DECISION_LAYERS,
        existing_ids=set(),
        max_rows=3,
    )
    assert messages(result) == ["line 4: the file has more than 3 records; split it"]


def test_multi_label_duplicates_collapse_in_order() -> None:
    decision = importing.check_decision(
        {"diagnosis": "male_factor_mild; tubal_factor;male_factor_mild"},
        DEFAULT_DECISION_LAYERS,
        where="ground_truth",
    )
    assert decision == {"diagnosis": ["male_factor_mild", "tubal_factor"]}


def check_responses(
    content: bytes, fmt: str = "jsonl", existing: set | None = None
) -> importing.Validated[importing.ResponseRow]:
    return importing.validate_responses(
        importing.read_records(content, fmt, kind="responses"),
        layers=DEFAULT_DECISION_LAYERS,
        case_ids={"C-1", "C-2"},
        arm_labels={"SFT", "GRPO"},
        existing_keys=existing or set(),
        max_rows=1000,
    )


def test_responses_are_checked_against_cases_arms_and_existing_keys() -> None:
    content = jsonl(
        {"case_id": "C-1", "arm": "SFT", "text": "IVF.", "decision": {"art_strategy": "IVF"}},
        {"case_id": "C-1", "arm": "SFT", "sample": 1, "text": "ICSI."},
        {"case_id": "C-3", "arm": "SFT", "text": "x"},
        {"case_id": "C-1", "arm": "DPO", "text": "x"},
        {"case_id": "C-1", "arm": "SFT", "sample": 0, "text": "again"},
        {"case_id": "C-2", "arm": "GRPO", "text": "x"},
        {"case_id": "C-2", "arm": "GRPO", "sample": -1, "text": "x"},
        {"case_id": "C-2", "arm": "GRPO", "sample": True, "text": "x"},
        {"case_id": "C-2", "arm": "SFT", "text": ""},
    )
    result = check_responses(content, existing={("C-2", "GRPO", 0)})
    assert messages(result) == [
        "line 3: case_id 'C-3' is not a case of this study",
        "line 4: arm 'DPO' is not an imported-outputs arm of this study (GRPO, SFT)",
        "line 5: duplicate response for case 'C-1', arm 'SFT', sample 0 (first seen on line 1)",
        "line 6: case 'C-2' already has a response from arm 'GRPO', sample 0",
        "line 7: sample must be between 0 and 1000; got -1",
        "line 8: sample must be a whole number; got True",
        "line 9: missing required field 'text'",
    ]
    assert [(r.case_id, r.arm, r.sample) for r in result.rows] == [
        ("C-1", "SFT", 0),
        ("C-1", "SFT", 1),
    ]


def test_responses_from_csv() -> None:
    content = (
        b"case_id,arm,sample,text,decision.art_strategy,decision.diagnosis\n"
        b'C-1,SFT,0,"Plan: IVF, antagonist.",IVF,tubal_factor;endometriosis\n'
        b"C-1,SFT,x,Text,,\n"
    )
    result = check_responses(content, "csv")
    assert messages(result) == ["line 3: sample must be a whole number; got 'x'"]
    assert result.rows[0].decision == {
        "art_strategy": "IVF",
        "diagnosis": ["tubal_factor", "endometriosis"],
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cases.jsonl", "jsonl"), ("X.NDJSON", "jsonl"), ("a.csv", "csv"), ("a.json", None)],
)
def test_format_detection(name: str, expected: str | None) -> None:
    assert importing.detect_format(name) == expected
