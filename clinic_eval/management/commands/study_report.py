from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval.models import Study
from clinic_eval.results import exports, reporting
from clinic_eval.statistics.report import report_json


class Command(BaseCommand):
    help = (
        "Print a study's full statistical report, from the database (--study) or from an "
        "export (--from-export, a folder or the zip); both run the same code and agree exactly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--study", type=int, help="The study id")
        source.add_argument("--from-export", type=Path, help="An export folder or .zip")
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument("--stratum", default="", help="Only cases of this stratum")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["from_export"] is not None:
            source: Path = options["from_export"]
            if not source.exists():
                raise CommandError(f"{source} does not exist")
            try:
                report = reporting.report_from_frames(*reporting.read_export(source))
            except (KeyError, ValueError, OSError) as exc:
                raise CommandError(f"{source} is not a clinic-eval export: {exc}") from None
        else:
            study = Study.objects.filter(pk=options["study"]).first()
            if study is None:
                raise CommandError(f"there is no study {options['study']}")
            report = exports.study_report(study, exports.ExportFilters(options["stratum"]))
        if options["format"] == "json":
            self.stdout.write(report_json(report))
        else:
            self.stdout.write(reporting.report_text(report), ending="")
