from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from clinic_eval.models.rating import Judgment
from clinic_eval.models.studies import Arm, Case, Response, Study, new_public_id


class CaseRubric(models.Model):
    """Physician-verifiable grading criteria for one case, or for every case of a stratum.

    Each edit bumps ``version``; a verification counts only for the version it saw, so a rubric
    changed after someone verified it needs verifying again.
    """

    class Source(models.TextChoices):
        IMPORTED = "imported", "Imported"
        DRAFTED = "drafted", "Drafted by a model"
        WRITTEN = "written", "Written in the app"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="case_rubrics")
    case = models.OneToOneField(
        Case, null=True, blank=True, on_delete=models.CASCADE, related_name="criteria_rubric"
    )
    stratum = models.CharField(max_length=200, blank=True)  # set when the rubric is per stratum
    source = models.CharField(max_length=12, choices=Source.choices)
    drafted_by = models.ForeignKey(
        Arm, null=True, blank=True, on_delete=models.PROTECT, related_name="drafted_rubrics"
    )
    draft_provenance = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    # What physicians' URLs carry: random, so it reveals no creation order (and so no batch).
    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "stratum"],
                condition=Q(case__isnull=True),
                name="one_rubric_per_stratum",
            ),
            models.CheckConstraint(
                condition=Q(case__isnull=False) | ~Q(stratum=""),
                name="rubric_names_a_case_or_a_stratum",
            ),
        ]

    def __str__(self) -> str:
        return f"rubric for {self.case or self.stratum}"


class RubricCriterion(models.Model):
    class Axis(models.TextChoices):
        ACCURACY = "accuracy", "Accuracy"
        COMPLETENESS = "completeness", "Completeness"
        COMMUNICATION = "communication_quality", "Communication quality"
        CONTEXT = "context_awareness", "Context awareness"
        INSTRUCTIONS = "instruction_following", "Instruction following"

    class Level(models.TextChoices):
        EXAMPLE = "example", "Example-specific"
        CLUSTER = "cluster", "Shared across cases"

    rubric = models.ForeignKey(CaseRubric, on_delete=models.CASCADE, related_name="criteria")
    text = models.TextField()
    # Negative points mark undesirable behaviour: "met" means it occurred.
    points = models.IntegerField()
    # One of Axis, or a study-defined axis key.
    axis = models.CharField(max_length=64, default=Axis.ACCURACY)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.EXAMPLE)
    tags = models.JSONField(default=list, blank=True)
    position = models.PositiveIntegerField(default=0)
    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)

    class Meta:
        ordering = ["rubric", "position", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(points=0), name="criterion_points_not_zero")
        ]

    def __str__(self) -> str:
        return f"[{self.points:+d}] {self.text[:60]}"


class RubricChange(models.Model):
    """Append-only record of every change a physician or coordinator made to a rubric."""

    class Action(models.TextChoices):
        ADD = "add", "Added a criterion"
        EDIT = "edit", "Edited a criterion"
        DELETE = "delete", "Deleted a criterion"
        VERIFY = "verify", "Verified the rubric"

    rubric = models.ForeignKey(CaseRubric, on_delete=models.CASCADE, related_name="changes")
    criterion_id_at_change = models.BigIntegerField(null=True, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=8, choices=Action.choices)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    version = models.PositiveIntegerField()  # the rubric's version after the change
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.action} on {self.rubric} by {self.author}"


class RubricVerification(models.Model):
    rubric = models.ForeignKey(CaseRubric, on_delete=models.CASCADE, related_name="verifications")
    physician = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    version = models.PositiveIntegerField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rubric", "physician", "version"], name="one_verification_per_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.physician} verified {self.rubric} v{self.version}"


class CriterionGrade(models.Model):
    """A physician's met / not-met call on one criterion for one blinded response."""

    judgment = models.ForeignKey(
        Judgment, on_delete=models.CASCADE, related_name="criterion_grades"
    )
    response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    position = models.CharField(max_length=1)
    criterion = models.ForeignKey(RubricCriterion, on_delete=models.PROTECT, related_name="grades")
    met = models.BooleanField()
    note = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["judgment", "response", "criterion"], name="one_grade_per_criterion"
            )
        ]

    def __str__(self) -> str:
        return f"{'met' if self.met else 'not met'}: {self.criterion_id} on {self.response_id}"


class GraderVerdict(models.Model):
    """A grader model's verdict on one criterion for one response, with how it was obtained."""

    grader = models.ForeignKey(Arm, on_delete=models.PROTECT, related_name="grader_verdicts")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="grader_verdicts")
    criterion = models.ForeignKey(
        RubricCriterion, on_delete=models.CASCADE, related_name="grader_verdicts"
    )
    # None: no parseable verdict after every attempt (the error says why).
    met = models.BooleanField(null=True)
    raw_output = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["grader", "response", "criterion"], name="one_verdict_per_grader"
            )
        ]

    def __str__(self) -> str:
        return f"{self.grader}: {self.met} on {self.criterion_id}/{self.response_id}"
