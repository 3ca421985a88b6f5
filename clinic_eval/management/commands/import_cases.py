from __future__ import annotations

from clinic_eval.management.import_command import ImportCommand
from clinic_eval.models import DataImport


class Command(ImportCommand):
    help = "Import cases from a JSONL or CSV file (docs/data-format.md); all or nothing."
    kind = DataImport.Kind.CASES
