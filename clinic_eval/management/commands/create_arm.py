from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, Study
from clinic_eval.studies import services


class Command(BaseCommand):
    help = "Add an arm to a study and print its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--study", type=int, required=True, help="The study's id")
        parser.add_argument("--label", required=True, help="Seen by coordinators only")
        parser.add_argument("--kind", required=True, choices=Arm.Kind.values)
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            study = Study.objects.get(pk=options["study"])
        except Study.DoesNotExist:
            raise CommandError(f"there is no study with id {options['study']}") from None
        try:
            arm = services.arm_create(
                study=study,
                label=options["label"],
                kind=options["kind"],
                description=options["description"],
            )
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(arm.pk))
