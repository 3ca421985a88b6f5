"""The shared body of ``import_cases`` and ``import_responses``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval.errors import DomainError
from clinic_eval.imports import services
from clinic_eval.models import DataImport, Study

# A terminal is no place for thousands of lines; the import page keeps the full list.
PRINTED_ERRORS = 20


class ImportCommand(BaseCommand):
    kind: str = DataImport.Kind.CASES

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--study", type=int, required=True, help="The study's id")
        parser.add_argument("file", type=Path, help="A .jsonl or .csv file")
        parser.add_argument(
            "--format",
            choices=DataImport.Format.values,
            help="Override the format guessed from the file name",
        )
        if self.kind == DataImport.Kind.RESPONSES:
            parser.add_argument(
                "--arm",
                default="",
                metavar="LABEL",
                help="The imported-outputs arm every line belongs to; lines may omit 'arm'",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            study = Study.objects.get(pk=options["study"])
        except Study.DoesNotExist:
            raise CommandError(f"there is no study with id {options['study']}") from None
        try:
            services.data_import_check_size(filename=path.name, size=path.stat().st_size)
            data_import = services.data_import_create(
                study=study,
                kind=self.kind,
                filename=path.name,
                content=path.read_bytes(),
                created_by=None,
                file_format=options["format"],
                arm_label=options.get("arm", ""),
            )
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        data_import = services.data_import_run(import_id=data_import.pk)
        if data_import.status != DataImport.Status.SUCCEEDED:
            for error in data_import.errors[:PRINTED_ERRORS]:
                where = f"line {error['line']}: " if error["line"] else ""
                self.stderr.write(f"{path.name}: {where}{error['message']}")
            hidden = data_import.error_count - PRINTED_ERRORS
            if hidden > 0:
                self.stderr.write(
                    f"... and {hidden:,} more; the study's import page lists the first "
                    f"{len(data_import.errors):,}"
                )
            raise CommandError(
                f"{data_import.error_count} problem(s) in {path.name}; nothing was imported "
                f"(import #{data_import.pk})"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {data_import.row_count} {self.kind} from {path.name} into study "
                f"{study.pk} “{study.title}” (import #{data_import.pk})"
            )
        )
