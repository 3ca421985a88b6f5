from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.http import QueryDict

from clinic_eval.config import HARM_LEVELS, HARM_SCALE, SpanAnnotation, harm_words, position_letter
from clinic_eval.models import (
    Judgment,
)
from clinic_eval.rating import selectors, services
from clinic_eval.rating.services import GradeInput, answer_key, criterion_part
from clinic_eval.spans.rendering import Mark, marked_text
from clinic_eval.spans.text import ResolvedSpan, SpanInput, find_quote

MET = "met"


NOT_MET = "not"


def field_name(letter: str, *parts: str) -> str:
    """The form field of one answer about Response ``letter``: ``A-clarity``, ``B-c3-note``.

    Both the form this module renders and the parser below use it, with the parts of the
    service's ``answer_key``, so an error lands beside the field it is about.
    """
    return "-".join((letter, *parts))


HALLUCINATION_LABELS = {
    "none": "No hallucination",
    "factual": "Factual error",
    "reasoning": "Reasoning error",
    "minor": "Minor",
    "major": "Major",
}


def _choice_label(key: str) -> str:
    return HALLUCINATION_LABELS.get(key, key.replace("_", " ").capitalize())


def _shortcut_keys(keys: list[str], reserved: set[str]) -> dict[str, str]:
    """A one-key shortcut per option: the first letter of its name that no other option and
    no preference choice uses (minor -> M, major -> J), else a digit."""
    shortcuts: dict[str, str] = {}
    for index, key in enumerate(keys):
        free = [
            c for c in key.lower() if c.isalpha() and c not in reserved | set(shortcuts.values())
        ]
        shortcuts[key] = free[0] if free else str(index + 1)
    return shortcuts


def judgment_values(
    judgment: Judgment | None,
    grades: Iterable[tuple[str, int, bool, str]] = (),
    spans: Sequence[ResolvedSpan] = (),
) -> dict[str, str]:
    if judgment is None:
        return {}
    values = {"preference": judgment.preference, "rationale": judgment.rationale}
    values.update(span_values(spans))
    for letter, number, met, note in grades:
        values[field_name(letter, criterion_part(number))] = MET if met else NOT_MET
        values[field_name(letter, criterion_part(number), "note")] = note
    for rating in judgment.ratings.all():
        letter = position_letter(rating.position)
        for key, score in rating.scores.items():
            values[field_name(letter, key)] = str(score)
        values[field_name(letter, "hallucination")] = rating.hallucination
        values[field_name(letter, "severity")] = rating.severity
        values[field_name(letter, "note")] = rating.note
    return values


# --- Spans ------------------------------------------------------------------------------------
# Each response's spans are rows of fields named ``A-span2-quote`` (``field_name`` with the
# row's number): a range (start, end and its quote, which the page's script fills from a
# selection) or, without JavaScript, a quote the server finds (with an occurrence number where
# it appears more than once); an omission names a case field or says what is missing in the
# note. The service numbers the spans it is sent per response from 1, and so does the form
# when it shows them again, so an error keyed ``A.span2.quote`` lands beside its row.

SPAN_PARTS = ("start", "end", "quote", "occurrence", "category", "harm", "case_field", "note")
SPAN_REMOVE = "remove"
BLANK_SPAN_ROWS = 3
# A new span's harm before the rater changes it: a marked error is taken to matter (not
# "none"), and moderate or severe, which make the derived flag major and can send an item to
# adjudication, are always the rater's own choice.
DEFAULT_HARM = "minor"
_SPAN_FIELD = re.compile(r"^([A-H])-span(\d{1,6})-")


def _span_field(letter: str, number: int | str, part: str) -> str:
    return field_name(letter, f"span{number}", part)


def span_values(spans: Iterable[ResolvedSpan]) -> dict[str, str]:
    """Stored spans as the form's fields, numbered per response from 1 in reading order."""
    values: dict[str, str] = {}
    numbers: dict[int, int] = {}
    for span in spans:
        number = numbers[span.position] = numbers.get(span.position, 0) + 1
        letter = position_letter(span.position)
        parts = {
            "start": "" if span.start is None else str(span.start),
            "end": "" if span.end is None else str(span.end),
            "quote": span.quote,
            "category": span.category,
            "harm": span.harm,
            "case_field": span.case_field,
            "note": span.note,
        }
        for part, value in parts.items():
            values[_span_field(letter, number, part)] = value
    return values


def span_rows(values: Mapping[str, Any], letter: str) -> list[dict[str, str]]:
    """The span rows sent for Response ``letter`` in row order, each as its parts' raw values,
    without rows left blank or ticked for removal (the rows the service numbers 1, 2, ...)."""
    numbers = sorted(
        {
            int(match.group(2))
            for key in values
            if (match := _SPAN_FIELD.match(key)) and match.group(1) == letter
        }
    )
    rows = []
    for number in numbers:
        if str(values.get(_span_field(letter, number, SPAN_REMOVE), "")).strip():
            continue
        row = {part: str(values.get(_span_field(letter, number, part), "")) for part in SPAN_PARTS}
        if any(value.strip() for value in row.values()):
            rows.append(row)
    return rows


def _whole_number(raw: str) -> int | None:
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None


def _spans_input(post: Mapping[str, Any], positions: int) -> tuple[SpanInput, ...]:
    spans = []
    for position in range(positions):
        for row in span_rows(post, position_letter(position)):
            spans.append(
                SpanInput(
                    position=position,
                    category=row["category"].strip(),
                    harm=row["harm"].strip(),
                    start=_whole_number(row["start"]),
                    end=_whole_number(row["end"]),
                    quote=row["quote"],
                    occurrence=_whole_number(row["occurrence"]),
                    case_field=row["case_field"].strip(),
                    note=row["note"],
                )
            )
    return tuple(spans)


def _span_range(row: Mapping[str, str], text: str) -> tuple[int, int] | None:
    """Where a row's span lies in the text, to show it marked; None when it does not (yet)."""
    start, end = _whole_number(row["start"]), _whole_number(row["end"])
    if start is not None and end is not None:
        return (start, end) if 0 <= start < end <= len(text) else None
    if row["quote"].strip() and not row["start"].strip() and not row["end"].strip():
        try:
            return find_quote(text, row["quote"], _whole_number(row["occurrence"]))
        except ValueError:
            return None
    return None


def _span_kind(row: Mapping[str, str], config: SpanAnnotation) -> str:
    """How a row is shown: a marked range, a quote to find (the no-JavaScript row), or an
    omission (no text of the response)."""
    if row["start"].strip() or row["end"].strip():
        return "range"
    category = config.category(row["category"].strip())
    if category is not None and category.omission and not row["quote"].strip():
        return "omission"
    return "quote"


def _span_row(
    letter: str,
    number: int | str,
    row: Mapping[str, str],
    kind: str,
    errors: Mapping[str, str],
    *,
    shown: str = "",
    blank: bool = False,
) -> dict[str, Any]:
    key = f"span{number}"
    return {
        "number": number,
        "kind": kind,
        "blank": blank,
        "shown": shown,
        "names": {part: _span_field(letter, number, part) for part in (*SPAN_PARTS, SPAN_REMOVE)},
        "values": dict(row),
        "error": errors.get(answer_key(letter, key)),
        "errors": {
            part: errors.get(answer_key(letter, key, part))
            for part in SPAN_PARTS
            if errors.get(answer_key(letter, key, part))
        },
    }


def _response_spans(
    item: selectors.RatingItem, letter: str, text: str, values: dict, errors: dict
) -> dict[str, Any]:
    """One response's spans: its text with the spans marked, and the rows of fields."""
    config = item.span_config
    if not config.enabled:
        return {"body": None}
    titles = {c.key: c.title for c in config.categories}
    rows, marks = [], []
    for number, row in enumerate(span_rows(values, letter), 1):
        found = _span_range(row, text)
        kind = _span_kind(row, config)
        shown = text[found[0] : found[1]] if found and kind == "range" else row["quote"]
        rows.append(_span_row(letter, number, row, kind, errors, shown=shown))
        category = row["category"].strip()
        if found is not None:
            known = category in titles
            harm = row["harm"].strip()
            marks.append(
                Mark(
                    *found,
                    classes=f"span-mark span-cat-{category if known else 'unknown'}",
                    title=f"{titles.get(category, 'No category')}, {harm_words(harm)}",
                )
            )
    empty = dict.fromkeys(SPAN_PARTS, "")
    blanks = [
        _span_row(letter, len(rows) + n, empty, "quote", errors, blank=True)
        for n in range(1, BLANK_SPAN_ROWS + 1)
    ]
    prototype = {**empty, "harm": DEFAULT_HARM}
    return {
        "body": marked_text(text, marks),
        "span_rows": rows,
        "span_blanks": blanks,
        "span_templates": [
            _span_row(letter, "__N__", prototype, kind, {}) for kind in ("range", "omission")
        ],
        "span_error": errors.get(answer_key(letter, "spans")),
    }


def _derived_rule(item: selectors.RatingItem) -> str:
    """``spans.text.derived_flag`` in words, from this rubric's own categories and levels."""
    config, flag = item.span_config, item.study.rubric_config.hallucination
    implied: dict[str, list[str]] = {}
    for category in config.categories:
        if category.hallucination:
            implied.setdefault(category.hallucination, []).append(category.title.lower())
    if not implied or not flag.severities:
        return "No span category flags a hallucination, so it is always none."
    kinds = "; ".join(f"{' or '.join(titles)}: {kind}" for kind, titles in implied.items())
    return (
        f"The most harmful span decides its type ({kinds}); moderate or severe harm makes it "
        f"{flag.severities[-1]}, none or minor harm {flag.severities[0]}; with no such span it "
        "is none."
    )


def _spans_form(item: selectors.RatingItem) -> dict[str, Any]:
    """What every response's span fields and the marking popover offer."""
    config = item.span_config
    if not config.enabled:
        return {"enabled": False}
    marked = [c for c in config.categories if not c.omission]
    keys = {c.key: str(n) for n, c in enumerate(marked[:9], 1)}
    return {
        "enabled": True,
        "derived": config.hallucination_flag == "derived",
        "derived_rule": _derived_rule(item),
        "categories": [
            {"key": c.key, "title": c.title, "omission": c.omission, "shortcut": keys.get(c.key)}
            for c in config.categories
        ],
        # Those a selection can be tagged with (an omission marks no text), with their keys.
        "marking": [{"key": c.key, "title": c.title, "shortcut": keys.get(c.key)} for c in marked],
        "omission_category": next((c.key for c in config.categories if c.omission), ""),
        "harm_levels": [
            {"value": level, "label": HARM_SCALE[level][0], "meaning": HARM_SCALE[level][1]}
            for level in HARM_LEVELS
        ],
        "default_harm": DEFAULT_HARM,
        "case_fields": [str(name) for name, _ in item.fields],
        "max": config.max_spans_per_response,
    }


# Y answers "yes" (met, or the undesirable behaviour occurred), N "no".
GRADE_WORDING = {
    False: ((MET, "Met", "y"), (NOT_MET, "Not met", "n")),
    True: ((MET, "Occurred", "y"), (NOT_MET, "Did not occur", "n")),
}


def _grading_form(item: selectors.RatingItem, values: dict, errors: dict) -> dict:
    """Rubric mode: per response, a met / not-met question and a note on every criterion.

    A criterion with negative points describes something undesirable; its question asks
    whether that occurred, so "met" never reads as praise."""
    responses = []
    for shown in item.responses:
        letter = shown.letter
        criteria = []
        for criterion in item.criteria:
            part = criterion_part(criterion.number)
            name = field_name(letter, part)
            criteria.append(
                {
                    "name": name,
                    "number": criterion.number,
                    "text": criterion.text,
                    "points": criterion.points,
                    "undesirable": criterion.undesirable,
                    "options": [
                        {"value": value, "label": label, "key": key}
                        for value, label, key in GRADE_WORDING[criterion.undesirable]
                    ],
                    "value": values.get(name, ""),
                    "error": errors.get(answer_key(letter, part)),
                    "note_name": field_name(letter, part, "note"),
                    "note": values.get(
                        field_name(letter, criterion_part(criterion.number), "note"), ""
                    ),
                    "note_error": errors.get(
                        answer_key(letter, criterion_part(criterion.number), "note")
                    ),
                }
            )
        responses.append(
            {
                "letter": letter,
                "text": shown.text,
                "criteria": criteria,
                **_response_spans(item, letter, shown.text, values, errors),
            }
        )
    return {
        "rubric_mode": True,
        "spans": _spans_form(item),
        "responses": responses,
        "grades_error": errors.get("grades") or errors.get("ratings"),
        "rationale": values.get("rationale", ""),
        "rationale_error": errors.get("rationale"),
        "rationale_required": item.study.design_config.rationale_required,
    }


def rating_form(item: selectors.RatingItem, values: dict, errors: dict) -> dict:
    """The rating form as plain nested data, so the template only loops and prints."""
    if item.is_rubric:
        return _grading_form(item, values, errors)
    rubric, design = item.study.rubric, item.study.design_config
    flag = rubric["hallucination"]
    reserved = {
        "t",
        "x",
        *(choice.lower() for choice in item.preference_choices if len(choice) == 1),
    }
    type_keys = _shortcut_keys(flag["types"], reserved)
    severity_keys = _shortcut_keys(flag["severities"], reserved | set(type_keys.values()))
    responses = []
    for shown in item.responses:
        letter = shown.letter
        dimensions = []
        for dimension in rubric["dimensions"]:
            name = field_name(letter, dimension["key"])
            anchors = {int(k): v for k, v in dimension.get("anchors", {}).items()}
            scale = range(dimension["scale_min"], dimension["scale_max"] + 1)
            dimensions.append(
                {
                    "name": name,
                    "title": dimension["title"],
                    "options": [
                        {"value": str(v), "key": str(v), "anchor": anchors.get(v, "")}
                        for v in scale
                    ],
                    "value": str(values.get(name, "")),
                    "error": errors.get(answer_key(letter, dimension["key"])),
                }
            )
        responses.append(
            {
                "letter": letter,
                "text": shown.text,
                "dimensions": dimensions,
                "hallucination": {
                    "name": field_name(letter, "hallucination"),
                    "options": [
                        {"value": k, "key": type_keys[k], "label": _choice_label(k)}
                        for k in flag["types"]
                    ],
                    "value": values.get(field_name(letter, "hallucination"), ""),
                    "error": errors.get(answer_key(letter, "hallucination")),
                },
                "severity": {
                    "name": field_name(letter, "severity"),
                    "options": [
                        {"value": k, "key": severity_keys[k], "label": _choice_label(k)}
                        for k in flag["severities"]
                    ],
                    "value": values.get(field_name(letter, "severity"), ""),
                    "error": errors.get(answer_key(letter, "severity")),
                },
                "note_name": field_name(letter, "note"),
                "note": values.get(field_name(letter, "note"), ""),
                "note_error": errors.get(answer_key(letter, "note")),
                **_response_spans(item, letter, shown.text, values, errors),
            }
        )
    preference_labels: dict[str, tuple[str, str]] = {
        Judgment.Preference.TIE: ("Tie", "t"),
        Judgment.Preference.NONE: (
            "Both unacceptable" if len(item.responses) == 2 else "None acceptable",
            "x",
        ),
    }
    preferences = []
    for choice in item.preference_choices:
        label, key = preference_labels.get(choice, (f"Response {choice}", choice.lower()))
        preferences.append({"value": choice, "label": label, "key": key})
    spans = _spans_form(item)
    return {
        "responses": responses,
        "spans": spans,
        "hallucination_enabled": flag["enabled"],
        # Derived from spans: the service sets each response's flag, so it is not asked.
        "hallucination_asked": flag["enabled"] and not spans.get("derived"),
        "note_allowed": flag["note_allowed"],
        "preferences": preferences,
        "preference": values.get("preference", ""),
        "preference_error": errors.get("preference") or errors.get("ratings"),
        "rationale": values.get("rationale", ""),
        "rationale_error": errors.get("rationale"),
        "rationale_required": design.rationale_required,
        "best_of_n": design.mode == "best_of_n",
    }


def _grades_input(post: QueryDict, positions: int, criteria: int) -> tuple[GradeInput, ...]:
    """Rubric mode: ``A-c3`` is "met" or "not" for criterion 3 of Response A; ``A-c3-note``."""
    grades = []
    for position in range(positions):
        letter = position_letter(position)
        for number in range(1, criteria + 1):
            raw = post.get(field_name(letter, criterion_part(number)), "")
            grades.append(
                GradeInput(
                    position=position,
                    criterion=number,
                    met={MET: True, NOT_MET: False}.get(raw),
                    note=post.get(field_name(letter, criterion_part(number), "note"), ""),
                )
            )
    return tuple(grades)


def judgment_input(
    post: QueryDict, *, positions: int, rubric: dict, criteria: int | None = None
) -> tuple[services.JudgmentInput, int, str]:
    """A rating form's POST as a judgment, its revision and edit reason.

    Only parses; the service validates against the rubric, so the page and the API refuse
    exactly the same things. Field names carry positions (A, B...) and never an id.
    ``criteria``: in rubric mode, how many criteria the case has (grades instead of ratings).
    """
    revision_raw = post.get("revision", "0")
    revision = int(revision_raw) if revision_raw.isdigit() else -1
    if criteria is not None:
        data = services.JudgmentInput(
            preference="",
            ratings=(),
            rationale=post.get("rationale", ""),
            grades=_grades_input(post, positions, criteria),
            spans=_spans_input(post, positions),
        )
        return data, revision, post.get("reason", "")
    ratings = []
    for position in range(positions):
        letter = position_letter(position)
        scores: dict[str, int | None] = {}
        for dimension in rubric.get("dimensions", []):
            raw = post.get(field_name(letter, dimension["key"]), "")
            scores[dimension["key"]] = int(raw) if raw.strip().lstrip("-").isdigit() else None
        ratings.append(
            services.RatingInput(
                position=position,
                scores=scores,
                hallucination=post.get(field_name(letter, "hallucination"), ""),
                severity=post.get(field_name(letter, "severity"), ""),
                note=post.get(field_name(letter, "note"), ""),
            )
        )
    data = services.JudgmentInput(
        preference=post.get("preference", ""),
        ratings=tuple(ratings),
        rationale=post.get("rationale", ""),
        spans=_spans_input(post, positions),
    )
    return data, revision, post.get("reason", "")
