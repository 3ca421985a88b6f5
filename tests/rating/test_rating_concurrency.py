"""Concurrent raters against the real PostgreSQL: row locks, SKIP LOCKED and constraints."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from django.db import connection, connections
from django.urls import reverse

from clinic_eval.models import Assignment, Judgment, ResponseRating, StudyRater, User
from clinic_eval.monitoring import services as monitoring_services
from clinic_eval.rating import services as rating_services
from tests.conftest import logged_in
from tests.support.rating_study import full_answer, judgment_input, open_study, physicians

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")


def at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` in ``count`` threads released together, each with its own connection."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        try:
            barrier.wait()
            return work(index)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_ten_identical_posts_store_one_judgment_and_never_a_5xx(coordinator: User) -> None:
    assert connection.vendor == "postgresql"
    rater = physicians(1)[0]
    study = open_study(coordinator=coordinator, raters=[rater], raters_per_item=1).study
    seat = rating_services.assignment_next(rater=rater, study=study)
    url = reverse("rater:item", args=[seat.public_id])
    answer = full_answer()

    statuses = at_once(10, lambda _: logged_in(rater).post(url, answer).status_code)

    assert all(status < 500 for status in statuses), statuses
    assert set(statuses) == {302}
    assert Judgment.objects.filter(assignment=seat).count() == 1
    assert ResponseRating.objects.filter(judgment__assignment=seat).count() == 2


def test_ten_threads_recording_directly_leave_one_row_and_agree_on_it(
    coordinator: User,
) -> None:
    rater = physicians(1)[0]
    study = open_study(coordinator=coordinator, raters=[rater], raters_per_item=1).study
    seat = rating_services.assignment_next(rater=rater, study=study)

    def record(_: int) -> tuple[int, str]:
        mine = Assignment.objects.select_related("study").get(pk=seat.pk)
        judgment, outcome = rating_services.judgment_record(
            assignment=mine, rater=rater, data=judgment_input()
        )
        return judgment.pk, outcome

    results = at_once(10, record)
    assert len({pk for pk, _ in results}) == 1
    assert sorted(outcome for _, outcome in results) == ["created"] + ["unchanged"] * 9
    assert Judgment.objects.count() == 1


def test_twenty_raters_draining_the_pool_at_once_never_exceed_raters_per_item(
    coordinator: User,
) -> None:
    first_raters = physicians(2, prefix="leaving")
    built = open_study(coordinator=coordinator, raters=first_raters, n_cases=6)
    study = built.study
    for rater in first_raters:
        monitoring_services.assignments_reassign(study=study, from_rater=rater, to_rater=None)
    seats = Assignment.objects.filter(study=study).count()
    assert Assignment.objects.filter(study=study, rater__isnull=True).count() == seats == 36
    crowd = physicians(20, prefix="crowd")
    StudyRater.objects.bulk_create(StudyRater(study=study, rater=r) for r in crowd)

    def drain(index: int) -> int:
        rater = crowd[index]
        rated = 0
        while (seat := rating_services.assignment_next(rater=rater, study=study)) is not None:
            rating_services.judgment_record(assignment=seat, rater=rater, data=judgment_input())
            rated += 1
        return rated

    rated = at_once(20, drain)

    assert sum(rated) == 36
    assert Judgment.objects.filter(study=study).count() == 36
    per_comparison = Counter(
        Assignment.objects.filter(study=study).values_list("comparison_id", flat=True)
    )
    assert set(per_comparison.values()) == {2}, "a comparison got more seats than raters"
    done = Counter(
        Assignment.objects.filter(study=study, status="done").values_list(
            "comparison_id", flat=True
        )
    )
    assert set(done.values()) == {2}
    pairs = Counter(Assignment.objects.filter(study=study).values_list("comparison_id", "rater_id"))
    assert max(pairs.values()) == 1, "one rater rated one comparison twice"


def test_twenty_raters_asking_at_once_get_distinct_pooled_seats(coordinator: User) -> None:
    leaving = physicians(1, prefix="leaving")
    study = open_study(coordinator=coordinator, raters=leaving, n_cases=4, raters_per_item=1).study
    monitoring_services.assignments_reassign(study=study, from_rater=leaving[0], to_rater=None)
    crowd = physicians(20, prefix="crowd")
    StudyRater.objects.bulk_create(StudyRater(study=study, rater=r) for r in crowd)

    def ask(index: int) -> int | None:
        seat = rating_services.assignment_next(rater=crowd[index], study=study)
        return seat.pk if seat else None

    seats = [pk for pk in at_once(20, ask) if pk is not None]
    assert len(seats) == 12 and len(set(seats)) == 12
    assert Assignment.objects.filter(study=study, rater__isnull=True).count() == 0


def test_raters_with_their_own_queues_asking_at_once_each_get_their_next_item(
    coordinator: User,
) -> None:
    """The one-statement claim locks only the seat: a lock on the study row would make every
    rater asking at that moment skip the study and be told their queue is empty."""
    crowd = physicians(20, prefix="queue")
    study = open_study(coordinator=coordinator, raters=crowd, n_cases=20, raters_per_item=2).study

    def rate_three(index: int) -> list[int | None]:
        taken: list[int | None] = []
        for _ in range(3):
            seat = rating_services.assignment_next(rater=crowd[index], study=study)
            taken.append(seat.pk if seat else None)
            if seat is not None:
                rating_services.judgment_record(
                    assignment=seat, rater=crowd[index], data=judgment_input()
                )
        return taken

    taken = [pk for seats in at_once(20, rate_three) for pk in seats]
    assert None not in taken, "a rater with items left was told the queue is empty"
    assert len(set(taken)) == 60
    assert Judgment.objects.filter(study=study).count() == 60
