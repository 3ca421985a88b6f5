from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q
from django.utils import timezone

from clinic_eval.models import (
    Assignment,
    Judgment,
    Study,
    StudyRater,
    User,
)


@dataclass(frozen=True)
class RaterMonitor:
    rater: User
    total: int
    done: int
    leased: int
    median_seconds: float | None
    left_rate: float | None  # share of A among A/B choices (pairwise)
    last_rated_at: object
    reminded_at: object


@dataclass(frozen=True)
class StudyMonitor:
    raters: list[RaterMonitor]
    pending: int
    leased: int
    done: int
    pooled: int


def study_monitoring(*, study: Study) -> StudyMonitor:
    now = timezone.now()
    seats = Assignment.objects.filter(study=study)
    per_rater = {
        row["rater"]: row
        for row in seats.filter(rater__isnull=False)
        .values("rater")
        .annotate(
            total=Count("id"),
            done=Count("id", filter=Q(status=Assignment.Status.DONE)),
            leased=Count("id", filter=Q(status=Assignment.Status.PENDING, leased_until__gt=now)),
        )
    }
    seconds: dict[int, list[float]] = defaultdict(list)
    sides: dict[int, Counter[str]] = defaultdict(Counter)
    last: dict[int, datetime] = {}
    for rater_id, secs, preference, created in Judgment.objects.filter(study=study).values_list(
        "rater_id", "seconds_on_item", "preference", "created_at"
    ):
        if secs is not None:
            seconds[rater_id].append(secs)
        sides[rater_id][preference] += 1
        last[rater_id] = max(created, last.get(rater_id, created))
    links = (
        StudyRater.objects.filter(study=study).select_related("rater").order_by("rater__username")
    )
    rows = []
    for link in links:
        counts = per_rater.get(link.rater_id, {"total": 0, "done": 0, "leased": 0})
        chosen = sides[link.rater_id]
        sided = chosen["A"] + chosen["B"]
        rows.append(
            RaterMonitor(
                rater=link.rater,
                total=counts["total"],
                done=counts["done"],
                leased=counts["leased"],
                median_seconds=statistics.median(seconds[link.rater_id])
                if seconds[link.rater_id]
                else None,
                left_rate=chosen["A"] / sided if sided else None,
                last_rated_at=last.get(link.rater_id),
                reminded_at=link.reminded_at,
            )
        )
    totals = seats.aggregate(
        pending=Count("id", filter=Q(status=Assignment.Status.PENDING)),
        leased=Count("id", filter=Q(status=Assignment.Status.PENDING, leased_until__gt=now)),
        done=Count("id", filter=Q(status=Assignment.Status.DONE)),
        pooled=Count("id", filter=Q(rater__isnull=True, status=Assignment.Status.PENDING)),
    )
    return StudyMonitor(raters=rows, **totals)
