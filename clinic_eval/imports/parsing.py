"""Reading and validating case and response files, line by line, without touching the database.

``read_records`` turns bytes into ``(line, record)`` pairs or line errors; ``validate_cases`` and
``validate_responses`` check every record against the study's vocabulary and what already exists.
Every bad line yields one ``LineError`` naming its first problem; callers write nothing unless
the error list is empty.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

FileFormat = Literal["jsonl", "csv"]

CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
FIELD_NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,64}$")
AUTHOR_PATTERN = re.compile(r"^[A-Za-z0-9._@+-]{1,150}$")
MAX_NARRATIVE_CHARS = 20_000
MAX_RESPONSE_CHARS = 50_000
MAX_FIELDS = 100
MAX_FIELD_VALUE_CHARS = 500
MAX_SAMPLE_INDEX = 1_000
MULTI_LABEL_SEPARATOR = ";"

CASE_KEYS = {"case_id", "stratum", "narrative", "fields", "ground_truth", "original_decision"}
ORIGINAL_KEYS = {"text", "decision", "author"}
RESPONSE_KEYS = {"case_id", "arm", "sample", "text", "decision"}


@dataclass(frozen=True)
class LineError:
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


class RecordError(ValueError):
    """A record's first problem; becomes a LineError at the record's line."""


@dataclass(frozen=True)
class CaseRow:
    line: int
    external_id: str
    stratum: str
    narrative: str
    fields: dict[str, Any]
    ground_truth: dict[str, Any]
    original_text: str
    original_decision: dict[str, Any]
    original_author_ref: str


@dataclass(frozen=True)
class ResponseRow:
    line: int
    case_id: str
    arm: str
    sample: int
    text: str
    decision: dict[str, Any]


RowT = TypeVar("RowT", "CaseRow", "ResponseRow")


@dataclass
class Validated(Generic[RowT]):
    rows: list[RowT] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


def detect_format(filename: str) -> FileFormat | None:
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lowered.endswith(".csv"):
        return "csv"
    return None


# --- Reading --------------------------------------------------------------------------------


def _decode(content: bytes) -> str:
    # surrogateescape keeps undecodable bytes as lone surrogates, so a bad byte can be reported
    # on its own line while the rest of the file is still checked.
    text = content.decode("utf-8", errors="surrogateescape")
    return text.removeprefix("\ufeff")


def _first_bad_byte(text: str) -> tuple[int, int] | None:
    for position, char in enumerate(text):
        if "\udc80" <= char <= "\udcff":
            return ord(char) - 0xDC00, position + 1
    return None


def _encoding_error(text: str) -> RecordError | None:
    bad = _first_bad_byte(text)
    if bad is None:
        return None
    byte, position = bad
    return RecordError(f"not valid UTF-8 (byte 0x{byte:02x} at position {position})")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _read_jsonl(text: str) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if (problem := _encoding_error(line)) is not None:
            yield line_number, problem
            continue
        try:
            record = json.loads(line, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            yield line_number, RecordError(f"not valid JSON ({exc})")
            continue
        if not isinstance(record, dict):
            yield line_number, RecordError("must be a JSON object")
            continue
        yield line_number, record


def _coerce_csv_scalar(value: str) -> Any:
    lowered = value.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if re.fullmatch(r"[+-]?\d{1,15}", value):
        return int(value)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", value):
        number = float(value)
        return number if math.isfinite(number) else value
    return value


class CsvShape:
    """Maps a CSV header onto the nested record shape that JSONL files use."""

    def __init__(self, header: list[str], *, kind: Literal["cases", "responses"]) -> None:
        self.header = [name.strip() for name in header]
        self.kind = kind

    def problems(self) -> list[str]:
        problems = []
        seen: set[str] = set()
        for name in self.header:
            if name in seen:
                problems.append(f"column {name!r} appears twice")
            seen.add(name)
            if not self._known(name):
                problems.append(f"unknown column {name!r} ({self._expected()})")
        return problems

    def _known(self, name: str) -> bool:
        if self.kind == "cases":
            if name in {"case_id", "stratum", "narrative", "original.text", "original.author"}:
                return True
            return any(
                name.startswith(prefix) and len(name) > len(prefix)
                for prefix in ("field.", "truth.", "original.")
            )
        if name in {"case_id", "arm", "sample", "text"}:
            return True
        return name.startswith("decision.") and len(name) > len("decision.")

    def _expected(self) -> str:
        if self.kind == "cases":
            return (
                "expected case_id, stratum, narrative, field.<name>, truth.<layer>, "
                "original.text, original.author, original.<layer>"
            )
        return "expected case_id, arm, sample, text, decision.<layer>"

    def record(self, cells: list[str]) -> dict[str, Any]:
        if len(cells) != len(self.header):
            raise RecordError(f"has {len(cells)} cells; the header has {len(self.header)}")
        record: dict[str, Any] = {}
        for name, raw in zip(self.header, cells, strict=True):
            value = raw.strip()
            if value == "":
                continue
            prefix, _, rest = name.partition(".")
            if not rest:
                record[name] = value
            elif prefix == "field":
                record.setdefault("fields", {})[rest] = _coerce_csv_scalar(value)
            elif prefix == "truth":
                record.setdefault("ground_truth", {})[rest] = value
            elif prefix == "decision":
                record.setdefault("decision", {})[rest] = value
            elif rest in {"text", "author"}:
                record.setdefault("original_decision", {})[rest] = value
            else:
                original = record.setdefault("original_decision", {})
                original.setdefault("decision", {})[rest] = value
        return record


def _read_csv(
    text: str, kind: Literal["cases", "responses"]
) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line_of_next_record = 1
    shape: CsvShape | None = None
    while True:
        start = line_of_next_record
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, RecordError(f"not valid CSV ({exc})")
            return
        line_of_next_record = reader.line_num + 1
        if shape is None:
            shape = CsvShape(cells, kind=kind)
            problems = shape.problems() + [
                str(err) for cell in cells if (err := _encoding_error(cell)) is not None
            ]
            if problems:
                yield start, RecordError("header: " + "; ".join(problems))
                return
            continue
        if not any(cell.strip() for cell in cells):
            continue
        problem = next((e for cell in cells if (e := _encoding_error(cell)) is not None), None)
        if problem is not None:
            yield start, problem
            continue
        try:
            yield start, shape.record(cells)
        except RecordError as exc:
            yield start, exc


def read_records(
    content: bytes, file_format: FileFormat, *, kind: Literal["cases", "responses"]
) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Yield ``(line, record)`` for each non-blank record, or ``(line, RecordError)``."""
    text = _decode(content)
    if file_format == "jsonl":
        yield from _read_jsonl(text)
    else:
        yield from _read_csv(text, kind)


# --- Checking values ------------------------------------------------------------------------


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def _required_text(record: Mapping[str, Any], key: str, *, max_chars: int, where: str = "") -> str:
    name = f"{where}{key}"
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordError(f"missing required field {name!r}")
    if not isinstance(value, str):
        raise RecordError(f"{name} must be text")
    if len(value) > max_chars:
        raise RecordError(f"{name} is {len(value):,} characters; the limit is {max_chars:,}")
    return value.strip()


def _unknown_keys(record: Mapping[str, Any], allowed: set[str], where: str = "") -> None:
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise RecordError(
            f"unknown field {where}{unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def check_decision(
    value: Any, layers: Mapping[str, Mapping[str, Any]], *, where: str
) -> dict[str, Any]:
    """Validate a decision coded in the study's layers; return it normalised."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{where} must be an object of decision layers")
    decision: dict[str, Any] = {}
    for layer_name, raw in value.items():
        layer = layers.get(layer_name)
        if layer is None:
            raise RecordError(
                f"{where}: unknown decision layer {layer_name!r} (layers: {', '.join(layers)})"
            )
        allowed = layer["labels"]
        if layer.get("multi"):
            if isinstance(raw, str):
                raw = [part.strip() for part in raw.split(MULTI_LABEL_SEPARATOR) if part.strip()]
            if not isinstance(raw, list) or not raw:
                raise RecordError(f"{where}.{layer_name} must be a non-empty list of labels")
            labels = []
            for label in raw:
                if label not in allowed:
                    raise _bad_label(where, layer_name, label, allowed)
                if label not in labels:
                    labels.append(label)
            decision[layer_name] = labels
        else:
            if not isinstance(raw, str) or raw not in allowed:
                raise _bad_label(where, layer_name, raw, allowed)
            decision[layer_name] = raw
    return decision


def _bad_label(where: str, layer: str, label: Any, allowed: list[str]) -> RecordError:
    return RecordError(f"{where}.{layer}: unknown label {label!r} (allowed: {', '.join(allowed)})")


def _check_fields(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError("fields must be an object of named values")
    if len(value) > MAX_FIELDS:
        raise RecordError(f"fields has {len(value)} entries; the limit is {MAX_FIELDS}")
    for name, item in value.items():
        if not FIELD_NAME_PATTERN.match(name):
            raise RecordError(f"field name {name!r} must use a-z, 0-9 and _ only")
        if isinstance(item, str) and len(item) > MAX_FIELD_VALUE_CHARS:
            raise RecordError(f"fields.{name} is longer than {MAX_FIELD_VALUE_CHARS} characters")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise RecordError(f"fields.{name} must be text, a number, true/false or null")
    return dict(value)


# --- Cases ----------------------------------------------------------------------------------


def _case_row(
    line: int,
    record: Mapping[str, Any],
    *,
    strata: list[str],
    layers: Mapping[str, Mapping[str, Any]],
) -> CaseRow:
    _unknown_keys(record, CASE_KEYS)
    if _contains_nul(record):
        raise RecordError("contains a NUL character")
    raw_id = record.get("case_id")
    if raw_id is None or raw_id == "":
        raise RecordError("missing required field 'case_id'")
    if not isinstance(raw_id, str) or not CASE_ID_PATTERN.match(raw_id):
        raise RecordError(f"case_id {raw_id!r} must be 1-64 characters from A-Z a-z 0-9 . _ : -")
    stratum = record.get("stratum")
    if stratum is None or stratum == "":
        raise RecordError("missing required field 'stratum'")
    if stratum not in strata:
        raise RecordError(f"unknown stratum {stratum!r} (allowed: {', '.join(strata)})")
    narrative = _required_text(record, "narrative", max_chars=MAX_NARRATIVE_CHARS)
    fields = _check_fields(record.get("fields"))
    ground_truth = check_decision(record.get("ground_truth"), layers, where="ground_truth")

    original = record.get("original_decision")
    original_text, original_decision, author = "", {}, ""
    if original is not None:
        if not isinstance(original, Mapping):
            raise RecordError("original_decision must be an object with text, decision, author")
        _unknown_keys(original, ORIGINAL_KEYS, where="original_decision.")
        original_text = _required_text(
            original, "text", max_chars=MAX_NARRATIVE_CHARS, where="original_decision."
        )
        original_decision = check_decision(
            original.get("decision"), layers, where="original_decision.decision"
        )
        author = original.get("author") or ""
        if author and (not isinstance(author, str) or not AUTHOR_PATTERN.match(author)):
            raise RecordError(
                f"original_decision.author {author!r} must be 1-150 characters "
                "from A-Z a-z 0-9 . _ @ + -"
            )
    return CaseRow(
        line=line,
        external_id=raw_id,
        stratum=stratum,
        narrative=narrative,
        fields=fields,
        ground_truth=ground_truth,
        original_text=original_text,
        original_decision=original_decision,
        original_author_ref=author,
    )


def _validate_records(
    records: Iterator[tuple[int, dict[str, Any] | RecordError]],
    *,
    what: str,
    max_rows: int,
    check: Callable[[int, Mapping[str, Any]], RowT],
    key: Callable[[RowT], Hashable],
    duplicate: Callable[[RowT, int], str],
) -> Validated[RowT]:
    """Check every record; a record that repeats an earlier one's key is an error too."""
    result: Validated[RowT] = Validated()
    first_line_of: dict[Hashable, int] = {}
    for count, (line, record) in enumerate(records, start=1):
        if count > max_rows:
            result.errors.append(
                LineError(line, f"the file has more than {max_rows:,} records; split it")
            )
            break
        try:
            if isinstance(record, RecordError):
                raise record
            row = check(line, record)
            if key(row) in first_line_of:
                raise RecordError(duplicate(row, first_line_of[key(row)]))
            first_line_of[key(row)] = line
        except RecordError as exc:
            result.errors.append(LineError(line, str(exc)))
            continue
        result.rows.append(row)
    if not result.rows and not result.errors:
        result.errors.append(LineError(None, f"the file holds no {what}"))
    return result


def validate_cases(
    records: Iterator[tuple[int, dict[str, Any] | RecordError]],
    *,
    strata: list[str],
    layers: Mapping[str, Mapping[str, Any]],
    existing_ids: set[str],
    max_rows: int,
) -> Validated[CaseRow]:
    def check(line: int, record: Mapping[str, Any]) -> CaseRow:
        row = _case_row(line, record, strata=strata, layers=layers)
        if row.external_id in existing_ids:
            raise RecordError(f"case_id {row.external_id!r} already exists in this study")
        return row

    return _validate_records(
        records,
        what="cases",
        max_rows=max_rows,
        check=check,
        key=lambda row: row.external_id,
        duplicate=lambda row, first: (
            f"duplicate case_id {row.external_id!r} (first seen on line {first})"
        ),
    )


# --- Responses ------------------------------------------------------------------------------


def _response_row(
    line: int,
    record: Mapping[str, Any],
    *,
    layers: Mapping[str, Mapping[str, Any]],
    arm_label: str = "",
) -> ResponseRow:
    _unknown_keys(record, RESPONSE_KEYS)
    if _contains_nul(record):
        raise RecordError("contains a NUL character")
    case_id = _required_text(record, "case_id", max_chars=64)
    if arm_label and record.get("arm") in (None, ""):
        arm = arm_label
    else:
        arm = _required_text(record, "arm", max_chars=64)
        if arm_label and arm != arm_label:
            raise RecordError(f"arm is {arm!r}, but the whole file was imported as {arm_label!r}")
    sample_raw = record.get("sample", 0)
    if isinstance(sample_raw, str) and re.fullmatch(r"[0-9]{1,6}", sample_raw.strip()):
        sample_raw = int(sample_raw)
    if isinstance(sample_raw, bool) or not isinstance(sample_raw, int):
        raise RecordError(f"sample must be a whole number; got {sample_raw!r}")
    sample = sample_raw
    if not 0 <= sample <= MAX_SAMPLE_INDEX:
        raise RecordError(f"sample must be between 0 and {MAX_SAMPLE_INDEX}; got {sample}")
    text = _required_text(record, "text", max_chars=MAX_RESPONSE_CHARS)
    decision = check_decision(record.get("decision"), layers, where="decision")
    return ResponseRow(
        line=line, case_id=case_id, arm=arm, sample=sample, text=text, decision=decision
    )


def validate_responses(
    records: Iterator[tuple[int, dict[str, Any] | RecordError]],
    *,
    layers: Mapping[str, Mapping[str, Any]],
    case_ids: set[str],
    arm_labels: set[str],
    existing_keys: set[tuple[str, str, int]],
    max_rows: int,
    arm_label: str = "",
) -> Validated[ResponseRow]:
    """``arm_label``: every line belongs to this arm, so lines may leave ``arm`` out."""

    def check(line: int, record: Mapping[str, Any]) -> ResponseRow:
        row = _response_row(line, record, layers=layers, arm_label=arm_label)
        if row.case_id not in case_ids:
            raise RecordError(f"case_id {row.case_id!r} is not a case of this study")
        if row.arm not in arm_labels:
            known = ", ".join(sorted(arm_labels)) or "none yet; create one first"
            raise RecordError(
                f"arm {row.arm!r} is not an imported-outputs arm of this study ({known})"
            )
        if (row.case_id, row.arm, row.sample) in existing_keys:
            raise RecordError(
                f"case {row.case_id!r} already has a response from arm {row.arm!r}, "
                f"sample {row.sample}"
            )
        return row

    return _validate_records(
        records,
        what="responses",
        max_rows=max_rows,
        check=check,
        key=lambda row: (row.case_id, row.arm, row.sample),
        duplicate=lambda row, first: (
            f"duplicate response for case {row.case_id!r}, arm {row.arm!r}, "
            f"sample {row.sample} (first seen on line {first})"
        ),
    )
