from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval.models import User
from clinic_eval.studies import services


class Command(BaseCommand):
    help = "Create a study owned by a coordinator and print its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--title", required=True)
        parser.add_argument("--question", default="")
        parser.add_argument("--coordinator", required=True, help="Username of a coordinator")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            coordinator = User.objects.get(username=options["coordinator"])
        except User.DoesNotExist:
            raise CommandError(f"there is no user {options['coordinator']!r}") from None
        if not coordinator.is_coordinator:
            raise CommandError(f"{coordinator.username!r} is not a coordinator")
        study = services.study_create(
            title=options["title"], question=options["question"], created_by=coordinator
        )
        self.stdout.write(str(study.pk))
