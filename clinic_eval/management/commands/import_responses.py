from __future__ import annotations

from clinic_eval.management.import_command import ImportCommand
from clinic_eval.models import DataImport


class Command(ImportCommand):
    help = "Import responses for imported-outputs arms (docs/data-format.md); all or nothing."
    kind = DataImport.Kind.RESPONSES
