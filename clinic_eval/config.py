"""Typed configuration stored in a study's JSON fields, validated on the way in."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic import ValidationError as PydanticValidationError

from clinic_eval.vocabulary import DEFAULT_DECISION_LAYERS, STRATA

Key = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=80, strip_whitespace=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionLayer(_Strict):
    title: Label
    multi: bool = False
    labels: list[Label] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _labels_unique(self) -> DecisionLayer:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self


class DecisionLayers(_Strict):
    layers: dict[Key, DecisionLayer] = Field(max_length=20)


class Strata(_Strict):
    strata: list[Label] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _unique(self) -> Strata:
        if len(set(self.strata)) != len(self.strata):
            raise ValueError("strata must be unique")
        return self


class LikertDimension(_Strict):
    key: Key
    title: Label
    scale_min: int = Field(default=1, ge=0, le=1)
    scale_max: int = Field(default=5, ge=2, le=10)
    anchors: dict[int, Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _anchors_in_range(self) -> LikertDimension:
        outside = [k for k in self.anchors if not self.scale_min <= k <= self.scale_max]
        if outside:
            raise ValueError(f"anchors {outside} lie outside {self.scale_min}..{self.scale_max}")
        return self


class HallucinationFlag(_Strict):
    enabled: bool = True
    types: list[Key] = Field(default_factory=lambda: ["none", "factual", "reasoning"])
    severities: list[Key] = Field(default_factory=lambda: ["minor", "major"])
    note_allowed: bool = True


# Harm of a marked span, least to most: adapted from the AHRQ Common Formats Harm Scale (v1.2),
# without its "death" level (docs/rating.md#spans says what each level means).
HARM_LEVELS: tuple[str, ...] = ("none", "minor", "moderate", "severe")
SEVERE_HARM = "severe"
# Each level's label and what it means, as every page states the scale.
HARM_SCALE: dict[str, tuple[str, str]] = {
    "none": ("None", "An error that would not harm the patient."),
    "minor": ("Minor", "Mild, temporary harm needing little or no intervention."),
    "moderate": (
        "Moderate",
        "Harm needing intervention or prolonging treatment, e.g. an unnecessary cycle or "
        "procedure.",
    ),
    "severe": ("Severe", "Lasting harm or a life-threatening risk."),
}


def harm_words(level: str) -> str:
    """A span's harm level as words beside its category: "no harm", "moderate harm"."""
    return "no harm" if level == "none" else f"{level or 'unstated'} harm"


class SpanCategory(_Strict):
    key: Key
    title: Label
    # An omission marks something the response should have used or said: it has no range in
    # the response, and names the case field it left out or describes it in the note.
    omission: bool = False
    # The hallucination type a span of this category implies when the flag is derived.
    hallucination: Key | None = None


DEFAULT_SPAN_CATEGORIES: list[dict[str, Any]] = [
    {"key": "factual_error", "title": "Factual error", "hallucination": "factual"},
    {"key": "reasoning_error", "title": "Reasoning error", "hallucination": "reasoning"},
    {"key": "unsupported_claim", "title": "Unsupported claim", "hallucination": "factual"},
    {"key": "unsafe", "title": "Unsafe or contraindicated recommendation"},
    {"key": "guideline_deviation", "title": "Deviation from guideline"},
    {"key": "omission", "title": "Omission", "omission": True},
]


class SpanAnnotation(_Strict):
    """Physicians mark where a response goes wrong: a character range of the shown text (or,
    for an omission, what is missing), a category and a harm level."""

    enabled: bool = False
    categories: list[SpanCategory] = Field(
        default_factory=lambda: [SpanCategory(**c) for c in DEFAULT_SPAN_CATEGORIES],
        min_length=1,
        max_length=12,
    )
    # asked: the rater answers the hallucination question as before; derived: it is not asked,
    # and each response's flag is computed from its spans (spans.text.derived_flag).
    hallucination_flag: Literal["asked", "derived"] = "asked"
    max_spans_per_response: int = Field(default=40, ge=1, le=200)

    @model_validator(mode="after")
    def _keys_unique(self) -> SpanAnnotation:
        keys = [c.key for c in self.categories]
        if len(set(keys)) != len(keys):
            raise ValueError("span category keys must be unique")
        return self

    def category(self, key: str) -> SpanCategory | None:
        return next((c for c in self.categories if c.key == key), None)


class Rubric(_Strict):
    dimensions: list[LikertDimension] = Field(max_length=12)
    hallucination: HallucinationFlag = Field(default_factory=HallucinationFlag)
    spans: SpanAnnotation = Field(default_factory=SpanAnnotation)

    @model_validator(mode="after")
    def _keys_unique(self) -> Rubric:
        keys = [d.key for d in self.dimensions]
        if len(set(keys)) != len(keys):
            raise ValueError("dimension keys must be unique")
        return self

    @model_validator(mode="after")
    def _derived_flag_fits(self) -> Rubric:
        spans, flag = self.spans, self.hallucination
        if not (spans.enabled and spans.hallucination_flag == "derived"):
            return self
        if not flag.enabled or "none" not in flag.types:
            raise ValueError(
                'a flag derived from spans needs the hallucination flag enabled with a "none" type'
            )
        unknown = sorted(
            {c.hallucination for c in spans.categories if c.hallucination} - set(flag.types)
        )
        if unknown:
            raise ValueError(f"span categories imply unknown hallucination types: {unknown}")
        return self


# The study mode in which each item asks for met / not-met calls on criteria, not a preference.
RUBRIC_MODE = "rubric"


class Design(_Strict):
    # rubric: each item shows one arm set's responses (one, or several side by side) and asks
    # for a met / not-met call on every criterion of the case's verified rubric.
    mode: Literal["pairwise", "best_of_n", "rubric"] = "pairwise"
    best_of_n: int = Field(default=3, ge=2, le=6)
    # Arm labels: pairs in pairwise mode, sets of ``best_of_n`` arms in best-of-N mode, and
    # sets of 1 to 6 arms in rubric mode.
    arm_sets: list[list[Label]] = Field(default_factory=list, max_length=30)
    allow_tie: bool = True
    allow_both_unacceptable: bool = True
    rationale_required: bool = False
    raters_per_item: int = Field(default=2, ge=1, le=50)
    # The most items (comparisons) one physician is asked to rate; cases are sampled to fit.
    cases_per_rater: int | None = Field(default=None, ge=1)
    repeat_fraction: float = Field(default=0.0, ge=0.0, le=0.5)
    # The fewest places between two items of one case in a queue (1: they may be next to each
    # other). Queues are always spread as far as they allow; this is the target the design
    # page checks and reports a shortfall against.
    min_case_gap: int = Field(default=2, ge=1, le=100)
    idle_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Physicians who must verify a case's criteria rubric before it can be graded.
    rubric_verifiers: int = Field(default=1, ge=1, le=10)

    @model_validator(mode="after")
    def _arm_sets_fit_mode(self) -> Design:
        if self.mode == "rubric":
            for arms in self.arm_sets:
                if not 1 <= len(arms) <= 6 or len(set(arms)) != len(arms):
                    raise ValueError(f"each rubric-mode arm set needs 1 to 6 distinct arms: {arms}")
            return self
        size = 2 if self.mode == "pairwise" else self.best_of_n
        seen: set[tuple[str, ...]] = set()
        for arms in self.arm_sets:
            if len(set(arms)) != len(arms):
                raise ValueError(f"an arm set names an arm twice: {arms}")
            if len(arms) != size:
                raise ValueError(f"each arm set needs {size} arms in {self.mode} mode: {arms}")
            key = tuple(sorted(arms))
            if key in seen:
                raise ValueError(f"the arm set {arms} is listed twice")
            seen.add(key)
        return self


class PrimaryEndpoint(_Strict):
    kind: Literal["preference", "likert"] = "preference"
    arm_a: str = ""
    arm_b: str = ""
    dimension: str = ""  # a rubric dimension key, for a Likert endpoint


TestName = Literal["sign", "wilcoxon", "friedman", "bradley_terry"]
_DEFAULT_TESTS: tuple[TestName, ...] = ("sign", "wilcoxon", "bradley_terry")


class AdjudicationRule(_Strict):
    """When an item's raters disagree enough that a senior physician resolves it.

    Checked when an item's last rater submits (and on later edits); any enabled condition
    fires it. Adjudicators are physicians on the study (usernames); an item goes to one who
    never rated it and did not write its case.
    """

    enabled: bool = False
    # Decisive preferences (a response, not a tie or none) that name different responses.
    preference_conflict: bool = True
    # Two raters' scores for one response differ by at least this much on any dimension.
    likert_gap: int | None = Field(default=2, ge=1, le=10)
    # A severe-harm span, or a hallucination flag at the most severe level, on a response that
    # another rater of the item did not mark so.
    severe_single: bool = True
    adjudicators: list[Annotated[str, StringConstraints(min_length=1, max_length=150)]] = Field(
        default_factory=list, max_length=50
    )


class AnalysisPlan(_Strict):
    """The pre-registered analysis, frozen (hashed) when the study opens."""

    primary: PrimaryEndpoint = Field(default_factory=PrimaryEndpoint)
    tests: list[TestName] = Field(default_factory=lambda: list(_DEFAULT_TESTS))
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    correction: Literal["holm", "bh"] = "holm"
    notes: Annotated[str, StringConstraints(max_length=4000)] = ""
    # Every confirmatory test treats cases and physicians as samples (docs/statistics.md); the
    # per-judgment tests run beside them as sensitivity analyses.
    estimator: Literal["crossed_cluster_robust"] = "crossed_cluster_robust"
    # The power analysis the coordinator ran, frozen into the plan when the study opens.
    power: dict[str, Any] | None = None
    # Adjudication of disagreements; its results are a pre-registered sensitivity analysis of
    # the primary endpoint (the raw judgments stay the primary analysis).
    adjudication: AdjudicationRule = Field(default_factory=AdjudicationRule)


# The families the plan's correction applies within; the report states them beside its tables.
PLAN_FAMILIES = (
    (
        "Preference",
        "every arm pair: the share of decisive judgments (and, separately, the tie-as-half rate)",
    ),
    (
        "Likert",
        "every arm pair on every dimension: the mean difference (and, separately, the net benefit)",
    ),
    ("Hallucination", "every arm pair: the difference in the share of flagged responses"),
)


# Raters see responses only as positions: A, B, ... (best-of-N allows up to 6; 8 is headroom).
POSITION_LETTERS = "ABCDEFGH"
TIE = "tie"
NONE_ACCEPTABLE = "none"


def position_letter(position: int) -> str:
    return POSITION_LETTERS[position]


def position_of(letter: str) -> int:
    return POSITION_LETTERS.index(letter)


def preference_choices(design: Mapping[str, Any], positions: int) -> list[str]:
    """What a rater may answer: a position, a tie (pairwise), or none acceptable."""
    choices = [position_letter(i) for i in range(positions)]
    if design.get("mode") == "pairwise" and design.get("allow_tie", True):
        choices.append(TIE)
    if design.get("allow_both_unacceptable", True):
        choices.append(NONE_ACCEPTABLE)
    return choices


DEFAULT_RUBRIC: dict[str, Any] = {
    "dimensions": [
        {
            "key": "reasoning_clarity",
            "title": "Reasoning clarity",
            "scale_min": 1,
            "scale_max": 5,
            "anchors": {
                1: "Unclear, contradictory or missing reasoning",
                3: "Mostly clear, with gaps a colleague would question",
                5: "Clear, complete and tied to this patient's findings",
            },
        },
        {
            "key": "treatment_feasibility",
            "title": "Treatment feasibility",
            "scale_min": 1,
            "scale_max": 5,
            "anchors": {
                1: "Not feasible or unsafe for this patient",
                3: "Feasible only with important changes",
                5: "Feasible as written in routine practice",
            },
        },
    ],
    "hallucination": {
        "enabled": True,
        "types": ["none", "factual", "reasoning"],
        "severities": ["minor", "major"],
        "note_allowed": True,
    },
}


def default_rubric() -> dict[str, Any]:
    return Rubric.model_validate(DEFAULT_RUBRIC).model_dump(mode="json")


def default_design() -> dict[str, Any]:
    return Design().model_dump(mode="json")


def default_analysis_plan() -> dict[str, Any]:
    return AnalysisPlan().model_dump(mode="json")


def default_strata() -> list[str]:
    return list(STRATA)


def default_decision_layers() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_DECISION_LAYERS)


def _messages(exc: PydanticValidationError) -> list[str]:
    messages = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        messages.append(f"{where}: {error['msg']}" if where else error["msg"])
    return messages


def _check(parse: Callable[[object], object], value: object) -> None:
    try:
        parse(value)
    except PydanticValidationError as exc:
        raise ValidationError(_messages(exc)) from None


def validate_rubric(value: object) -> None:
    _check(Rubric.model_validate, value)


def validate_design(value: object) -> None:
    _check(Design.model_validate, value)


def validate_analysis_plan(value: object) -> None:
    _check(AnalysisPlan.model_validate, value)


def validate_strata(value: object) -> None:
    _check(Strata.model_validate, {"strata": value})


def validate_decision_layers(value: object) -> None:
    _check(DecisionLayers.model_validate, {"layers": value})
