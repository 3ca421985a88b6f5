from __future__ import annotations

from django.conf import settings
from django.db import models

from clinic_eval.models.rating import Comparison
from clinic_eval.models.studies import Response, Study, new_public_id


class Adjudication(models.Model):
    """A senior physician's resolution of one item whose raters disagreed.

    At most one per comparison, enforced by the database, so concurrent final submits create
    one. The raters' judgments are never changed: the final answer is kept here, beside them.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the adjudicator"
        DONE = "done", "Adjudicated"

    public_id = models.CharField(max_length=24, unique=True, default=new_public_id)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="adjudications")
    comparison = models.OneToOneField(
        Comparison, on_delete=models.CASCADE, related_name="adjudication"
    )
    # Empty while no physician named in the plan may take it (each rated it or wrote the case).
    adjudicator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="adjudications",
    )
    # Response primary keys in the adjudicator's on-screen order: never sent to a physician.
    shown_order = models.JSONField()
    # Which conditions of the plan's rule fired, in words a coordinator reads.
    triggers = models.JSONField(default=list)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)
    # The final judgment: a position letter of shown_order, "tie" or "none"; the Likert scores
    # and hallucination flag per shown position; and the reason, which is required.
    preference = models.CharField(max_length=8, blank=True)
    preferred_response = models.ForeignKey(
        Response, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    ratings = models.JSONField(default=list, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["study", "adjudicator", "status"])]

    def __str__(self) -> str:
        return f"adjudication {self.public_id}"
