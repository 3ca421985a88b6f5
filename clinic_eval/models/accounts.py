from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


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


class UserSession(models.Model):
    """Which sessions a user holds, so disabling the account can end every one of them."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tracked_sessions"
    )
    session_key = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"session of {self.user} since {self.created_at}"
