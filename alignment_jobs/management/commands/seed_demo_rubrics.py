from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from alignment_jobs.demo.rubrics import demo_rubric_seed
from clinic_eval.demo.study import DEMO_COORDINATOR, DEMO_PHYSICIANS
from clinic_eval.models import User


class Command(BaseCommand):
    help = (
        "Add the rubric demo: drafts from a tiny local model for physicians to verify, and a "
        "closed rubric-graded study with simulated physicians and a tiny grader. DEBUG only."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo_rubrics is for the local demo; it needs DEBUG=1")
        coordinator = User.objects.filter(username=DEMO_COORDINATOR[0]).first()
        if coordinator is None:
            raise CommandError("run seed_demo first")
        physicians = list(User.objects.filter(username__in=[u for u, _ in DEMO_PHYSICIANS]))
        result = demo_rubric_seed(coordinator=coordinator, physicians=physicians)
        if result.skipped:
            self.stdout.write(f"No rubric demo: {result.skipped}")
        else:
            self.stdout.write("Rubric demo: drafts to verify and a graded closed study")
