"""Race safety against the real PostgreSQL: an item's last raters submitting at once open one
adjudication, and an adjudicator's final judgment sent many times at once is recorded once."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from clinic_eval.models import Adjudication, Assignment, AuditEvent, Judgment
from clinic_eval.rating import services as rating_services
from clinic_eval.rating.inputs import JudgmentOutcome
from tests.adjudication.world import (
    adjudicated_study,
    adjudication_of,
    answer,
    comparisons,
    final_post,
    pair,
    rate,
    seats,
    unseated,
)
from tests.conftest import logged_in
from tests.rating.test_rating_concurrency import at_once
from tests.support.rating_study import physicians

pytestmark = pytest.mark.django_db(transaction=True)


def test_ten_concurrent_final_submits_open_exactly_one_adjudication(coordinator: object) -> None:
    assert connection.vendor == "postgresql"
    # Eleven physicians, ten per item: each item's last ten submit at once, and the one left
    # over adjudicates it.
    raters = physicians(11, prefix="crowd")
    study = adjudicated_study(
        coordinator=coordinator,  # type: ignore[arg-type]
        raters=raters,
        raters_per_item=10,
        n_cases=3,
    ).study
    for comparison in comparisons(study):
        pair_ = pair(comparison)
        item_seats = seats(comparison)
        assert len(item_seats) == 10

        def submit(
            index: int, item_seats: list[Assignment] = item_seats, two: tuple[int, int] = pair_
        ) -> str:
            seat = Assignment.objects.select_related("study", "rater").get(pk=item_seats[index].pk)
            chosen = two[index % 2]  # half and half: decisive, and disagreeing
            _, outcome = rating_services.judgment_record(
                assignment=seat, rater=seat.rater, data=answer(seat, prefer=chosen)
            )
            return outcome

        outcomes = at_once(10, submit)

        assert outcomes == [JudgmentOutcome.CREATED] * 10
        assert Judgment.objects.filter(assignment__comparison=comparison).count() == 10
        assert Adjudication.objects.filter(comparison=comparison).count() == 1
        (left_over,) = unseated(comparison, raters)
        assert adjudication_of(comparison).adjudicator == left_over
    assert Adjudication.objects.filter(study=study).count() == 3
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ADJUDICATION_OPENED).count() == 3


def test_a_final_judgment_posted_ten_times_at_once_is_recorded_once(coordinator: object) -> None:
    raters = physicians(3, prefix="trio")
    study = adjudicated_study(coordinator=coordinator, raters=raters, n_cases=1).study  # type: ignore[arg-type]
    comparison = comparisons(study)[0]
    first, second = pair(comparison)
    one, two = seats(comparison)
    rate(one, prefer=first)
    rate(two, prefer=second)
    adjudication = adjudication_of(comparison)
    assert adjudication is not None and adjudication.adjudicator is not None
    url = reverse("rater:adjudication_item", args=[adjudication.public_id])
    answer_post = final_post()

    statuses = at_once(
        10, lambda _: logged_in(adjudication.adjudicator).post(url, answer_post).status_code
    )

    assert set(statuses) == {302}
    stored = Adjudication.objects.get(pk=adjudication.pk)
    assert stored.status == Adjudication.Status.DONE
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ADJUDICATION_DONE).count() == 1
