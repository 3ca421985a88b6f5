from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q

from clinic_eval.study_config import (
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


class User(AbstractUser):
    class Role(models.TextChoices):
        COORDINATOR = "coordinator", "Study coordinator"
        PHYSICIAN = "physician", "Physician (rater)"

    # Least privilege by default: an account is a rater until made a coordinator.
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PHYSICIAN)

    @property
    def is_coordinator(self) -> bool:
        return self.is_active and (self.role == self.Role.COORDINATOR or self.is_superuser)

    @property
    def is_physician(self) -> bool:
        return self.is_active and self.role == self.Role.PHYSICIAN


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
    raters = models.ManyToManyField(
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


class Comparison(models.Model):
    """One case and the responses of an arm set (a pair, or N arms for best-of-N)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="comparisons")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="comparisons")
    arm_set = models.CharField(max_length=400)  # sorted arm labels joined by " | "
    responses = models.ManyToManyField(Response, related_name="comparisons")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "case", "arm_set"], name="one_comparison_per_case_arm_set"
            )
        ]

    def __str__(self) -> str:
        return f"{self.case} / {self.arm_set}"


class Assignment(models.Model):
    """A seat: one rater's showing of one comparison, with its on-screen order fixed.

    ``rater`` is empty while a seat waits in the study's pool (after a reassignment), from
    which any eligible rater with nothing left in their own queue may claim it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"

    public_id = models.CharField(max_length=24, unique=True, default=new_public_id)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="assignments")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="assignments",
    )
    # Response primary keys in on-screen order (A, B, ...): never sent to a rater.
    shown_order = models.JSONField()
    queue_position = models.PositiveIntegerField()
    is_repeat = models.BooleanField(default=False)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    leased_until = models.DateTimeField(null=True, blank=True)
    first_shown_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["queue_position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "rater", "is_repeat"],
                condition=Q(rater__isnull=False),
                name="one_seat_per_rater_comparison",
            )
        ]
        indexes = [
            models.Index(fields=["study", "rater", "status", "queue_position"]),
        ]

    def __str__(self) -> str:
        return f"seat {self.public_id}"


class Judgment(models.Model):
    """A rater's verdict on one assignment; at most one, enforced by the database."""

    class Preference(models.TextChoices):
        TIE = "tie", "Tie"
        NONE = "none", "Both (or all) unacceptable"

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="judgments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments"
    )
    # A position letter (A, B, ... as shown), "tie" or "none".
    preference = models.CharField(max_length=8)
    preferred_response = models.ForeignKey(
        Response, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    rationale = models.TextField(blank=True)
    seconds_on_item = models.FloatField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"judgment on {self.assignment}"


class ResponseRating(models.Model):
    """The rubric for one response within a judgment: Likert scores and a hallucination flag."""

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="ratings")
    position = models.PositiveSmallIntegerField()  # 0 = A, 1 = B, ...
    response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="ratings")
    scores = models.JSONField(default=dict)  # rubric dimension key -> integer
    hallucination = models.CharField(max_length=48, blank=True)
    severity = models.CharField(max_length=48, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["judgment_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["judgment", "position"], name="one_rating_per_judgment_position"
            )
        ]

    def __str__(self) -> str:
        return f"rating {self.position} of {self.judgment}"


class JudgmentEdit(models.Model):
    """Append-only audit of every change to a stored judgment."""

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="edits")
    editor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    edited_at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True)
    before = models.JSONField()
    after = models.JSONField()

    class Meta:
        ordering = ["edited_at", "id"]

    def __str__(self) -> str:
        return f"edit of {self.judgment} at {self.edited_at}"


class ExportLog(models.Model):
    """Who exported what, when, with which filters, and how many rows left the building."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="export_logs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    what = models.CharField(max_length=64)  # "zip", a file name, or "report"
    filters = models.JSONField(default=dict, blank=True)
    via = models.CharField(max_length=8, default="web")  # web | api | command
    row_count = models.PositiveBigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.what} of {self.study} by {self.user} at {self.started_at}"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs: object) -> int:
        raise AuditImmutable("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutable("audit events are append-only")


class AuditImmutable(Exception):
    """Raised on any attempt to change or remove an audit event."""


class AuditEvent(models.Model):
    """Append-only trail: who did what, when, to which object, with the old and new values.

    Rows are never updated or deleted: the model and its queryset refuse, and on PostgreSQL and
    SQLite a trigger refuses too, so even a raw UPDATE cannot rewrite history. The study is a
    plain id, not a foreign key, so the trail outlives what it describes.
    """

    class Action(models.TextChoices):
        LOGIN = "login", "Signed in"
        LOGIN_FAILED = "login_failed", "Failed sign-in"
        LOCKED_OUT = "locked_out", "Locked out after failed sign-ins"
        LOGOUT = "logout", "Signed out"
        SESSION_EXPIRED = "session_expired", "Session reached its absolute limit"
        ACCOUNT_DISABLED = "account_disabled", "Account disabled; its sessions ended"
        STUDY_CREATED = "study_created", "Study created"
        STUDY_STATUS = "study_status", "Study status changed"
        DESIGN_CHANGED = "design_changed", "Design changed"
        ARM_CREATED = "arm_created", "Arm created"
        SPEC_SAVED = "spec_saved", "Generation settings saved"
        IMPORT_SUBMITTED = "import_submitted", "Import submitted"
        JOB_LAUNCHED = "job_launched", "Generation job launched"
        JOB_CANCELLED = "job_cancelled", "Generation job cancelled"
        JOB_RETRIED = "job_retried", "Failed items retried"
        RESPONSE_REVIEWED = "response_reviewed", "Held response decided"
        RATERS_REASSIGNED = "raters_reassigned", "Rating seats reassigned"
        JUDGMENT_EDITED = "judgment_edited", "Rating edited"
        EXPORT = "export", "Export"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # As typed for a failed sign-in; kept for everyone so a renamed account's history reads true.
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=24, choices=Action.choices, db_index=True)
    study_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    target = models.CharField(max_length=64, blank=True)  # "judgment:12", "job:3"
    summary = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip_address = models.CharField(max_length=64, blank=True)
    via = models.CharField(max_length=8, blank=True)  # web | api | command | worker

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["actor", "-at"], name="audit_actor_at")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor_username or 'anonymous'} at {self.at}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise AuditImmutable("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise AuditImmutable("audit events are append-only")


class UserSession(models.Model):
    """Which sessions a user holds, so disabling the account can end every one of them."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tracked_sessions"
    )
    session_key = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"session of {self.user} since {self.created_at}"


# --- Criterion rubrics (HealthBench / ClinAlign style) ---------------------------------------


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


class PowerAnalysis(models.Model):
    """A power and sample-size simulation for a study's primary endpoint, run by a worker."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="power_analyses")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    inputs = models.JSONField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"power analysis {self.pk} of study {self.study_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def percent(self) -> int:
        if not self.progress_total:
            return 0
        return int(100 * self.progress_done / self.progress_total)
