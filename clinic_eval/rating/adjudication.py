"""When an item's raters disagree enough, a senior physician adjudicates it.

The rule is the study's analysis plan (``AdjudicationRule``). It is checked inside the
transaction that records a judgment, under a lock on the item's comparison row, so when the
last raters of an item submit at once exactly one of them sees every seat done and opens the
adjudication; the one-per-comparison constraint backs that up. The adjudicator's own pages
and the final judgment live in ``clinic_eval.adjudication``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Q, QuerySet

from clinic_eval.audit.services import audit_record
from clinic_eval.config import SEVERE_HARM, AdjudicationRule, Rubric
from clinic_eval.models import (
    Adjudication,
    Assignment,
    AuditEvent,
    Comparison,
    Judgment,
    Study,
    User,
)

PREFERENCE_CONFLICT = "Decisive preferences disagree"
SEVERE_SINGLE = "A severe-harm span or most severe hallucination flag from only some raters"


@dataclass(frozen=True)
class RaterAnswer:
    """One rater's answer on an item, by response (never by on-screen position, which differs
    between raters)."""

    preferred: int | None  # the response chosen, None for a tie or none acceptable
    scores: Mapping[int, Mapping[str, int]]  # response -> dimension key -> score
    severe: frozenset[int]  # responses given a severe-harm span or the most severe flag


def adjudication_triggers(
    answers: Sequence[RaterAnswer], *, rule: AdjudicationRule, rubric: Rubric
) -> list[str]:
    """What in the raters' answers fires the rule, in words; [] when nothing does."""
    if len(answers) < 2:
        return []
    fired = []
    decisive = {a.preferred for a in answers if a.preferred is not None}
    if rule.preference_conflict and len(decisive) > 1:
        fired.append(PREFERENCE_CONFLICT)
    if rule.likert_gap is not None:
        responses = {r for a in answers for r in a.scores}
        for dimension in rubric.dimensions:
            gap = 0
            for response in responses:
                given = [
                    a.scores[response][dimension.key]
                    for a in answers
                    if dimension.key in a.scores.get(response, {})
                ]
                if len(given) > 1:
                    gap = max(gap, max(given) - min(given))
            if gap >= rule.likert_gap:
                fired.append(f"Scores differ by {gap} on {dimension.title.lower()}")
    if rule.severe_single:
        marked = [a.severe for a in answers]
        if set().union(*marked) - frozenset.intersection(*marked):
            fired.append(SEVERE_SINGLE)
    return fired


def _answers(judgments: Sequence[Judgment], rubric: Rubric) -> list[RaterAnswer]:
    most_severe = rubric.hallucination.severities[-1]
    answers = []
    for judgment in judgments:
        ratings = list(judgment.ratings.all())
        severe = {s.response_id for s in judgment.spans.all() if s.harm == SEVERE_HARM}
        severe |= {
            r.response_id
            for r in ratings
            if r.hallucination not in ("", "none") and r.severity == most_severe
        }
        answers.append(
            RaterAnswer(
                preferred=judgment.preferred_response_id,
                scores={r.response_id: r.scores for r in ratings},
                severe=frozenset(severe),
            )
        )
    return answers


def adjudication_candidates(*, study: Study, comparison: Comparison) -> QuerySet[User]:
    """Who may adjudicate an item: active physicians on the study who never held a seat on it
    (repeats and reassigned seats included) and did not write its case, by username."""
    seated = Assignment.objects.filter(comparison=comparison, rater__isnull=False).values(
        "rater_id"
    )
    judged = Judgment.objects.filter(assignment__comparison=comparison).values("rater_id")
    users = (
        User.objects.filter(rated_studies=study, is_active=True, role=User.Role.PHYSICIAN)
        .exclude(Q(pk__in=seated) | Q(pk__in=judged))
        .order_by("username")
    )
    author = comparison.case.original_author_id
    return users.exclude(pk=author) if author is not None else users


def _adjudicator(study: Study, rule: AdjudicationRule, comparison: Comparison) -> User | None:
    """The physician named in the plan with the fewest open adjudications among those who may
    take the item (the plan's order breaks ties)."""
    candidates = list(
        adjudication_candidates(study=study, comparison=comparison).filter(
            username__in=rule.adjudicators
        )
    )
    if not candidates:
        return None
    load = dict(
        Adjudication.objects.filter(
            study=study, status=Adjudication.Status.PENDING, adjudicator__in=candidates
        )
        .values_list("adjudicator")
        .annotate(n=Count("id"))
    )
    order = {name: i for i, name in enumerate(rule.adjudicators)}
    return min(candidates, key=lambda u: (load.get(u.pk, 0), order[u.username]))


def adjudication_check(*, study: Study, comparison_id: int) -> Adjudication | None:
    """Open the item's adjudication if its last rater has just submitted (first showings; a
    repeat does not count) and the plan's rule fires; returns it (or the one already open).
    Call inside the judgment's transaction."""
    rule = study.plan_config.adjudication
    if not rule.enabled:
        return None
    with transaction.atomic():
        comparison = (
            Comparison.objects.select_for_update(of=("self",))
            .select_related("case")
            .get(pk=comparison_id)
        )
        # Repeat showings measure a rater's consistency; they neither count toward the rule nor
        # hold the item back (a repeat comes a third of a queue later).
        pending = Assignment.objects.filter(comparison_id=comparison_id, is_repeat=False).exclude(
            status=Assignment.Status.DONE
        )
        if pending.exists():
            return None
        existing = Adjudication.objects.filter(comparison_id=comparison_id).first()
        if existing is not None:
            return existing
        rubric = study.rubric_config
        judgments = list(
            Judgment.objects.filter(
                assignment__comparison_id=comparison_id, assignment__is_repeat=False
            )
            .prefetch_related("ratings", "spans")
            .order_by("assignment__queue_position", "id")
        )
        triggers = adjudication_triggers(_answers(judgments, rubric), rule=rule, rubric=rubric)
        if not triggers:
            return None
        order = list(comparison.responses.order_by("pk").values_list("pk", flat=True))
        random.Random(
            f"{study.seed}:adjudication:{comparison.case.external_id}:{comparison.arm_set}"
        ).shuffle(order)
        adjudication = Adjudication.objects.create(
            study=study,
            comparison=comparison,
            adjudicator=_adjudicator(study, rule, comparison),
            shown_order=order,
            triggers=triggers,
        )
        audit_record(
            action=AuditEvent.Action.ADJUDICATION_OPENED,
            study_id=study.pk,
            target=f"adjudication:{adjudication.pk}",
            summary="; ".join(triggers)[:300],
        )
        return adjudication
