from __future__ import annotations

from django.http import Http404

from clinic_eval.models import (
    DataImport,
    User,
)
from clinic_eval.studies.selectors import study_get_for_coordinator


def data_import_get_for_coordinator(*, user: User, study_id: int, import_id: int) -> DataImport:
    study = study_get_for_coordinator(user=user, study_id=study_id)
    try:
        return (
            study.imports.select_related("study", "created_by").defer("content").get(pk=import_id)
        )
    except DataImport.DoesNotExist:
        raise Http404 from None
