from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from alignment_jobs.demo.generation import demo_generation_seed
from clinic_eval.demo.study import DEMO_GENERATION_TITLE
from clinic_eval.models import Study


class Command(BaseCommand):
    help = "Give the demo generation sandbox model arms on tiny local models. DEBUG only."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo_generation is for the local demo; it needs DEBUG=1")
        study = Study.objects.filter(title=DEMO_GENERATION_TITLE).first()
        if study is None:
            raise CommandError("run seed_demo first")
        result = demo_generation_seed(study=study)
        if result.skipped:
            self.stdout.write(f"No model arms for the demo: {result.skipped}")
        elif result.arms:
            self.stdout.write(f"Model arms on tiny local models: {', '.join(result.arms)}")
