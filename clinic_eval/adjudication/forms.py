"""The adjudicator's final judgment form: the rating form's fields (named by the adjudicator's
own position letters with ``rating.forms.field_name``, parsed by ``rating.forms.judgment_input``)
plus a required reason. The rules the answers must meet are the rating service's."""

from __future__ import annotations

from django.http import QueryDict

from clinic_eval.adjudication.selectors import AdjudicationItem, preference_words
from clinic_eval.models import Adjudication
from clinic_eval.rating.forms import HALLUCINATION_LABELS, field_name, judgment_input
from clinic_eval.rating.inputs import JudgmentInput, answer_key

REASON = "reason"


def _label(key: str) -> str:
    return HALLUCINATION_LABELS.get(key, key.replace("_", " ").capitalize())


def final_form(item: AdjudicationItem, values: dict[str, str], errors: dict[str, str]) -> dict:
    """The final judgment form as plain nested data, so the template only loops and prints."""
    rubric = item.rubric
    flag = rubric.hallucination
    responses = []
    for shown in item.responses:
        letter = shown.letter
        dimensions = []
        for dimension in rubric.dimensions:
            name = field_name(letter, dimension.key)
            dimensions.append(
                {
                    "name": name,
                    "title": dimension.title,
                    "options": [
                        {"value": str(v), "anchor": dimension.anchors.get(v, "")}
                        for v in range(dimension.scale_min, dimension.scale_max + 1)
                    ],
                    "value": str(values.get(name, "")),
                    "error": errors.get(answer_key(letter, dimension.key)),
                }
            )
        responses.append(
            {
                "letter": letter,
                "dimensions": dimensions,
                "hallucination": {
                    "name": field_name(letter, "hallucination"),
                    "options": [{"value": k, "label": _label(k)} for k in flag.types],
                    "value": values.get(field_name(letter, "hallucination"), ""),
                    "error": errors.get(answer_key(letter, "hallucination")),
                },
                "severity": {
                    "name": field_name(letter, "severity"),
                    "options": [{"value": k, "label": _label(k)} for k in flag.severities],
                    "value": values.get(field_name(letter, "severity"), ""),
                    "error": errors.get(answer_key(letter, "severity")),
                },
                "note_name": field_name(letter, "note"),
                "note": values.get(field_name(letter, "note"), ""),
                "note_error": errors.get(answer_key(letter, "note")),
            }
        )
    positions = len(item.responses)
    return {
        "responses": responses,
        "hallucination_enabled": flag.enabled,
        # The adjudicator marks no spans, so the flag is asked even where raters' is derived.
        "hallucination_asked": flag.enabled,
        "note_allowed": flag.note_allowed,
        "preferences": [
            {"value": choice, "label": preference_words(choice, positions)}
            for choice in item.preference_choices
        ],
        "preference": values.get("preference", ""),
        "preference_error": errors.get("preference") or errors.get("ratings"),
        "reason": values.get(REASON, ""),
        "reason_error": errors.get(REASON),
        "best_of_n": item.study.design_config.mode == "best_of_n",
    }


def final_input(post: QueryDict, *, adjudication: Adjudication) -> tuple[JudgmentInput, str]:
    """The form's POST as a judgment on the adjudicator's positions, and the reason."""
    data, _, reason = judgment_input(
        post, positions=len(adjudication.shown_order), rubric=adjudication.study.rubric
    )
    return data, reason
