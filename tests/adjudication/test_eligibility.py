"""Who adjudicates: a named physician who never rated the item and did not write its case,
the one with the fewest open items first; when nobody may, the item waits unassigned on the
monitoring page until the coordinator hands it to an eligible physician."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clinic_eval.adjudication import services
from clinic_eval.errors import DomainError
from clinic_eval.models import Adjudication, AuditEvent, User
from tests.adjudication.world import (
    adjudicated_study,
    adjudication_of,
    comparisons,
    final_post,
    pair,
    rate,
    seats,
    unseated,
)
from tests.conftest import logged_in
from tests.support.rating_study import physicians

pytestmark = pytest.mark.django_db


def disagree(comparison: object) -> Adjudication:
    first, second = pair(comparison)  # type: ignore[arg-type]
    one, two = seats(comparison)  # type: ignore[arg-type]
    rate(one, prefer=first)
    rate(two, prefer=second)
    adjudication = adjudication_of(comparison)  # type: ignore[arg-type]
    assert adjudication is not None
    return adjudication


def test_the_adjudicator_never_rated_the_item(coordinator: User) -> None:
    raters = physicians(3, prefix="trio")
    study = adjudicated_study(coordinator=coordinator, raters=raters, n_cases=4).study
    for comparison in comparisons(study):
        adjudication = disagree(comparison)
        (left_over,) = unseated(comparison, raters)
        assert adjudication.adjudicator == left_over
        assert adjudication.adjudicator_id not in {s.rater_id for s in seats(comparison)}


def test_the_case_author_never_adjudicates_it_and_nobody_eligible_leaves_it_unassigned(
    coordinator: User,
) -> None:
    raters = physicians(3, prefix="ward")
    senior = physicians(1, prefix="senior")[0]
    built = adjudicated_study(
        coordinator=coordinator,
        raters=[*raters, senior],
        adjudicators=[senior],
        authors={0: senior},
    )
    study = built.study
    comparison = next(c for c in comparisons(study) if c.case == built.cases[0])
    assert senior.pk not in {s.rater_id for s in seats(comparison)}, "authors never rate"

    adjudication = disagree(comparison)
    assert adjudication.adjudicator is None, "the senior wrote the case"

    # The monitoring page lists it, with who may take it: the ward physician left over.
    client = logged_in(coordinator)
    page = client.get(reverse("coordinator:study_monitor", args=[study.pk])).content.decode()
    backlog = page.split('id="adjudication-backlog"', 1)[1]
    assert "Nobody eligible yet</dt><dd>1</dd>" in backlog and adjudication.public_id in backlog
    (eligible,) = unseated(comparison, raters)
    assert f'<option value="{eligible.pk}">{eligible.username}</option>' in backlog
    assert f'<option value="{senior.pk}">' not in backlog

    # A rater of the item is refused; the eligible physician is given it.
    url = reverse("coordinator:adjudication_assign", args=[study.pk])
    seated = seats(comparison)[0].rater
    refused = client.post(
        url, {"adjudication": adjudication.public_id, "adjudicator": seated.pk}, follow=True
    )
    assert "may not adjudicate this item" in refused.content.decode()
    assert Adjudication.objects.get(pk=adjudication.pk).adjudicator is None

    done = client.post(
        url, {"adjudication": adjudication.public_id, "adjudicator": eligible.pk}, follow=True
    )
    assert f"goes to {eligible.username}" in done.content.decode()
    assert Adjudication.objects.get(pk=adjudication.pk).adjudicator == eligible
    assert AuditEvent.objects.filter(target=f"adjudication:{adjudication.pk}").count() == 2

    # Handed once: a second hand-over changes nothing.
    again = client.post(
        url, {"adjudication": adjudication.public_id, "adjudicator": eligible.pk}, follow=True
    )
    assert "already has an adjudicator" in again.content.decode()

    # And it is now in their queue, where they can record it.
    queue = logged_in(eligible).get(reverse("rater:adjudication_queue")).content.decode()
    assert adjudication.public_id in queue
    item = reverse("rater:adjudication_item", args=[adjudication.public_id])
    assert logged_in(eligible).post(item, final_post()).status_code == 302
    assert Adjudication.objects.get(pk=adjudication.pk).status == Adjudication.Status.DONE


def test_the_service_refuses_an_author_and_a_foreign_physician(coordinator: User) -> None:
    raters = physicians(3, prefix="ward")
    senior = physicians(1, prefix="senior")[0]
    outsider = physicians(1, prefix="outside")[0]
    built = adjudicated_study(
        coordinator=coordinator,
        raters=[*raters, senior],
        adjudicators=[senior],
        authors={0: senior},
    )
    comparison = next(c for c in comparisons(built.study) if c.case == built.cases[0])
    adjudication = disagree(comparison)
    for who in (senior, outsider):
        with pytest.raises(DomainError, match="may not adjudicate"):
            services.adjudication_assign(adjudication=adjudication, adjudicator=who)


def test_the_adjudicator_with_the_fewest_open_items_goes_first(coordinator: User) -> None:
    ward = physicians(2, prefix="ward")
    seniors = physicians(2, prefix="senior")
    study = adjudicated_study(
        coordinator=coordinator, raters=[*ward, *seniors], adjudicators=seniors, n_cases=18
    ).study
    # Items that only the ward physicians rated: both seniors may take them.
    free = [c for c in comparisons(study) if len(unseated(c, seniors)) == 2]
    assert len(free) >= 3, "the design rotates every pair of raters"

    first = disagree(free[0])
    assert first.adjudicator == seniors[0], "a tie goes by the plan's order"
    second = disagree(free[1])
    assert second.adjudicator == seniors[1], "the first senior has one open, the second none"

    item = reverse("rater:adjudication_item", args=[first.public_id])
    assert logged_in(seniors[0]).post(item, final_post()).status_code == 302
    third = disagree(free[2])
    assert third.adjudicator == seniors[0], "a recorded item is no longer open"
