from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from clinic_eval.audit.services import audit_record, changed_fields
from clinic_eval.config import (
    AnalysisPlan,
    Design,
    Rubric,
    validate_analysis_plan,
    validate_design,
    validate_rubric,
)
from clinic_eval.design import planner as design_lib
from clinic_eval.design import selectors
from clinic_eval.design.power.services import power_freeze_into_plan
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    STUDY_TRANSITIONS,
    Assignment,
    AuditEvent,
    Comparison,
    Study,
    StudyRater,
    User,
)


def _refuse_if_frozen(study: Study) -> None:
    if study.is_frozen:
        raise DomainError(
            f"the design was frozen when the study opened (hash {study.design_hash[:12]}); "
            "changes are refused"
        )


def _validated(value: dict, validate: Any, name: str) -> None:
    try:
        validate(value)
    except ValidationError as exc:
        raise DomainError(f"{name}: " + "; ".join(exc.messages)) from None


@transaction.atomic
def study_design_update(
    *,
    study: Study,
    design: dict,
    rubric: dict,
    analysis_plan: dict,
    rater_ids: Sequence[int],
) -> Study:
    """Save the draft design, rubric, analysis plan and raters; refused once the study opens."""
    locked = Study.objects.select_for_update().get(pk=study.pk)
    _refuse_if_frozen(locked)
    _validated(design, validate_design, "design")
    _validated(rubric, validate_rubric, "rubric")
    _validated(analysis_plan, validate_analysis_plan, "analysis plan")
    parsed_design = Design.model_validate(design)
    parsed_rubric = Rubric.model_validate(rubric)
    plan = AnalysisPlan.model_validate(analysis_plan)

    labels = set(locked.arms.values_list("label", flat=True))
    unknown = sorted({arm for arms in parsed_design.arm_sets for arm in arms} - labels)
    if unknown:
        raise DomainError(f"design: no arm named {', '.join(unknown)} in this study")
    try:
        design_lib.check_arm_sets(parsed_design.arm_sets, mode=parsed_design.mode)
    except design_lib.DesignError as exc:
        raise DomainError(f"design: {exc}") from None
    for arm in (plan.primary.arm_a, plan.primary.arm_b):
        if arm and arm not in labels:
            raise DomainError(f"analysis plan: no arm named {arm} in this study")
    dimension_keys = {d.key for d in parsed_rubric.dimensions}
    if plan.primary.kind == "likert" and plan.primary.dimension not in dimension_keys:
        raise DomainError("analysis plan: a Likert primary endpoint needs a rubric dimension")

    raters = list(User.objects.filter(pk__in=rater_ids, is_active=True, role=User.Role.PHYSICIAN))
    if len(raters) != len(set(rater_ids)):
        raise DomainError("raters must be active physician accounts")

    before = _design_state(locked)
    locked.design = parsed_design.model_dump(mode="json")
    locked.rubric = parsed_rubric.model_dump(mode="json")
    locked.analysis_plan = plan.model_dump(mode="json")
    locked.save(update_fields=["design", "rubric", "analysis_plan"])
    StudyRater.objects.filter(study=locked).exclude(rater__in=raters).delete()
    StudyRater.objects.bulk_create(
        [StudyRater(study=locked, rater=rater) for rater in raters], ignore_conflicts=True
    )
    old, new = changed_fields(before, _design_state(locked))
    if old or new:
        audit_record(
            action=AuditEvent.Action.DESIGN_CHANGED,
            study_id=locked.pk,
            target=f"study:{locked.pk}",
            summary="changed: " + ", ".join(sorted({*old, *new})),
            before=old,
            after=new,
        )
    return locked


def _design_state(study: Study) -> dict[str, Any]:
    return {
        "design": study.design,
        "rubric": study.rubric,
        "analysis_plan": study.analysis_plan,
        "raters": sorted(
            StudyRater.objects.filter(study=study).values_list("rater__username", flat=True)
        ),
    }


def design_hash_of(
    study: Study,
    plan: design_lib.StudyPlan,
    raters: list[str],
    rubrics: dict[str, list] | None = None,
) -> str:
    """SHA-256 over everything the analysis depends on, in a canonical JSON form.

    In rubric mode it also covers, per case in the design, the criteria rubric it is graded on
    (scope, version and every criterion), so a rubric changed afterwards no longer matches.
    """
    frozen = {
        "seed": study.seed,
        "design": study.design,
        "rubric": study.rubric,
        "analysis_plan": study.analysis_plan,
        "arms": sorted(study.arms.values_list("label", "kind")),
        "raters": sorted(raters),
        "assignments": sorted(
            [
                a.rater,
                plan.design.comparisons[a.comparison].case_id,
                list(a.shown),
                a.queue_position,
                a.repeat,
            ]
            for a in plan.design.assignments
        ),
    }
    if study.is_rubric_mode:
        used = {c.case_id for c in plan.design.comparisons}
        frozen["criteria_rubrics"] = sorted([case_id, (rubrics or {})[case_id]] for case_id in used)
    canonical = json.dumps(frozen, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def adjudication_rule_checked(*, study: Study) -> None:
    """Refuse to open a study whose plan adjudicates what it cannot: the rule compares
    preferences and Likert scores, so it needs a pairwise or best-of-N design, at least one
    condition and one adjudicator, and every adjudicator an active physician on the study."""
    rule = study.plan_config.adjudication
    if not rule.enabled:
        return
    problem = ""
    if study.design_config.mode not in ("pairwise", "best_of_n"):
        problem = "it needs a pairwise or best-of-N design (rubric grading has no preference)"
    elif not (rule.preference_conflict or rule.likert_gap is not None or rule.severe_single):
        problem = "choose at least one condition that sends an item to adjudication"
    elif not rule.adjudicators:
        problem = "name at least one adjudicator"
    else:
        on_study = set(
            User.objects.filter(
                rated_studies=study, is_active=True, role=User.Role.PHYSICIAN
            ).values_list("username", flat=True)
        )
        outside = [name for name in rule.adjudicators if name not in on_study]
        if outside:
            problem = (
                "every adjudicator must be an active physician rating this study; "
                f"{', '.join(outside)} is not"
            )
    if problem:
        raise DomainError(f"the analysis plan's adjudication rule cannot be used: {problem}")


def design_freeze(*, study: Study) -> Study:
    """Build the study's comparisons and seats from its design and freeze them with a hash.

    Called by ``study_transition`` inside its transaction, with the study row locked.
    """
    if study.assignments.exists():
        raise DomainError("this study already has a design")
    adjudication_rule_checked(study=study)
    for label in study.arms.values_list("label", flat=True):
        if re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", study.title, re.IGNORECASE):
            raise DomainError(
                f"the study title names the arm {label}, and physicians see the title; "
                "rename the study before opening it"
            )
    inputs = selectors.design_inputs(study=study)
    try:
        plan = selectors.design_plan(study=study, inputs=inputs)
    except design_lib.DesignError as exc:
        raise DomainError(f"the design cannot be built: {exc}") from None

    comparisons = Comparison.objects.bulk_create(
        [
            Comparison(study=study, case_id=inputs.case_pks[c.case_id], arm_set=" | ".join(c.arms))
            for c in plan.design.comparisons
        ]
    )
    links = [
        Comparison.responses.through(
            comparison_id=row.pk, response_id=inputs.responses[(spec.case_id, arm)]
        )
        for row, spec in zip(comparisons, plan.design.comparisons, strict=True)
        for arm in spec.arms
    ]
    Comparison.responses.through.objects.bulk_create(links)
    Assignment.objects.bulk_create(
        [
            Assignment(
                study=study,
                comparison=comparisons[a.comparison],
                rater_id=inputs.rater_pks[a.rater],
                shown_order=[
                    inputs.responses[(plan.design.comparisons[a.comparison].case_id, arm)]
                    for arm in a.shown
                ],
                queue_position=a.queue_position,
                is_repeat=a.repeat,
            )
            for a in plan.design.assignments
        ],
        batch_size=2_000,
    )
    # The latest power analysis becomes part of the pre-registered plan, under the hash.
    power_freeze_into_plan(study=study)
    study.design_hash = design_hash_of(study, plan, inputs.raters, inputs.rubrics)
    study.opened_at = timezone.now()
    study.save(update_fields=["design_hash", "opened_at"])
    return study


@transaction.atomic
def study_transition(*, study: Study, to_status: str) -> Study:
    locked = Study.objects.select_for_update().get(pk=study.pk)
    if to_status not in STUDY_TRANSITIONS[locked.status]:
        allowed = ", ".join(STUDY_TRANSITIONS[locked.status]) or "none: the study is closed"
        raise DomainError(
            f"a {locked.status} study cannot become {to_status} (possible next steps: {allowed})"
        )
    if to_status in {Study.Status.READY, Study.Status.OPEN} and not locked.cases.exists():
        raise DomainError("import cases before marking the study ready")
    if to_status == Study.Status.OPEN:
        design_freeze(study=locked)
    before = locked.status
    locked.status = to_status
    locked.status_changed_at = timezone.now()
    locked.save(update_fields=["status", "status_changed_at"])
    audit_record(
        action=AuditEvent.Action.STUDY_STATUS,
        study_id=locked.pk,
        target=f"study:{locked.pk}",
        summary=f"{before} → {to_status}"
        + (f"; design frozen, hash {locked.design_hash[:12]}" if locked.design_hash else ""),
        before={"status": before},
        after={"status": to_status},
    )
    return locked
