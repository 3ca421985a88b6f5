from __future__ import annotations

from collections.abc import Iterable

from django.http import QueryDict

from clinic_eval.config import position_letter
from clinic_eval.models import (
    Judgment,
)
from clinic_eval.rating import selectors, services
from clinic_eval.rating.services import GradeInput, answer_key, criterion_part

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
    judgment: Judgment | None, grades: Iterable[tuple[str, int, bool, str]] = ()
) -> dict[str, str]:
    if judgment is None:
        return {}
    values = {"preference": judgment.preference, "rationale": judgment.rationale}
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
        responses.append({"letter": letter, "text": shown.text, "criteria": criteria})
    return {
        "rubric_mode": True,
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
    return {
        "responses": responses,
        "hallucination_enabled": flag["enabled"],
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
    )
    return data, revision, post.get("reason", "")
