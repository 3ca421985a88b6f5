from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from alignment_jobs.operations import doctor


class Command(BaseCommand):
    help = (
        "Check the database and migrations, broker, cache, live workers per queue and their "
        "engines, MODEL_ROOTS and each open arm's checkpoint, and the deployment settings: one "
        "line per check with what to do. Exits 1 when a check fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout", type=float, default=2.0, help="Seconds to wait for workers to answer"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        findings = doctor.run(timeout=options["timeout"])
        for finding in findings:
            self.stdout.write(finding.line())
        failed = sum(f.status == "fail" for f in findings)
        if failed:
            self.stdout.write(f"{failed} check(s) failed")
            sys.exit(1)
        self.stdout.write(
            "every check passed"
            + (" (see the warnings)" if any(f.status == "warn" for f in findings) else "")
        )
