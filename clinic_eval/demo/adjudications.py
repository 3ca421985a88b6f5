"""Simulated adjudications for the demo's closed study.

The plan's rule opens an adjudication when an item's raters disagree enough (inside the
simulated physicians' own submissions, as for real ones). Before the study closes, its
simulated adjudicators resolve most of them through the real service: each sides with one of
the item's raters, takes the raters' mean scores and gives a reason. The rest stay pending, so
the results show triggered, done and changed counts that differ. The choices are keyed by the
case's external id and the arm set, so one seed gives one demo in any database.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from clinic_eval.adjudication.services import adjudication_record
from clinic_eval.config import position_letter
from clinic_eval.models import Adjudication, Judgment, Study
from clinic_eval.rating.inputs import JudgmentInput, RatingInput

DONE_SHARE = 0.7
REASONS = (
    "Simulated adjudication: the preferred plan fits the reserve findings; the other does not.",
    "Simulated adjudication: one plan's reasoning does not follow from the case.",
    "Simulated adjudication: the severe error a rater marked is real, and it decides the item.",
    "Simulated adjudication: the dose in the other plan is too high for this patient.",
)
UNDECIDED_REASON = "Simulated adjudication: neither plan is clearly better; scores are averaged."


def _final_answer(
    rng: random.Random, order: Sequence[int], judgments: Sequence[Judgment]
) -> JudgmentInput:
    """The adjudicator sides with one rater's preference and flags, and takes the raters' mean
    score on each dimension (rounded half up), on the adjudicator's own positions."""
    sided = rng.choice(list(judgments))
    preferred = sided.preferred_response_id
    if preferred is not None and preferred in order:
        preference = position_letter(list(order).index(preferred))
    else:
        preference = sided.preference
    ratings = []
    for position, response in enumerate(order):
        given = [r for j in judgments for r in j.ratings.all() if r.response_id == response]
        own = next(r for r in sided.ratings.all() if r.response_id == response)
        scores = {
            key: int(sum(r.scores[key] for r in given) / len(given) + 0.5) for key in own.scores
        }
        ratings.append(
            RatingInput(
                position=position,
                scores=dict(scores),
                hallucination=own.hallucination,
                severity=own.severity,
            )
        )
    return JudgmentInput(preference=preference, ratings=tuple(ratings))


def _reason(rng: random.Random, answer: JudgmentInput) -> str:
    decisive = len(answer.preference) == 1
    return rng.choice(REASONS) if decisive else UNDECIDED_REASON


def adjudicate_some(*, study: Study, seed: int) -> int:
    """Resolve about ``DONE_SHARE`` of the study's assigned, pending adjudications; returns how
    many were recorded. Call while the study is open."""
    pending = sorted(
        Adjudication.objects.filter(
            study=study, status=Adjudication.Status.PENDING, adjudicator__isnull=False
        ).select_related("study", "adjudicator", "comparison__case"),
        key=lambda a: (a.comparison.case.external_id, a.comparison.arm_set),
    )
    recorded = 0
    for adjudication in pending:
        comparison = adjudication.comparison
        rng = random.Random(f"{seed}:adjudicate:{comparison.case.external_id}:{comparison.arm_set}")
        if rng.random() >= DONE_SHARE or adjudication.adjudicator is None:
            continue
        judgments = list(
            Judgment.objects.filter(assignment__comparison=comparison, assignment__is_repeat=False)
            .prefetch_related("ratings")
            .order_by("rater__username")
        )
        answer = _final_answer(rng, [int(pk) for pk in adjudication.shown_order], judgments)
        adjudication_record(
            adjudication=adjudication,
            adjudicator=adjudication.adjudicator,
            data=answer,
            reason=_reason(rng, answer),
        )
        recorded += 1
    return recorded
