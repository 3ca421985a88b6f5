"""Writes of adjudication: the adjudicator's final judgment, recorded once, and a coordinator
handing an item nobody could take to an eligible physician.

The raters' judgments are never touched here: the final answer is kept on the
``Adjudication`` row beside them. Items are opened by ``rating.adjudication`` when their
last rater submits.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinic_eval.adjudication.selectors import adjudication_eligible
from clinic_eval.audit.services import audit_record
from clinic_eval.config import position_of
from clinic_eval.errors import DomainError, JudgmentInvalid
from clinic_eval.models import Adjudication, AuditEvent, Study, User
from clinic_eval.rating.inputs import JudgmentInput
from clinic_eval.rating.services import likert_judgment_checked

REASON_REQUIRED = "Give the reason for your final judgment."


class AdjudicationOutcome(StrEnum):
    RECORDED = "recorded"
    UNCHANGED = "unchanged"  # the same final judgment sent again: nothing written


def _final_ratings(shown_order: list[int], data: JudgmentInput) -> list[dict[str, Any]]:
    """One entry per shown position, with the response it is resolved to on the server."""
    return [
        {
            "position": r.position,
            "response": shown_order[r.position],
            "scores": dict(r.scores),
            "hallucination": r.hallucination,
            "severity": r.severity,
            "note": r.note,
        }
        for r in data.ratings
    ]


def _checked(study: Study, positions: int, data: JudgmentInput, reason: str) -> JudgmentInput:
    """The answer checked by the rating service's own rules, the reason standing in for the
    rationale (so its length limit applies); every problem with the reason is keyed
    ``reason``, the form's field."""
    extra = {} if reason.strip() else {"reason": REASON_REQUIRED}
    try:
        return likert_judgment_checked(
            study, positions, replace(data, rationale=reason, spans=()), extra
        )
    except JudgmentInvalid as exc:
        errors = dict(exc.errors)
        if "rationale" in errors:
            errors.setdefault("reason", errors.pop("rationale"))
        raise JudgmentInvalid(errors) from None


def adjudication_record(
    *, adjudication: Adjudication, adjudicator: User, data: JudgmentInput, reason: str
) -> tuple[Adjudication, AdjudicationOutcome]:
    """Record the adjudicator's final judgment on the item, exactly once.

    ``data`` is on the adjudicator's positions (``Adjudication.shown_order``) and is checked
    like a rater's Likert judgment; ``reason`` is required. The adjudication row is locked
    while it is written: the first submission marks it done, an identical one afterwards
    (a double click, a retried POST) changes nothing, and a different one is refused.
    Raises ``JudgmentInvalid`` with field errors, or ``DomainError``.
    """
    study = adjudication.study
    if study.is_rubric_mode:
        raise DomainError("Rubric-graded studies are not adjudicated; nothing was saved.")
    order = [int(pk) for pk in adjudication.shown_order]
    checked = _checked(study, len(order), data, reason)
    preference = checked.preference
    preferred = None
    if len(preference) == 1 and preference.isalpha():
        preferred = order[position_of(preference)]
    ratings = _final_ratings(order, checked)
    with transaction.atomic():
        locked = Adjudication.objects.select_for_update().get(pk=adjudication.pk)
        if locked.adjudicator_id != adjudicator.pk:
            raise DomainError("This item is not yours to adjudicate; nothing was saved.")
        if locked.status == Adjudication.Status.DONE:
            same = (locked.preference, locked.ratings, locked.reason) == (
                preference,
                ratings,
                checked.rationale,
            )
            if same:
                return locked, AdjudicationOutcome.UNCHANGED
            raise DomainError(
                "This item was already adjudicated with a different answer. A final judgment "
                "is recorded once, so nothing was changed."
            )
        if not Study.objects.filter(pk=study.pk, status=Study.Status.OPEN).exists():
            raise DomainError("This study is no longer open; nothing was saved.")
        locked.preference = preference
        locked.preferred_response_id = preferred
        locked.ratings = ratings
        locked.reason = checked.rationale
        locked.status = Adjudication.Status.DONE
        locked.done_at = timezone.now()
        locked.save(
            update_fields=[
                "preference",
                "preferred_response",
                "ratings",
                "reason",
                "status",
                "done_at",
            ]
        )
        audit_record(
            action=AuditEvent.Action.ADJUDICATION_DONE,
            actor=adjudicator,
            study_id=study.pk,
            target=f"adjudication:{locked.pk}",
            summary=f"final judgment recorded ({preference})",
        )
    return locked, AdjudicationOutcome.RECORDED


@transaction.atomic
def adjudication_assign(*, adjudication: Adjudication, adjudicator: User) -> Adjudication:
    """Hand an item that nobody named in the plan could take to an eligible physician: one
    on the study who never rated it and did not write its case. Only an unassigned, pending
    item of an open study; the change is audited."""
    study = adjudication.study
    if study.status != Study.Status.OPEN:
        raise DomainError("Only an open study's adjudications can be handed out.")
    if adjudicator not in adjudication_eligible(adjudication=adjudication):
        raise DomainError(
            f"{adjudicator.get_username()} may not adjudicate this item: an adjudicator is a "
            "physician on this study who never rated it and did not write its case."
        )
    taken = Adjudication.objects.filter(
        pk=adjudication.pk, status=Adjudication.Status.PENDING, adjudicator__isnull=True
    ).update(adjudicator=adjudicator)
    if not taken:
        raise DomainError(
            "This item already has an adjudicator (or was adjudicated); nothing was changed."
        )
    audit_record(
        action=AuditEvent.Action.ADJUDICATION_ASSIGNED,
        study_id=study.pk,
        target=f"adjudication:{adjudication.pk}",
        summary=f"adjudication {adjudication.public_id} handed to {adjudicator.get_username()}",
    )
    adjudication.adjudicator = adjudicator
    return adjudication
