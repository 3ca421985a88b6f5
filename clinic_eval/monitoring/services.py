from __future__ import annotations

import smtplib
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from clinic_eval.audit.services import audit_record
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Assignment,
    AuditEvent,
    Study,
    StudyRater,
    User,
)
from clinic_eval.rating import selectors


@dataclass(frozen=True)
class ReassignResult:
    moved: int
    kept: int  # leased right now, or the new rater authored the case or already rates it
    dropped_repeats: int


@transaction.atomic
def assignments_reassign(
    *, study: Study, from_rater: User, to_rater: User | None
) -> ReassignResult:
    """Move a rater's pending seats to another physician, or to the pool when ``to_rater`` is None.

    A seat the rater holds right now (an unexpired lease) stays. Their pending repeat showings
    are dropped: a repeat measures one rater's consistency and means nothing for another.
    """
    if study.status != Study.Status.OPEN:
        raise DomainError("only an open study's items can be reassigned")
    if to_rater is not None:
        if to_rater == from_rater:
            raise DomainError("choose another physician")
        if not StudyRater.objects.filter(study=study, rater=to_rater).exists():
            raise DomainError(f"{to_rater.username} is not a rater in this study")
    now = timezone.now()
    seats = list(
        Assignment.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(study=study, rater=from_rater, status=Assignment.Status.PENDING)
        .exclude(leased_until__gt=now)
        .select_related("comparison__case")
        .order_by("queue_position", "id")
    )
    repeats = [seat.pk for seat in seats if seat.is_repeat]
    Assignment.objects.filter(pk__in=repeats).delete()
    seats = [seat for seat in seats if not seat.is_repeat]
    moved = []
    if to_rater is None:
        moved = seats
        for seat in seats:
            seat.rater = None
    else:
        taken = set(
            Assignment.objects.filter(study=study, rater=to_rater).values_list(
                "comparison_id", flat=True
            )
        )
        last = Assignment.objects.filter(study=study, rater=to_rater).aggregate(
            m=Max("queue_position")
        )["m"]
        position = (last or 0) + 1
        for seat in seats:
            authored = seat.comparison.case.original_author_id == to_rater.pk
            if seat.comparison_id in taken or authored:
                continue
            seat.rater = to_rater
            seat.queue_position = position
            position += 1
            moved.append(seat)
    Assignment.objects.bulk_update(moved, ["rater", "queue_position"])
    kept = Assignment.objects.filter(
        study=study, rater=from_rater, status=Assignment.Status.PENDING
    ).count()
    audit_record(
        action=AuditEvent.Action.RATERS_REASSIGNED,
        study_id=study.pk,
        target=f"rater:{from_rater.pk}",
        summary=(
            f"{len(moved)} seat(s) of {from_rater.username} to "
            f"{to_rater.username if to_rater else 'the pool'}; {kept} kept, "
            f"{len(repeats)} repeat(s) dropped"
        ),
    )
    return ReassignResult(moved=len(moved), kept=kept, dropped_repeats=len(repeats))


@transaction.atomic
def rater_remind(*, study: Study, rater: User) -> StudyRater:
    """E-mail the rater a nudge with their progress, and record that it was sent."""
    link = StudyRater.objects.select_for_update().get(study=study, rater=rater)
    if not rater.email:
        raise DomainError(f"{rater.username} has no e-mail address; remind them another way")
    progress = selectors.rater_progress(rater=rater, study=study)
    try:
        _send_reminder(study, rater, progress)
    except (OSError, smtplib.SMTPException) as exc:
        raise DomainError(f"the mail server did not take the reminder: {exc}") from None
    link.reminded_at = timezone.now()
    link.reminder_count += 1
    link.save(update_fields=["reminded_at", "reminder_count"])
    return link


def _send_reminder(study: Study, rater: User, progress: selectors.RaterProgress) -> None:
    send_mail(
        subject="A reminder: blinded ratings are waiting for you",
        message=(
            f"Hello {rater.get_username()},\n\nYou have rated {progress.done} of "
            f"{progress.total} items in “{study.title}”. Sign in to continue where you left "
            "off; your place in the queue is kept.\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[rater.email],
    )
