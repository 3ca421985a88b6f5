from __future__ import annotations

import hashlib

from django.db.models import Count, Max

from clinic_eval.models import (
    Adjudication,
    Judgment,
    Response,
    Study,
)


def study_data_version(*, study: Study) -> str:
    """Changes whenever anything the report reads changes: a cache key for the results page."""
    judgments = Judgment.objects.filter(study=study).aggregate(
        n=Count("id"), last=Max("updated_at")
    )
    responses = Response.objects.filter(case__study=study).aggregate(
        n=Count("id"), last=Max("reviewed_at"), made=Max("created_at")
    )
    adjudications = Adjudication.objects.filter(study=study).aggregate(
        n=Count("id"), done=Count("done_at"), last=Max("done_at")
    )
    parts = [
        study.status,
        study.design_hash,
        judgments["n"],
        judgments["last"],
        responses["n"],
        responses["last"],
        responses["made"],
        study.cases.count(),
        adjudications["n"],
        adjudications["done"],
        adjudications["last"],
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]
