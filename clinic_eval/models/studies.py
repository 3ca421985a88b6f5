from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models import Q

from clinic_eval.config import (
    RUBRIC_MODE,
    AnalysisPlan,
    Design,
    Rubric,
    default_analysis_plan,
    default_decision_layers,
    default_design,
    default_rubric,
    default_strata,
    validate_analysis_plan,
    validate_decision_layers,
    validate_design,
    validate_rubric,
    validate_strata,
)

if TYPE_CHECKING:
    from clinic_eval.models.accounts import User


def new_study_seed() -> int:
    return secrets.randbelow(2**31)


def new_public_id() -> str:
    """An opaque id for rater-facing URLs and payloads: random, so it reveals no order or arm."""
    return secrets.token_urlsafe(12)


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        GENERATING = "generating", "Generating"
        READY = "ready", "Ready"
        OPEN = "open", "Open for rating"
        CLOSED = "closed", "Closed"

    title = models.CharField(max_length=200)
    question = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    seed = models.PositiveIntegerField(default=new_study_seed)
    strata = models.JSONField(default=default_strata, validators=[validate_strata])
    decision_layers = models.JSONField(
        default=default_decision_layers, validators=[validate_decision_layers]
    )
    rubric = models.JSONField(default=default_rubric, validators=[validate_rubric])
    design = models.JSONField(default=default_design, validators=[validate_design])
    analysis_plan = models.JSONField(
        default=default_analysis_plan, validators=[validate_analysis_plan]
    )
    # Set when the study opens: the SHA-256 of the frozen design, rubric and plan.
    design_hash = models.CharField(max_length=64, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    public_id = models.CharField(max_length=24, unique=True, default=new_public_id)
    # The demo's closed study: its ratings were simulated, and its results page says so.
    simulated_ratings = models.BooleanField(default=False)
    raters: models.ManyToManyField[User, StudyRater] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="StudyRater", related_name="rated_studies", blank=True
    )
    coordinators = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="coordinated_studies", blank=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.title

    # Open or closed: the design, rubric, plan and rubrics no longer change.
    FROZEN_STATUSES = (Status.OPEN, Status.CLOSED)

    @property
    def is_frozen(self) -> bool:
        return self.status in self.FROZEN_STATUSES

    @property
    def design_config(self) -> Design:
        return Design.model_validate(self.design)

    @property
    def rubric_config(self) -> Rubric:
        return Rubric.model_validate(self.rubric)

    @property
    def plan_config(self) -> AnalysisPlan:
        return AnalysisPlan.model_validate(self.analysis_plan)

    @property
    def is_rubric_mode(self) -> bool:
        return self.design_config.mode == RUBRIC_MODE


STUDY_TRANSITIONS: dict[str, tuple[str, ...]] = {
    Study.Status.DRAFT: (Study.Status.GENERATING, Study.Status.READY),
    Study.Status.GENERATING: (Study.Status.READY, Study.Status.DRAFT),
    Study.Status.READY: (Study.Status.OPEN, Study.Status.DRAFT),
    Study.Status.OPEN: (Study.Status.CLOSED,),
    Study.Status.CLOSED: (),
}


class DataImport(models.Model):
    """One uploaded file of cases or responses, validated and applied all-or-nothing."""

    class Kind(models.TextChoices):
        CASES = "cases", "Cases"
        RESPONSES = "responses", "Responses"

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        CSV = "csv", "CSV"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Validating"
        SUCCEEDED = "succeeded", "Imported"
        FAILED = "failed", "Refused"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="imports")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    format = models.CharField(max_length=8, choices=Format.choices)
    filename = models.CharField(max_length=255)
    # Responses only: every line belongs to this arm (lines may then leave "arm" out).
    arm_label = models.CharField(max_length=64, blank=True)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    # Held only until the import ends, then cleared: the cases live in their own rows.
    content = models.BinaryField(null=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    row_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "kind", "sha256"],
                condition=Q(status="succeeded"),
                name="one_successful_import_per_file",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} import #{self.pk} ({self.filename})"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED}


class Case(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="cases")
    external_id = models.CharField(max_length=64)
    stratum = models.CharField(max_length=80)
    narrative = models.TextField()
    fields = models.JSONField(default=dict, blank=True)
    ground_truth = models.JSONField(default=dict, blank=True)
    original_text = models.TextField(blank=True)
    original_decision = models.JSONField(default=dict, blank=True)
    original_author_ref = models.CharField(max_length=150, blank=True)
    original_author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="authored_cases",
    )
    data_import = models.ForeignKey(
        DataImport, on_delete=models.SET_NULL, null=True, blank=True, related_name="cases"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["external_id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "external_id"], name="case_id_unique_in_study")
        ]
        indexes = [models.Index(fields=["study", "stratum"])]

    def __str__(self) -> str:
        return self.external_id


class Arm(models.Model):
    class Kind(models.TextChoices):
        MODEL = "model", "Model (generated)"
        PHYSICIAN_ORIGINAL = "physician_original", "Physician's original decision"
        IMPORTED = "imported", "Imported outputs"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="arms")
    label = models.CharField(max_length=64)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["label"]
        constraints = [
            models.UniqueConstraint(fields=["study", "label"], name="arm_label_unique_in_study"),
            models.UniqueConstraint(
                fields=["study"],
                condition=Q(kind="physician_original"),
                name="one_physician_original_arm_per_study",
            ),
        ]

    def __str__(self) -> str:
        return self.label


class Response(models.Model):
    class Review(models.TextChoices):
        CLEAR = "clear", "Clear"
        HELD = "held", "Held back: the leak check flagged it"
        APPROVED = "approved", "Approved by a coordinator"
        EXCLUDED = "excluded", "Excluded by a coordinator"

    # Raters may see a response only in one of these states.
    SERVABLE = (Review.CLEAR, Review.APPROVED)

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="responses")
    arm = models.ForeignKey(Arm, on_delete=models.CASCADE, related_name="responses")
    sample_index = models.PositiveSmallIntegerField(default=0)
    raw_text = models.TextField()
    display_text = models.TextField()
    parsed_decision = models.JSONField(default=dict, blank=True)
    parse_problems = models.JSONField(default=list, blank=True)
    leak_flags = models.JSONField(default=list, blank=True)
    review = models.CharField(max_length=16, choices=Review.choices, default=Review.CLEAR)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    data_import = models.ForeignKey(
        DataImport, on_delete=models.SET_NULL, null=True, blank=True, related_name="responses"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["case_id", "arm_id", "sample_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "arm", "sample_index"], name="one_response_per_case_arm_sample"
            )
        ]
        indexes = [models.Index(fields=["arm", "review"])]

    def __str__(self) -> str:
        return f"{self.case} / {self.arm} / {self.sample_index}"


class StudyRater(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="rater_links")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField(auto_now_add=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    reminder_count = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "rater"], name="one_link_per_study_rater")
        ]

    def __str__(self) -> str:
        return f"{self.rater} in {self.study}"
