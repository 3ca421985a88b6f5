"""Reads of model rubric work: progress as counts the database already holds.

There is no job row for drafting or grading (that would need a model and a migration), so
progress is derived: rubrics drafted and verdicts stored, against what the latest launch
(its audit event) asked for and against what the study's verified rubrics call for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from alignment_jobs.models import GenerationSpec
from alignment_jobs.rubric_jobs import grading
from clinic_eval.models import Arm, AuditEvent, CaseRubric, GraderVerdict, Study

# A launch older than this is not polled for: its tasks have ended or been lost.
POLL_WINDOW = timedelta(minutes=30)


@dataclass(frozen=True)
class LaunchProgress:
    arm_label: str
    at: datetime
    asked: int  # cases to draft, or verdicts to store
    done: int

    @property
    def outstanding(self) -> int:
        return max(self.asked - self.done, 0)


@dataclass(frozen=True)
class GraderProgress:
    arm_id: int
    label: str
    expected: int  # (response, criterion) pairs under usable rubrics
    stored: int
    unparseable: int


@dataclass(frozen=True)
class RubricJobsProgress:
    cases: int
    cases_with_rubric: int  # their own rubric, or their stratum's
    drafted: int  # case rubrics drafted by a model
    drafted_unverified: int
    gradable_responses: int
    graders: list[GraderProgress]
    last_draft: LaunchProgress | None
    last_grade: LaunchProgress | None

    @property
    def busy(self) -> bool:
        """Worth polling: a recent launch still has work outstanding."""
        recent = timezone.now() - POLL_WINDOW
        return any(
            launch is not None and launch.at >= recent and launch.outstanding
            for launch in (self.last_draft, self.last_grade)
        )


def rubric_arms(*, study: Study) -> list[Arm]:
    """Model arms with generation settings: the ones that can draft or grade."""
    with_spec = GenerationSpec.objects.filter(arm__study=study).values_list("arm_id", flat=True)
    return list(study.arms.filter(kind=Arm.Kind.MODEL, pk__in=with_spec).order_by("label"))


def _last_launch(study: Study, kind: str) -> AuditEvent | None:
    return (
        AuditEvent.objects.filter(
            study_id=study.pk,
            action=AuditEvent.Action.JOB_LAUNCHED,
            target__startswith=f"{kind}:arm:",
        )
        .order_by("-at", "-id")
        .first()
    )


def _draft_launch(study: Study) -> LaunchProgress | None:
    event = _last_launch(study, "rubric_draft")
    if event is None or not isinstance(event.after, dict):
        return None
    case_ids = event.after.get("case_ids") or []
    arm_id = event.after.get("arm_id")
    arm = None if arm_id is None else Arm.objects.filter(pk=arm_id).first()
    done = CaseRubric.objects.filter(
        case_id__in=case_ids, drafted_by=arm, source=CaseRubric.Source.DRAFTED
    ).count()
    label = arm.label if arm else "(deleted arm)"
    return LaunchProgress(arm_label=label, at=event.at, asked=len(case_ids), done=done)


def rubric_jobs_progress(*, study: Study) -> RubricJobsProgress:
    cases = study.cases.all()
    strata_with_rubric = CaseRubric.objects.filter(study=study, case__isnull=True).values("stratum")
    cases_with_rubric = cases.filter(
        Q(criteria_rubric__isnull=False) | Q(stratum__in=strata_with_rubric)
    ).count()
    drafted = CaseRubric.objects.filter(
        study=study, case__isnull=False, source=CaseRubric.Source.DRAFTED
    ).annotate(n_verifications=Count("verifications"))
    gradable = grading.gradable_responses(study)
    criteria_counts = {rubric.pk: rubric.criteria.count() for rubric in gradable.values()}
    expected_by_response = {pk: criteria_counts[rubric.pk] for pk, rubric in gradable.items()}
    expected = sum(expected_by_response.values())
    counts = {
        row["grader_id"]: row
        for row in GraderVerdict.objects.filter(response__case__study=study)
        .values("grader_id")
        .annotate(n=Count("id"), unparseable=Count("id", filter=Q(met__isnull=True)))
    }
    graders = [
        GraderProgress(
            arm_id=arm.pk,
            label=arm.label,
            expected=expected,
            stored=counts.get(arm.pk, {}).get("n", 0),
            unparseable=counts.get(arm.pk, {}).get("unparseable", 0),
        )
        for arm in rubric_arms(study=study)
    ]
    last_grade = None
    event = _last_launch(study, "rubric_grade")
    if event is not None and isinstance(event.after, dict):
        response_ids = event.after.get("response_ids") or []
        arm_id = event.after.get("arm_id")
        asked = sum(expected_by_response.get(pk, 0) for pk in response_ids)
        done = GraderVerdict.objects.filter(grader_id=arm_id, response_id__in=response_ids).count()
        label = (
            None
            if arm_id is None
            else Arm.objects.filter(pk=arm_id).values_list("label", flat=True).first()
        )
        last_grade = LaunchProgress(
            arm_label=label or "(deleted arm)", at=event.at, asked=asked, done=min(done, asked)
        )
    return RubricJobsProgress(
        cases=cases.count(),
        cases_with_rubric=cases_with_rubric,
        drafted=drafted.count(),
        drafted_unverified=drafted.filter(n_verifications=0).count(),
        gradable_responses=len(gradable),
        graders=graders,
        last_draft=_draft_launch(study),
        last_grade=last_grade,
    )
