from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q
from django.utils import timezone

from clinic_eval.adjudication.selectors import adjudication_eligible
from clinic_eval.models import (
    Adjudication,
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


# --- Adjudication backlog ---------------------------------------------------------------------


@dataclass(frozen=True)
class AdjudicatorLoad:
    username: str
    pending: int
    done: int


@dataclass(frozen=True)
class UnassignedAdjudication:
    """An item nobody named in the plan could take, with who may take it now."""

    adjudication: Adjudication
    eligible: list[User]


@dataclass(frozen=True)
class AdjudicationBacklog:
    enabled: bool
    opened: int
    pending: int  # assigned and waiting
    done: int
    unassigned: list[UnassignedAdjudication]
    by_adjudicator: list[AdjudicatorLoad]
    triggers: list[tuple[str, int]]  # each condition in words, and how often it fired

    @property
    def shown(self) -> bool:
        return self.enabled or self.opened > 0


def adjudication_backlog(*, study: Study) -> AdjudicationBacklog:
    """The study's adjudications: opened, waiting per adjudicator, unassigned, done, and
    which conditions of the rule sent items there (coordinators only: usernames shown)."""
    rows = list(
        Adjudication.objects.filter(study=study)
        .select_related("adjudicator", "comparison__case")
        .order_by("created_at", "id")
    )
    # Every named adjudicator gets a row, busy or not.
    loads: dict[str, Counter[str]] = {
        name: Counter() for name in study.plan_config.adjudication.adjudicators
    }
    triggers: Counter[str] = Counter()
    unassigned = []
    for row in rows:
        triggers.update(row.triggers)
        if row.adjudicator is None:
            if row.status == Adjudication.Status.PENDING:
                unassigned.append(
                    UnassignedAdjudication(row, adjudication_eligible(adjudication=row))
                )
            continue
        loads.setdefault(row.adjudicator.username, Counter())[row.status] += 1
    return AdjudicationBacklog(
        enabled=study.plan_config.adjudication.enabled,
        opened=len(rows),
        pending=sum(1 for r in rows if r.status == Adjudication.Status.PENDING),
        done=sum(1 for r in rows if r.status == Adjudication.Status.DONE),
        unassigned=unassigned,
        by_adjudicator=[
            AdjudicatorLoad(
                username=name,
                pending=counts[Adjudication.Status.PENDING],
                done=counts[Adjudication.Status.DONE],
            )
            for name, counts in sorted(loads.items())
        ],
        triggers=triggers.most_common(),
    )


def adjudication_of_study(*, study: Study, public_id: str) -> Adjudication | None:
    """One of the study's adjudications by its public id (the study is the coordinator's)."""
    return (
        Adjudication.objects.filter(study=study, public_id=public_id)
        .select_related("study", "comparison__case")
        .first()
    )
