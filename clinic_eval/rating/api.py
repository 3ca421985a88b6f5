"""Rater API: the physician's rating flow (studies, next item, item, judgment) for other
front ends.

Blinding: every payload is built here from ``selectors.rating_item`` as plain data, and every
serializer lists its fields, so nothing that maps to an arm (labels, response, comparison or
case keys, model paths, generation settings) can reach a rater. Items and studies are named
only by their random public ids, responses only by their on-screen position letter.
Every endpoint reaches its object through ``study_get_for_rater`` or
``assignment_get_for_rater``, so anything not the rater's own is a 404.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from clinic_eval import access
from clinic_eval.config import (
    HARM_LEVELS,
    POSITION_LETTERS,
    Rubric,
    position_letter,
    position_of,
)
from clinic_eval.errors import DomainError, JudgmentInvalid
from clinic_eval.models import Assignment
from clinic_eval.rating import selectors, services
from clinic_eval.rating.services import GradeInput
from clinic_eval.spans.text import ResolvedSpan, SpanInput, sentences
from clinic_eval.web.api import AuthenticatedRequest, BaseApi, Shape
from clinic_eval.web.permissions import IsPhysician


class RaterApi(BaseApi):
    permission_classes = [IsPhysician]


# --- Output ---------------------------------------------------------------------------------


class RateDetailOutput(serializers.Serializer):
    detail = serializers.CharField()


class RateProgressOutput(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()


class RateStudyOutput(serializers.Serializer):
    public_id = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()
    done = serializers.IntegerField()
    total = serializers.IntegerField()


class RateCaseFieldOutput(serializers.Serializer):
    name = serializers.CharField()
    value = serializers.JSONField()


class RateCaseOutput(serializers.Serializer):
    # The API's field name; DRF's metaclass moves declared fields off the class attribute.
    fields = RateCaseFieldOutput(many=True)  # type: ignore[assignment]
    narrative = serializers.CharField()


class RateShownResponseOutput(serializers.Serializer):
    position = serializers.CharField(help_text="The on-screen letter: A, B, ...")
    text = serializers.CharField(
        help_text="Markdown as shown to raters; sanitise before display. When spans are on, "
        "the page shows it as plain text, character for character, and span ranges are "
        "offsets into it."
    )
    sentences = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        required=False,
        help_text="Only when spans are on: the [start, end) offsets of the text's sentences "
        "and lines, the steps of keyboard marking",
    )


class RateDimensionOutput(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    scale_min = serializers.IntegerField()
    scale_max = serializers.IntegerField()
    anchors = serializers.DictField(
        child=serializers.CharField(), help_text="Scale value (as a string) -> anchor text"
    )


class RateHallucinationOutput(serializers.Serializer):
    enabled = serializers.BooleanField()
    types = serializers.ListField(child=serializers.CharField())
    severities = serializers.ListField(child=serializers.CharField())
    note_allowed = serializers.BooleanField()


class RateSpanCategoryOutput(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    omission = serializers.BooleanField(
        help_text="An omission has no range: it names a case field left out, or a note"
    )


class RateSpansOutput(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="Whether spans are marked in this study")
    categories = RateSpanCategoryOutput(many=True)
    harm_levels = serializers.ListField(
        child=serializers.CharField(),
        help_text="Least to most: none, minor, moderate, severe (adapted from the AHRQ Common "
        "Formats Harm Scale v1.2, without death)",
    )
    hallucination_flag = serializers.ChoiceField(
        choices=["asked", "derived"],
        help_text="derived: each response's hallucination flag is computed from its spans, "
        "whatever is sent",
    )
    max_spans_per_response = serializers.IntegerField()


class RateRubricOutput(serializers.Serializer):
    dimensions = RateDimensionOutput(many=True)
    hallucination = RateHallucinationOutput()
    spans = RateSpansOutput()


class RateRatingOutput(serializers.Serializer):
    position = serializers.CharField()
    scores = serializers.DictField(child=serializers.IntegerField())
    hallucination = serializers.CharField(allow_blank=True)
    severity = serializers.CharField(allow_blank=True)
    note = serializers.CharField(allow_blank=True)


class RateGradeOutput(serializers.Serializer):
    position = serializers.CharField(help_text="The on-screen letter: A, B, ...")
    criterion = serializers.IntegerField(help_text="The criterion's number on this item (1-based)")
    met = serializers.BooleanField(
        help_text="Met; for an undesirable criterion (negative points): it occurred"
    )
    note = serializers.CharField(allow_blank=True)


class RateSpanOutput(serializers.Serializer):
    position = serializers.CharField(help_text="The on-screen letter of the marked response")
    start = serializers.IntegerField(
        allow_null=True, help_text="Offset into the response's text; null for an omission"
    )
    end = serializers.IntegerField(allow_null=True, help_text="Exclusive; null for an omission")
    quote = serializers.CharField(allow_blank=True, help_text="The text of the range")
    category = serializers.CharField()
    harm = serializers.CharField()
    case_field = serializers.CharField(allow_blank=True)
    note = serializers.CharField(allow_blank=True)


class RateJudgmentOutput(serializers.Serializer):
    preference = serializers.CharField(help_text='Always "none" in rubric mode (not asked)')
    rationale = serializers.CharField(allow_blank=True)
    revision = serializers.IntegerField(help_text="Send this back to edit the judgment.")
    ratings = RateRatingOutput(many=True)
    grades = RateGradeOutput(many=True, help_text="Rubric mode: one per response and criterion")
    spans = RateSpanOutput(many=True, help_text="Marked spans, in reading order, omissions last")


class RateCriterionOutput(serializers.Serializer):
    number = serializers.IntegerField(help_text="Names the criterion in grades (1-based)")
    text = serializers.CharField()
    points = serializers.IntegerField()
    undesirable = serializers.BooleanField(
        help_text="Negative points: grade whether the undesirable behaviour occurred"
    )


class RateItemOutput(serializers.Serializer):
    public_id = serializers.CharField()
    study_id = serializers.CharField(help_text="The study's public id")
    number = serializers.IntegerField(help_text="1-based place of this item in the queue")
    progress = RateProgressOutput()
    case = RateCaseOutput()
    responses = RateShownResponseOutput(many=True)
    rubric = RateRubricOutput()
    choices = serializers.ListField(
        child=serializers.CharField(), help_text='Position letters, then "tie" and/or "none"'
    )
    rationale_required = serializers.BooleanField()
    mode = serializers.ChoiceField(
        choices=["pairwise", "best_of_n", "rubric"],
        help_text="rubric: grade every criterion for every response; no ratings or preference",
    )
    criteria = RateCriterionOutput(
        many=True, help_text="Rubric mode: the case's criteria, asked for every response"
    )
    judgment = RateJudgmentOutput(allow_null=True)


class RateJudgmentResultOutput(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=[outcome.value for outcome in services.JudgmentOutcome]
    )
    revision = serializers.IntegerField()
    next_item = serializers.CharField(
        allow_null=True, help_text="The public id of the next item, or null when the queue is done"
    )


ERRORS_DESCRIPTION = (
    'Field -> message; per-response fields are "A.<dimension key>", "A.hallucination", '
    '"A.severity", "A.note"; in rubric mode "A.c<n>" and "A.c<n>.note" for criterion n; for '
    'the n-th span sent on Response A (counted from 1) "A.span<n>" (the whole span), '
    '"A.span<n>.quote" (its range or quote), "A.span<n>.category", "A.span<n>.harm", '
    '"A.span<n>.case_field", "A.span<n>.note", and "A.spans" for too many'
)


class RateJudgmentErrorsOutput(serializers.Serializer):
    detail = serializers.CharField()
    # The API's field name; DRF's metaclass moves declared fields off the class attribute.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.CharField(),
        help_text=ERRORS_DESCRIPTION,
    )


# A 400 from the judgment endpoint has one of three shapes; the first is the one a client acts
# on, the others come from DRF before the judgment is looked at.
JUDGMENT_REFUSED_SCHEMA = {
    "anyOf": [
        {
            "description": "The judgment is incomplete or invalid",
            "type": "object",
            "required": ["detail", "errors"],
            "properties": {
                "detail": {"type": "string"},
                "errors": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": ERRORS_DESCRIPTION,
                },
            },
        },
        {
            "description": "The body does not fit the input: field -> messages, nested as "
            'the input is (e.g. {"ratings": {"0": {"position": ["..."]}}} or '
            '{"spans": {"1": {"start": ["..."]}}})',
            "type": "object",
            "additionalProperties": {"anyOf": [{"type": "array"}, {"type": "object"}]},
        },
        {
            "description": "The body does not parse",
            "type": "object",
            "required": ["detail"],
            "properties": {"detail": {"type": "string"}},
        },
    ]
}


# --- Input ----------------------------------------------------------------------------------


class RateRatingInput(serializers.Serializer):
    position = serializers.ChoiceField(
        choices=list(POSITION_LETTERS), help_text="The on-screen letter: A, B, ..."
    )
    scores = serializers.DictField(child=serializers.IntegerField(allow_null=True))
    hallucination = serializers.CharField(required=False, allow_blank=True, default="")
    severity = serializers.CharField(required=False, allow_blank=True, default="")
    note = serializers.CharField(required=False, allow_blank=True, default="")


class RateGradeInput(serializers.Serializer):
    position = serializers.ChoiceField(
        choices=list(POSITION_LETTERS), help_text="The on-screen letter: A, B, ..."
    )
    criterion = serializers.IntegerField(
        min_value=1, help_text="The criterion's number from the item's criteria"
    )
    met = serializers.BooleanField(
        allow_null=True,
        help_text="true: met; for an undesirable criterion (negative points), true means the "
        "behaviour occurred. null counts as not answered.",
    )
    note = serializers.CharField(required=False, allow_blank=True, default="")


class RateSpanInput(serializers.Serializer):
    """A marked span: ``start`` and ``end`` (offsets into the response's text, as the item's
    ``sentences`` are), or a ``quote`` of the text the server finds (``occurrence``, from 1,
    where it appears more than once); an omission has neither and names a ``case_field`` or
    says what is missing in the ``note``."""

    position = serializers.ChoiceField(
        choices=list(POSITION_LETTERS), help_text="The on-screen letter: A, B, ..."
    )
    start = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0)
    end = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=0, help_text="Exclusive"
    )
    quote = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="With start and end: must equal the text there; alone: found in the text",
    )
    occurrence = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1
    )
    category = serializers.CharField(help_text="A key from rubric.spans.categories")
    harm = serializers.CharField(help_text="One of rubric.spans.harm_levels")
    case_field = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Omissions: a case field name"
    )
    note = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False
    )


class RateJudgmentInput(serializers.Serializer):
    """Likert modes: ``preference`` and ``ratings``. Rubric mode: ``grades``, one for every
    criterion of the item and every response, e.g. ``{"grades": [{"position": "A",
    "criterion": 1, "met": true, "note": ""}, ...]}``; preference and ratings are left out.
    Where the rubric marks spans, ``spans`` in either mode (an edit replaces the stored set)."""

    preference = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Not asked in rubric mode"
    )
    rationale = serializers.CharField(required=False, allow_blank=True, default="")
    revision = serializers.IntegerField(
        min_value=0, default=0, help_text="0 for a new judgment; the stored revision to edit"
    )
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=2_000, help_text="Why you edit"
    )
    ratings = RateRatingInput(
        many=True, required=False, default=list, help_text="Likert modes: one per response"
    )
    grades = RateGradeInput(
        many=True,
        required=False,
        default=list,
        help_text="Rubric mode: a verdict on every criterion for every response",
    )
    spans = RateSpanInput(
        many=True,
        required=False,
        default=list,
        help_text="Marked spans on any response, when rubric.spans.enabled",
    )


# --- Plain data for the output serializers --------------------------------------------------


def _rubric_data(rubric: dict) -> dict[str, Any]:
    parsed = Rubric.model_validate(rubric)
    flag, spans = parsed.hallucination, parsed.spans
    return {
        "dimensions": [
            {
                "key": d.key,
                "title": d.title,
                "scale_min": d.scale_min,
                "scale_max": d.scale_max,
                "anchors": {str(value): text for value, text in sorted(d.anchors.items())},
            }
            for d in parsed.dimensions
        ],
        "hallucination": {
            "enabled": flag.enabled,
            "types": list(flag.types),
            "severities": list(flag.severities),
            "note_allowed": flag.note_allowed,
        },
        "spans": {
            "enabled": spans.enabled,
            "categories": [
                {"key": c.key, "title": c.title, "omission": c.omission} for c in spans.categories
            ],
            "harm_levels": list(HARM_LEVELS),
            "hallucination_flag": spans.hallucination_flag,
            "max_spans_per_response": spans.max_spans_per_response,
        },
    }


def _span_data(span: ResolvedSpan) -> dict[str, Any]:
    return {
        "position": position_letter(span.position),
        "start": span.start,
        "end": span.end,
        "quote": span.quote,
        "category": span.category,
        "harm": span.harm,
        "case_field": span.case_field,
        "note": span.note,
    }


def _response_data(item: selectors.RatingItem, shown: selectors.ShownResponse) -> dict[str, Any]:
    data: dict[str, Any] = {"position": shown.letter, "text": shown.text}
    if item.span_config.enabled:
        data["sentences"] = [[start, end] for start, end in sentences(shown.text)]
    return data


def _item_data(item: selectors.RatingItem) -> dict[str, Any]:
    judgment = None
    if item.judgment is not None:
        judgment = {
            "preference": item.judgment.preference,
            "rationale": item.judgment.rationale,
            "revision": item.judgment.revision,
            "ratings": [
                {
                    "position": position_letter(rating.position),
                    "scores": dict(rating.scores),
                    "hallucination": rating.hallucination,
                    "severity": rating.severity,
                    "note": rating.note,
                }
                for rating in sorted(item.judgment.ratings.all(), key=lambda r: r.position)
            ],
            "grades": [
                {"position": letter, "criterion": number, "met": met, "note": note}
                for letter, number, met, note in item.grades
            ],
            "spans": [_span_data(span) for span in item.spans],
        }
    return {
        "public_id": item.assignment.public_id,
        "study_id": item.study.public_id,
        "number": item.number,
        "progress": {"done": item.progress.done, "total": item.progress.total},
        "case": {
            "fields": [{"name": str(name), "value": value} for name, value in item.fields],
            "narrative": item.narrative,
        },
        "responses": [_response_data(item, shown) for shown in item.responses],
        "rubric": _rubric_data(item.study.rubric),
        "choices": list(item.preference_choices),
        "rationale_required": item.study.design_config.rationale_required,
        "mode": item.mode,
        "criteria": [
            {"number": c.number, "text": c.text, "points": c.points, "undesirable": c.undesirable}
            for c in item.criteria
        ],
        "judgment": judgment,
    }


ITEM = Shape(RateItemOutput())
JUDGMENT_IN = Shape(RateJudgmentInput())
JUDGMENT_RESULT = Shape(RateJudgmentResultOutput())


def _item_response(assignment: Assignment) -> Response:
    item = selectors.rating_item(assignment=assignment)
    return Response(ITEM.render(_item_data(item)))


def _judgment_input(payload: dict[str, Any]) -> services.JudgmentInput:
    return services.JudgmentInput(
        preference=payload["preference"],
        rationale=payload["rationale"],
        ratings=tuple(
            services.RatingInput(
                position=position_of(rating["position"]),
                scores=dict(rating["scores"]),
                hallucination=rating["hallucination"],
                severity=rating["severity"],
                note=rating["note"],
            )
            for rating in payload["ratings"]
        ),
        grades=tuple(
            GradeInput(
                position=position_of(grade["position"]),
                criterion=grade["criterion"],
                met=grade["met"],
                note=grade["note"],
            )
            for grade in payload["grades"]
        ),
        spans=tuple(
            SpanInput(
                position=position_of(span["position"]),
                category=span["category"],
                harm=span["harm"],
                start=span["start"],
                end=span["end"],
                quote=span["quote"],
                occurrence=span["occurrence"],
                case_field=span["case_field"],
                note=span["note"],
            )
            for span in payload["spans"]
        ),
    )


# --- Endpoints ------------------------------------------------------------------------------


class RateStudyListApi(RaterApi):
    @extend_schema(responses=RateStudyOutput(many=True))
    def get(self, request: AuthenticatedRequest) -> Response:
        rows = [
            {
                "public_id": progress.study.public_id,
                "title": progress.study.title,
                "status": progress.study.status,
                "done": progress.done,
                "total": progress.total,
            }
            for progress in selectors.rater_studies(rater=request.user)
        ]
        return Response(RateStudyOutput(rows, many=True).data)


class RateNextApi(RaterApi):
    @extend_schema(
        request=None,
        responses={200: RateItemOutput, 204: None},
        description="The item you hold, else the next in your queue (leased to you); "
        "204 when nothing is left to rate.",
    )
    def post(self, request: AuthenticatedRequest, study_id: str) -> Response:
        study = access.study_get_for_rater(user=request.user, public_id=study_id)
        assignment = services.assignment_next(rater=request.user, study=study)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _item_response(assignment)


class RateItemApi(RaterApi):
    @extend_schema(responses=RateItemOutput)
    def get(self, request: AuthenticatedRequest, public_id: str) -> Response:
        assignment = access.assignment_get_for_rater(user=request.user, public_id=public_id)
        return _item_response(assignment)


class RateJudgmentApi(RaterApi):
    @extend_schema(
        request=RateJudgmentInput,
        responses={
            201: RateJudgmentResultOutput,
            200: RateJudgmentResultOutput,
            400: JUDGMENT_REFUSED_SCHEMA,
            409: RateDetailOutput,
        },
        description="Store your judgment: 201 when created; 200 when identical to the stored "
        "one (nothing changes) or when an edit with the current revision was saved. "
        "400 with field errors, nothing stored (a span's errors are keyed by its response "
        'and its number among that response\'s spans: "A.span2.quote"). '
        "409 when the judgment changed since you loaded it or the study is closed.",
    )
    def put(self, request: AuthenticatedRequest, public_id: str) -> Response:
        assignment = access.assignment_get_for_rater(user=request.user, public_id=public_id)
        payload = JUDGMENT_IN.validated(request.data)
        try:
            judgment, outcome = services.judgment_record(
                assignment=assignment,
                rater=request.user,
                data=_judgment_input(payload),
                revision=payload["revision"],
                reason=payload["reason"],
            )
        except JudgmentInvalid as exc:
            errors = RateJudgmentErrorsOutput(
                {"detail": "The judgment is incomplete or invalid.", "errors": exc.errors}
            )
            return Response(errors.data, status=status.HTTP_400_BAD_REQUEST)
        except DomainError as exc:  # StaleJudgment, or the study is not open
            return Response(
                RateDetailOutput({"detail": str(exc)}).data, status=status.HTTP_409_CONFLICT
            )
        following = services.assignment_next(rater=request.user, study=assignment.study)
        result = {
            "outcome": outcome,
            "revision": judgment.revision,
            "next_item": following.public_id if following else None,
        }
        created = outcome == services.JudgmentOutcome.CREATED
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(JUDGMENT_RESULT.render(result), status=code)
