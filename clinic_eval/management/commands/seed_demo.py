from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval.demo import study as demo


class Command(BaseCommand):
    help = "Create the demo study and demo accounts (DEBUG only: the passwords are published)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cases", type=int, default=240)
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates accounts with published passwords, so it runs only with DEBUG=1"
            )
        if options["cases"] < 1:
            raise CommandError("--cases must be at least 1")
        seeded = demo.demo_seed(n_cases=options["cases"], seed=options["seed"])
        verb = "Created" if seeded.created else "Found"
        self.stdout.write(
            f"{verb} demo study {seeded.study.pk}: {seeded.study.title} "
            f"({seeded.study.cases.count()} cases)"
        )
        for role, username, password in seeded.accounts:
            self.stdout.write(f"  {role:<12} {username:<14} password: {password}")
