"""The plan's adjudication rule, through real submissions: each condition opens one
adjudication when an item's last rater submits; agreement, repeats and resubmissions do not."""

from __future__ import annotations

import pytest

from clinic_eval.models import Adjudication, AuditEvent, Judgment, User
from clinic_eval.rating import services as rating_services
from clinic_eval.rating.adjudication import PREFERENCE_CONFLICT, SEVERE_SINGLE
from tests.adjudication.world import (
    ERROR,
    adjudicated_study,
    adjudication_of,
    answer,
    comparisons,
    pair,
    rate,
    seats,
)
from tests.support.rating_study import physicians

pytestmark = pytest.mark.django_db


@pytest.fixture
def trio(db: None) -> list[User]:
    # Three raters, two per item: each item has one rater left over to adjudicate it.
    return physicians(3, prefix="trio")


def test_decisive_preferences_that_disagree_open_one_adjudication(
    coordinator: User, trio: list[User]
) -> None:
    study = adjudicated_study(coordinator=coordinator, raters=trio).study
    comparison = comparisons(study)[0]
    first, second = pair(comparison)
    one, two = seats(comparison)

    rate(one, prefer=first)
    assert adjudication_of(comparison) is None, "opened before the last rater submitted"
    rate(two, prefer=second)

    adjudication = adjudication_of(comparison)
    assert adjudication is not None
    assert adjudication.triggers == [PREFERENCE_CONFLICT]
    assert adjudication.status == Adjudication.Status.PENDING
    assert sorted(adjudication.shown_order) == [first, second]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ADJUDICATION_OPENED).count() == 1


def test_a_likert_gap_of_n_fires_and_a_smaller_one_does_not(
    coordinator: User, trio: list[User]
) -> None:
    study = adjudicated_study(coordinator=coordinator, raters=trio, rule={"likert_gap": 2}).study
    wide, narrow = comparisons(study)
    for comparison, low in ((wide, 2), (narrow, 3)):
        first, _ = pair(comparison)
        one, two = seats(comparison)
        rate(one, prefer=first, scores={first: (4, 3)})
        rate(two, prefer=first, scores={first: (low, 3)})

    assert adjudication_of(wide).triggers == ["Scores differ by 2 on reasoning clarity"]
    assert adjudication_of(narrow) is None


def test_the_most_severe_flag_from_only_one_rater_fires(
    coordinator: User, trio: list[User]
) -> None:
    study = adjudicated_study(coordinator=coordinator, raters=trio).study
    lone, shared = comparisons(study)
    for comparison, other_flag in ((lone, ("none", "")), (shared, ("factual", "major"))):
        first, _ = pair(comparison)
        one, two = seats(comparison)
        rate(one, prefer=first, flags={first: ("factual", "major")})
        rate(two, prefer=first, flags={first: other_flag})

    assert adjudication_of(lone).triggers == [SEVERE_SINGLE]
    assert adjudication_of(shared) is None, "both raters flagged it: they agree"


def test_a_severe_harm_span_from_one_rater_fires(coordinator: User, trio: list[User]) -> None:
    study = adjudicated_study(coordinator=coordinator, raters=trio, spans=True).study
    lone, minor = comparisons(study)
    for comparison, harm in ((lone, "severe"), (minor, "moderate")):
        first, _ = pair(comparison)
        one, two = seats(comparison)
        rate(one, prefer=first, spans=[(first, ERROR, "factual_error", harm)])
        rate(two, prefer=first)

    assert adjudication_of(lone).triggers == [SEVERE_SINGLE]
    assert adjudication_of(minor) is None


def test_nothing_fires_when_raters_agree_or_one_is_undecided(
    coordinator: User, trio: list[User]
) -> None:
    study = adjudicated_study(coordinator=coordinator, raters=trio).study
    agree, undecided = comparisons(study)
    first, _ = pair(agree)
    one, two = seats(agree)
    rate(one, prefer=first)
    rate(two, prefer=first)
    first, _ = pair(undecided)
    one, two = seats(undecided)
    rate(one, prefer=first)
    rate(two, prefer="tie")  # a tie is not a decisive preference

    assert Adjudication.objects.count() == 0


def test_a_disabled_rule_never_fires(coordinator: User, trio: list[User]) -> None:
    study = adjudicated_study(coordinator=coordinator, raters=trio, rule={"enabled": False}).study
    comparison = comparisons(study)[0]
    first, second = pair(comparison)
    one, two = seats(comparison)
    rate(one, prefer=first)
    rate(two, prefer=second)
    assert Adjudication.objects.count() == 0


def test_repeat_showings_are_not_raters_of_their_own(coordinator: User) -> None:
    """A rater who contradicts themselves on a repeat showing is measured for consistency, not
    sent to adjudication: the rule compares the item's raters, not showings."""
    raters = physicians(2, prefix="repeat")
    study = adjudicated_study(
        coordinator=coordinator,
        raters=raters,
        adjudicators=raters,
        n_cases=12,
        repeat_fraction=0.5,
    ).study
    comparison = next(c for c in comparisons(study) if len(seats(c, repeats=True)) == 3)
    first, second = pair(comparison)
    for seat in seats(comparison, repeats=True):
        rate(seat, prefer=second if seat.is_repeat else first)

    assert Judgment.objects.filter(assignment__comparison=comparison).count() == 3
    assert adjudication_of(comparison) is None


def test_a_pending_repeat_showing_does_not_hold_the_item_back(
    coordinator: User, trio: list[User]
) -> None:
    """The rule is checked when the item's first showings are all rated: a repeat showing,
    placed a third of a queue later, does not delay the adjudication."""
    study = adjudicated_study(
        coordinator=coordinator, raters=trio, n_cases=12, repeat_fraction=0.5
    ).study
    comparison = next(c for c in comparisons(study) if len(seats(c, repeats=True)) == 3)
    first, second = pair(comparison)
    one, two = seats(comparison)
    rate(one, prefer=first)
    rate(two, prefer=second)

    adjudication = adjudication_of(comparison)
    assert adjudication is not None and adjudication.triggers == [PREFERENCE_CONFLICT]
    (repeat,) = [s for s in seats(comparison, repeats=True) if s.is_repeat]
    assert repeat.status == repeat.Status.PENDING


def test_resubmissions_and_edits_never_open_a_second(coordinator: User, trio: list[User]) -> None:
    study = adjudicated_study(coordinator=coordinator, raters=trio).study
    comparison = comparisons(study)[0]
    first, second = pair(comparison)
    one, two = seats(comparison)
    rate(one, prefer=first)
    rate(two, prefer=second)
    opened = adjudication_of(comparison)

    rate(two, prefer=second)  # the same answer again: unchanged
    assert two.rater is not None
    rating_services.judgment_record(
        assignment=two,
        rater=two.rater,
        data=answer(two, prefer=second, scores={second: (1, 1)}),
        revision=1,
        reason="Looked again.",
    )  # an audited edit: the check runs again and finds the item already adjudicated

    assert list(Adjudication.objects.values_list("pk", flat=True)) == [opened.pk]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ADJUDICATION_OPENED).count() == 1
