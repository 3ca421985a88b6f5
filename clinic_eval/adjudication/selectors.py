"""Reads of adjudication: the adjudicator's queue and item, and who may take an item.

Blinding: an adjudicator is a physician, so everything here names responses only by the
adjudicator's own position letters (``Adjudication.shown_order``), raters only as "Rater 1",
"Rater 2", ... (never a username), and items by their random public id. Each rater's
answers are translated from the rater's on-screen letters through the response they named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.utils.safestring import SafeString

from clinic_eval.config import (
    NONE_ACCEPTABLE,
    TIE,
    Rubric,
    harm_words,
    position_letter,
    preference_choices,
)
from clinic_eval.models import Adjudication, Judgment, Response, Study, User
from clinic_eval.rating.adjudication import adjudication_candidates
from clinic_eval.rating.forms import HALLUCINATION_LABELS
from clinic_eval.spans.rendering import Mark, marked_text

# --- The adjudicator's queue ------------------------------------------------------------------


@dataclass(frozen=True)
class AdjudicatorQueue:
    pending: list[Adjudication]  # on open studies: waiting for this adjudicator
    done: list[Adjudication]
    stalled: list[Adjudication]  # pending on a closed study: no longer recorded

    @property
    def next_pending(self) -> Adjudication | None:
        return self.pending[0] if self.pending else None

    @property
    def total(self) -> int:
        return len(self.pending) + len(self.done) + len(self.stalled)


def adjudicator_queue(*, user: User) -> AdjudicatorQueue:
    """Every adjudication handed to this physician on a study under way, oldest first."""
    rows = list(
        Adjudication.objects.filter(adjudicator=user, study__status__in=Study.FROZEN_STATUSES)
        .select_related("study")
        .order_by("created_at", "id")
    )
    pending = [a for a in rows if a.status == Adjudication.Status.PENDING]
    return AdjudicatorQueue(
        pending=[a for a in pending if a.study.status == Study.Status.OPEN],
        done=[a for a in rows if a.status == Adjudication.Status.DONE],
        stalled=[a for a in pending if a.study.status != Study.Status.OPEN],
    )


def adjudication_next_for(*, user: User) -> Adjudication | None:
    return (
        Adjudication.objects.filter(
            adjudicator=user,
            status=Adjudication.Status.PENDING,
            study__status=Study.Status.OPEN,
        )
        .order_by("created_at", "id")
        .first()
    )


# --- Who may adjudicate an item ---------------------------------------------------------------


def adjudication_eligible(*, adjudication: Adjudication) -> list[User]:
    """Who may take the item (``rating.adjudication.adjudication_candidates``)."""
    return list(
        adjudication_candidates(study=adjudication.study, comparison=adjudication.comparison)
    )


# --- One item, as the adjudicator sees it -----------------------------------------------------


def flag_words(hallucination: str, severity: str) -> str:
    """A hallucination flag in words: "No hallucination", "Factual error, major"; "" if unset."""
    if not hallucination:
        return ""
    words = HALLUCINATION_LABELS.get(hallucination, hallucination.replace("_", " ").capitalize())
    if severity:
        words += ", " + HALLUCINATION_LABELS.get(severity, severity).lower()
    return words


def preference_words(preference: str, positions: int) -> str:
    if preference == TIE:
        return "Tie"
    if preference == NONE_ACCEPTABLE:
        return "Both unacceptable" if positions == 2 else "None acceptable"
    return f"Response {preference}" if preference else "—"


@dataclass(frozen=True)
class ShownSpan:
    """One rater's span, on the adjudicator's letters."""

    letter: str
    category: str  # the category's title
    harm: str
    quote: str
    case_field: str
    note: str
    omission: bool


@dataclass(frozen=True)
class RaterRating:
    """One rater's rubric answers on one response."""

    rater: str  # "Rater 1"
    scores: list[int | None]  # in the rubric's dimension order
    flag: str  # the hallucination flag in words
    note: str


@dataclass(frozen=True)
class RaterView:
    """One rater's answer on the item: their preference on the adjudicator's letters, their
    spans and rationale."""

    number: int
    label: str  # "Rater 1"
    preference: str  # in words: "Response B", "Tie"
    rationale: str
    spans: list[ShownSpan]


@dataclass(frozen=True)
class FinalRating:
    scores: list[int | None]
    flag: str
    note: str


@dataclass(frozen=True)
class AdjudicatedResponse:
    letter: str
    position: int
    html: SafeString  # the display text with every rater's spans marked
    ratings: list[RaterRating]  # each rater's answers on this response
    final: FinalRating | None = None


@dataclass(frozen=True)
class AdjudicationItem:
    adjudication: Adjudication
    study: Study
    fields: list[tuple[str, object]]
    narrative: str
    responses: list[AdjudicatedResponse]
    raters: list[RaterView]
    dimensions: list[str]  # the rubric's dimension titles, in order
    preference_choices: list[str]
    triggers: list[str]
    rubric: Rubric = field(repr=False)
    final_preference: str = ""  # in words, once adjudicated

    @property
    def is_done(self) -> bool:
        return self.adjudication.status == Adjudication.Status.DONE

    @property
    def flag_enabled(self) -> bool:
        return self.rubric.hallucination.enabled

    @property
    def can_record(self) -> bool:
        return not self.is_done and self.study.status == Study.Status.OPEN


def _rater_judgments(adjudication: Adjudication) -> list[Judgment]:
    """The item's judgments the rule looked at (repeat showings aside), in the order they
    were made: Rater 1 is the first to have submitted."""
    return list(
        Judgment.objects.filter(
            assignment__comparison_id=adjudication.comparison_id, assignment__is_repeat=False
        )
        .select_related("assignment")
        .prefetch_related("ratings", "spans")
        .order_by("created_at", "id")
    )


def _final_ratings(
    adjudication: Adjudication, rubric: Rubric
) -> dict[int, FinalRating]:  # position -> final rating
    final = {}
    for stored in adjudication.ratings or []:
        scores = stored.get("scores", {})
        final[int(stored["position"])] = FinalRating(
            scores=[scores.get(d.key) for d in rubric.dimensions],
            flag=flag_words(stored.get("hallucination", ""), stored.get("severity", "")),
            note=stored.get("note", ""),
        )
    return final


def adjudication_item(*, adjudication: Adjudication) -> AdjudicationItem:
    """The blinded case, the responses in the adjudicator's order with every rater's spans
    marked, and the raters' answers translated to the adjudicator's letters."""
    study = adjudication.study
    rubric = study.rubric_config
    order: Sequence[int] = adjudication.shown_order
    letter_of = {pk: position_letter(i) for i, pk in enumerate(order)}
    shown = {r.pk: r for r in Response.objects.filter(pk__in=order).only("display_text")}
    case = adjudication.comparison.case
    judgments = _rater_judgments(adjudication)

    marks: dict[int, list[Mark]] = {pk: [] for pk in order}
    ratings: dict[int, list[RaterRating]] = {pk: [] for pk in order}
    raters = []
    for number, judgment in enumerate(judgments, 1):
        label = f"Rater {number}"
        for rating in sorted(judgment.ratings.all(), key=lambda r: letter_of[r.response_id]):
            ratings[rating.response_id].append(
                RaterRating(
                    rater=label,
                    scores=[rating.scores.get(d.key) for d in rubric.dimensions],
                    flag=flag_words(rating.hallucination, rating.severity),
                    note=rating.note,
                )
            )
        spans = []
        for span in sorted(
            judgment.spans.all(),
            key=lambda s: (letter_of[s.response_id], s.start is None, s.start or 0, s.end or 0),
        ):
            category = rubric.spans.category(span.category)
            title = category.title if category else span.category.replace("_", " ")
            if span.start is not None and span.end is not None:
                marks[span.response_id].append(
                    Mark(
                        start=span.start,
                        end=span.end,
                        # The rating page's category colours (span-cat-*), and the rater.
                        classes=(
                            f"span-mark span-cat-{span.category} span-harm-{span.harm} "
                            f"rater-{number}"
                        ),
                        title=f"{label}: {title}, {harm_words(span.harm)}",
                    )
                )
            spans.append(
                ShownSpan(
                    letter=letter_of[span.response_id],
                    category=title,
                    harm=harm_words(span.harm),
                    quote=span.quote,
                    case_field=span.case_field,
                    note=span.note,
                    omission=span.start is None,
                )
            )
        preference = judgment.preference
        if judgment.preferred_response_id is not None:
            preference = letter_of[judgment.preferred_response_id]
        raters.append(
            RaterView(
                number=number,
                label=label,
                preference=preference_words(preference, len(order)),
                rationale=judgment.rationale,
                spans=spans,
            )
        )

    done = adjudication.status == Adjudication.Status.DONE
    final = _final_ratings(adjudication, rubric) if done else {}
    responses = [
        AdjudicatedResponse(
            letter=position_letter(i),
            position=i,
            html=marked_text(shown[pk].display_text, marks[pk]),
            ratings=ratings[pk],
            final=final.get(i),
        )
        for i, pk in enumerate(order)
    ]
    final_preference = preference_words(adjudication.preference, len(order)) if done else ""
    return AdjudicationItem(
        adjudication=adjudication,
        study=study,
        fields=list(case.fields.items()),
        narrative=case.narrative,
        responses=responses,
        raters=raters,
        dimensions=[d.title for d in rubric.dimensions],
        preference_choices=preference_choices(study.design, len(order)),
        triggers=list(adjudication.triggers),
        rubric=rubric,
        final_preference=final_preference,
    )
