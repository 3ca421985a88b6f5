from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from clinic_eval.models.studies import Case, Response, Study, new_public_id


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


class ResponseSpan(models.Model):
    """A place in one shown response that a rater marked: a character range of its display
    text (frozen when the study opens) with a category and harm, or, for an omission, what
    the response left out (a case field, or words in the note) with no range."""

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="spans")
    position = models.PositiveSmallIntegerField()  # 0 = A, 1 = B, ... as this rater saw them
    response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="spans")
    start = models.PositiveIntegerField(null=True, blank=True)
    end = models.PositiveIntegerField(null=True, blank=True)
    # The text of the range when it was marked, kept for the export and the reviewer.
    quote = models.TextField(blank=True)
    category = models.CharField(max_length=48)
    harm = models.CharField(max_length=16)
    case_field = models.CharField(max_length=100, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["judgment_id", "position", "start", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(start__isnull=True) & Q(end__isnull=True))
                | Q(start__isnull=False, end__gt=models.F("start")),
                name="span_range_empty_or_forward",
            )
        ]
        indexes = [models.Index(fields=["response"])]

    def __str__(self) -> str:
        return f"{self.category} span on {self.response_id}"
