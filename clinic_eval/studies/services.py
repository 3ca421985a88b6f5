"""Every write to the study domain goes through a function here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinic_eval.audit.services import audit_record
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Arm,
    AuditEvent,
    Response,
    Study,
    User,
)
from clinic_eval.studies import postprocess


def user_create(
    *,
    username: str,
    password: str,
    role: str,
    email: str = "",
    is_superuser: bool = False,
) -> User:
    if role not in User.Role.values:
        raise DomainError(f"role must be one of {', '.join(User.Role.values)}; got {role!r}")
    if User.objects.filter(username__iexact=username).exists():
        raise DomainError(f"a user named {username!r} already exists")
    user = User(
        username=username,
        email=email,
        role=role,
        is_superuser=is_superuser,
        is_staff=is_superuser,
    )
    user.set_password(password)
    user.full_clean()
    user.save()
    return user


@transaction.atomic
def study_create(
    *, title: str, question: str = "", created_by: User, seed: int | None = None
) -> Study:
    """A draft study; its design seed is drawn at random unless given (to rebuild a design)."""
    study = Study(title=title.strip(), question=question.strip(), created_by=created_by)
    if seed is not None:
        study.seed = seed
    study.full_clean()
    study.save()
    study.coordinators.add(created_by)
    audit_record(
        action=AuditEvent.Action.STUDY_CREATED,
        actor=created_by,
        study_id=study.pk,
        target=f"study:{study.pk}",
        summary=study.title,
    )
    return study


@transaction.atomic
def arm_create(*, study: Study, label: str, kind: str, description: str = "") -> Arm:
    label = label.strip()
    if kind not in Arm.Kind.values:
        raise DomainError(f"arm kind must be one of {', '.join(Arm.Kind.values)}; got {kind!r}")
    if study.arms.filter(label__iexact=label).exists():
        raise DomainError(f"this study already has an arm labelled {label!r}")
    if kind == Arm.Kind.PHYSICIAN_ORIGINAL and study.arms.filter(kind=kind).exists():
        raise DomainError("this study already has a physician's-original-decision arm")
    arm = Arm(study=study, label=label, kind=kind, description=description.strip())
    arm.full_clean()
    arm.save()
    if kind == Arm.Kind.PHYSICIAN_ORIGINAL:
        physician_original_responses_sync(study=study)
    audit_record(
        action=AuditEvent.Action.ARM_CREATED,
        study_id=study.pk,
        target=f"arm:{arm.pk}",
        summary=f"{label} ({kind})",
    )
    return arm


def physician_original_responses_sync(*, study: Study) -> int:
    """Give the physician-original arm one response per case that has an original decision."""
    arm = study.arms.filter(kind=Arm.Kind.PHYSICIAN_ORIGINAL).first()
    if arm is None:
        return 0
    missing = study.cases.exclude(original_text="").exclude(responses__arm=arm)
    new = [
        NewResponse(
            case_id=case.pk,
            raw_text=case.original_text,
            decision=case.original_decision or None,
            provenance={"source": "physician_original"},
        )
        # study_id too: the related manager sets each case's study, which would read it per row.
        for case in missing.only("id", "study_id", "original_text", "original_decision")
    ]
    responses_store(study=study, arm=arm, responses=new)
    return len(new)


@dataclass(frozen=True)
class NewResponse:
    case_id: int
    raw_text: str
    sample_index: int = 0
    # None: read the decision from the text's closing block.
    decision: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    data_import_id: int | None = None


def responses_store(
    *, study: Study, arm: Arm, responses: Sequence[NewResponse], leak_terms: Sequence[str] = ()
) -> None:
    """Store responses once each, normalised for blinding; leaky ones are held for review.

    Every arm's text goes through the same normalisation, so formatting cannot tell arms apart.
    A response already stored for its (case, arm, sample) is left as it is.
    """
    labels = list(study.arms.values_list("label", flat=True))
    rows = []
    for new in responses:
        # PostgreSQL text cannot hold NUL, and a sampling model can emit one.
        raw_text = new.raw_text.replace("\x00", "\ufffd")
        display = postprocess.display_text(raw_text)
        flags = postprocess.leak_flags(display, arm_labels=labels, extra_terms=leak_terms)
        if new.decision is None:
            parsed = postprocess.parse_decision(display, study.decision_layers)
            decision, problems = parsed.decision, parsed.problems
        else:
            decision, problems = new.decision, []
        rows.append(
            Response(
                case_id=new.case_id,
                arm=arm,
                sample_index=new.sample_index,
                raw_text=raw_text,
                display_text=display,
                parsed_decision=decision,
                parse_problems=problems,
                leak_flags=[flag.as_dict() for flag in flags],
                review=Response.Review.HELD if flags else Response.Review.CLEAR,
                provenance=new.provenance,
                data_import_id=new.data_import_id,
            )
        )
    Response.objects.bulk_create(rows, batch_size=1_000, ignore_conflicts=True)


@transaction.atomic
def response_review(*, response: Response, decision: str, reviewed_by: User) -> Response:
    """A coordinator's call on a held response: serve it as it is, or keep it from raters."""
    if decision not in {Response.Review.APPROVED, Response.Review.EXCLUDED}:
        raise DomainError("choose approve or exclude")
    locked = Response.objects.select_for_update().get(pk=response.pk)
    before = locked.review
    locked.review = decision
    locked.reviewed_by = reviewed_by
    locked.reviewed_at = timezone.now()
    locked.save(update_fields=["review", "reviewed_by", "reviewed_at"])
    audit_record(
        action=AuditEvent.Action.RESPONSE_REVIEWED,
        actor=reviewed_by,
        study_id=locked.arm.study_id,
        target=f"response:{locked.pk}",
        summary=f"{locked.arm.label}, case {locked.case.external_id}: {decision}",
        before={"review": before},
        after={"review": decision},
    )
    return locked
