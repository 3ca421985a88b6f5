"""The pure half of rubric drafting and grading: prompts, JSON schemas and lenient parsers.

No engine and no database writes here, so every rule is testable on plain strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignment_jobs import prompts
from alignment_jobs.generation.spec_engine import case_data
from clinic_eval.models import Case, RubricCriterion
from clinic_eval.rubrics.services import (
    MAX_CRITERIA_PER_RUBRIC,
    MAX_CRITERION_TEXT,
    MAX_POINTS,
    CriterionInput,
)

DRAFT_MAX_CRITERIA = 12
# Sentence-length criteria; the bound also caps what a constrained decode can spend on one.
DRAFT_CRITERION_MAX_CHARS = 300
DRAFT_POINTS_LIMIT = 10
MAX_KEPT_OUTPUT_CHARS = 8_000
MAX_ERROR_CHARS = 2_000
# A retry at temperature 0 would repeat the same output; retries sample at least this warm.
RETRY_MIN_TEMPERATURE = 0.7
# Scanning gibberish for JSON is quadratic at worst; this many candidate starts is plenty.
MAX_JSON_STARTS = 200

AXES = tuple(RubricCriterion.Axis.values)

DRAFT_SYSTEM_PROMPT = (
    "You are a senior reproductive endocrinologist writing a grading rubric for answers to a "
    "de-identified clinical case. Each criterion is one statement a grader can check against an "
    "answer."
)
DRAFT_INSTRUCTIONS = (
    "Write {min_items} to {max_items} grading criteria for an answer to this case. Give positive "
    "points (1 to {limit}) for what a good answer does and negative points (-1 to -{limit}) for "
    "wrong or harmful content; for a criterion with negative points, met = the undesirable "
    "behaviour occurred. Axis is one of: {axes}.\n"
    "Reply with only a JSON list, for example:\n"
    '[{{"criterion": "Recommends IVF given bilateral tubal blockage", "points": 5, '
    '"axis": "accuracy"}}]'
)
GRADE_SYSTEM_PROMPT = (
    "You grade an answer to a de-identified clinical case against a rubric, one criterion at a "
    "time, strictly and without giving credit for what the answer does not say."
)
GRADE_INSTRUCTIONS = (
    "For each criterion, decide whether the answer meets it. For a criterion with negative "
    "points, met = the undesirable behaviour occurred.\n"
    "Reply with only a JSON object mapping each criterion number to true (met) or false (not "
    "met), for example: {example}"
)


def _template_sha(*parts: str) -> str:
    return prompts.sha256_text("\x1e".join(parts))


DRAFT_TEMPLATE_SHA256 = _template_sha(DRAFT_SYSTEM_PROMPT, DRAFT_INSTRUCTIONS)
GRADE_TEMPLATE_SHA256 = _template_sha(GRADE_SYSTEM_PROMPT, GRADE_INSTRUCTIONS)


class UnparseableOutput(ValueError):
    """Model output from which nothing usable could be read; the message says why."""


# --- Parsing (pure) ---------------------------------------------------------------------------


def json_values(text: str) -> Iterator[Any]:
    """Every JSON list or object embedded in ``text`` (prose, code fences), in order."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:MAX_JSON_STARTS]
    end = -1
    for start in starts:
        if start < end:  # inside a value already returned
            continue
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        yield value


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _axis(value: Any) -> str | None:
    key = re.sub(r"[\s-]+", "_", str(value or "").strip().lower())
    return key if key in AXES else None


@dataclass
class DraftParse:
    criteria: list[CriterionInput]
    parsed: str  # "json" or "lines"
    dropped: list[str] = field(default_factory=list)  # why items were left out
    axis_defaulted: int = 0


def _draft_items(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        for key in ("criteria", "rubric", "rubrics"):
            items = value.get(key)
            if isinstance(items, list):
                return items
        return [value] if "criterion" in value else None
    return value if isinstance(value, list) else None


def parse_draft(text: str) -> DraftParse:
    """The criteria of a JSON list ``[{"criterion", "points", "axis"}]`` found in ``text``.

    Items that are not usable criteria are dropped and counted, never repaired by guessing.
    Raises UnparseableOutput when no list yields a rubric (a criterion with positive points).
    """
    reasons = []
    for value in json_values(text):
        items = _draft_items(value)
        if items is None:
            continue
        result = DraftParse(criteria=[], parsed="json")
        for n, item in enumerate(items, 1):
            if not isinstance(item, dict):
                result.dropped.append(f"item {n}: not an object")
                continue
            criterion = str(item.get("criterion") or item.get("text") or "").strip()
            points = _whole_number(item.get("points"))
            if not criterion or len(criterion) > MAX_CRITERION_TEXT:
                result.dropped.append(f"item {n}: no usable criterion text")
                continue
            if points is None or points == 0 or abs(points) > MAX_POINTS:
                result.dropped.append(f"item {n}: points {item.get('points')!r} unusable")
                continue
            axis = _axis(item.get("axis"))
            if axis is None:
                result.axis_defaulted += 1
            result.criteria.append(
                CriterionInput(
                    text=criterion, points=points, axis=axis or RubricCriterion.Axis.ACCURACY
                )
            )
        if len(result.criteria) > MAX_CRITERIA_PER_RUBRIC:
            result.dropped.append(f"{len(result.criteria) - MAX_CRITERIA_PER_RUBRIC} beyond limit")
            result.criteria = result.criteria[:MAX_CRITERIA_PER_RUBRIC]
        if any(c.points > 0 for c in result.criteria):
            return result
        reasons.append(
            "a JSON list with no criterion of positive points"
            if result.criteria
            else "a JSON list with no usable criterion"
        )
    if not reasons:
        raise UnparseableOutput("no JSON list of criteria in the output")
    raise UnparseableOutput("; ".join(dict.fromkeys(reasons)))


LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d{1,3}[.)])\s+")


def parse_draft_lines(text: str) -> DraftParse:
    """The honest fallback: each non-empty generated line, as written, is a +1 accuracy criterion.

    Only list markers are stripped; the physician who verifies the draft edits the rest.
    """
    lines = [LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
    lines = [line[:MAX_CRITERION_TEXT] for line in lines if line]
    if not lines:
        raise UnparseableOutput("the output has no non-empty line")
    result = DraftParse(
        criteria=[CriterionInput(text=line, points=1) for line in lines[:MAX_CRITERIA_PER_RUBRIC]],
        parsed="lines",
    )
    if len(lines) > MAX_CRITERIA_PER_RUBRIC:
        result.dropped.append(f"{len(lines) - MAX_CRITERIA_PER_RUBRIC} lines beyond limit")
    return result


VERDICT_WORDS = {
    "true": True,
    "met": True,
    "yes": True,
    "false": False,
    "not met": False,
    "not_met": False,
    "no": False,
}


def _verdict(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return VERDICT_WORDS.get(value.strip().lower())
    if isinstance(value, dict):
        for key in ("met", "criteria_met", "verdict"):
            if key in value:
                return _verdict(value[key])
    return None


def parse_verdicts(text: str, count: int) -> dict[int, bool]:
    """Verdicts by criterion number (1..count) from ``{"1": true, ...}`` found in ``text``.

    Also reads a list ``[{"id": 1, "met": true}]``. Returns what it found (possibly only some
    criteria); raises UnparseableOutput when it finds none.
    """
    found: dict[int, bool] = {}
    for value in json_values(text):
        pairs: list[tuple[Any, Any]] = []
        if isinstance(value, dict):
            pairs = list(value.items())
        elif isinstance(value, list):
            pairs = [
                (item.get("id", item.get("criterion")), item)
                for item in value
                if isinstance(item, dict)
            ]
        for key, raw in pairs:
            number = _whole_number(key)
            verdict = _verdict(raw)
            if number is not None and 1 <= number <= count and verdict is not None:
                found.setdefault(number, verdict)
        if len(found) == count:
            break
    if not found:
        raise UnparseableOutput("no JSON verdict for any criterion in the output")
    return found


# --- Schemas for constrained decoding ----------------------------------------------------------


def draft_schema() -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": DRAFT_MAX_CRITERIA,
        "items": {
            "type": "object",
            "properties": {
                "criterion": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": DRAFT_CRITERION_MAX_CHARS,
                },
                "points": {
                    "type": "integer",
                    "minimum": -DRAFT_POINTS_LIMIT,
                    "maximum": DRAFT_POINTS_LIMIT,
                },
                "axis": {"type": "string", "enum": list(AXES)},
            },
            "required": ["criterion", "points", "axis"],
            "additionalProperties": False,
        },
    }


def verdict_schema(count: int) -> dict[str, Any]:
    keys = [str(n) for n in range(1, count + 1)]
    return {
        "type": "object",
        "properties": {key: {"type": "boolean"} for key in keys},
        "required": keys,
        "additionalProperties": False,
    }


# --- Prompts (pure) ----------------------------------------------------------------------------


def _case_block(case: Case) -> str:
    data = case_data(case)
    parts = [f"Case (stratum: {case.stratum}):\n{case.narrative.strip()}"]
    if case.fields:
        parts.append(
            "Structured fields:\n" + prompts.render_template("{{ fields }}", data, layers={})
        )
    return "\n\n".join(parts)


def draft_messages(case: Case, layers: dict[str, Any]) -> list[dict[str, str]]:
    reference = prompts.decision_block(case.ground_truth, layers)
    parts = [_case_block(case)]
    parts.append(
        "Reference decision:\n" + reference if reference else "Reference decision: not recorded"
    )
    parts.append(
        DRAFT_INSTRUCTIONS.format(
            min_items=3,
            max_items=DRAFT_MAX_CRITERIA,
            limit=DRAFT_POINTS_LIMIT,
            axes=", ".join(AXES),
        )
    )
    return [
        {"role": "system", "content": DRAFT_SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def _criterion_line(number: int, criterion: RubricCriterion) -> str:
    line = f"{number}. [{criterion.points:+d} points] {criterion.text.strip()}"
    if criterion.points < 0:
        line += " (negative criterion: met = the undesirable behaviour occurred)"
    return line


def grade_messages(
    case: Case, answer: str, criteria: Sequence[RubricCriterion]
) -> list[dict[str, str]]:
    example = json.dumps({str(n): n % 2 == 1 for n in range(1, min(len(criteria), 2) + 1)})
    parts = [
        _case_block(case),
        f"Answer to grade:\n{answer.strip()}",
        "Criteria:\n" + "\n".join(_criterion_line(n, c) for n, c in enumerate(criteria, 1)),
        GRADE_INSTRUCTIONS.format(example=example),
    ]
    return [
        {"role": "system", "content": GRADE_SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]
