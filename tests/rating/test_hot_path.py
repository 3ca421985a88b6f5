"""The rater's hot path skips the ORM's query building and DRF's per-request serializer copies
(issue 16); these tests hold it to what the ORM and fresh serializers give."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.http import Http404
from rest_framework import exceptions
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clinic_eval import access, sql
from clinic_eval.models import Assignment, Judgment, ResponseRating, Study, User
from clinic_eval.rating import api as rater_api
from clinic_eval.rating import selectors
from tests.support.rating_study import open_rubric_study, open_study, take_and_rate

pytestmark = pytest.mark.django_db


def _same_row(expected: Model, loaded: Model) -> None:
    assert type(expected) is type(loaded)
    for field in type(expected)._meta.concrete_fields:
        want, got = getattr(expected, field.attname), getattr(loaded, field.attname)
        assert got == want, field.name
        assert type(got) is type(want), field.name


def test_a_seat_loaded_by_written_sql_is_the_one_the_orm_loads(
    coordinator: User, physician: User
) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    rated = take_and_rate(physician, built.study)  # done_at, first_shown_at and JSON set
    for public_id in (
        rated.public_id,
        Assignment.objects.filter(status=Assignment.Status.PENDING).first().public_id,
    ):
        orm = Assignment.objects.select_related("study", "comparison__case").get(
            public_id=public_id
        )
        loaded = access.assignment_get_for_rater(user=physician, public_id=public_id)
        _same_row(orm, loaded)
        _same_row(orm.study, loaded.study)
        _same_row(orm.comparison, loaded.comparison)
        _same_row(orm.comparison.case, loaded.comparison.case)
        assert loaded.rater == physician
    _same_row(
        Study.objects.get(pk=built.study.pk),
        access.study_get_for_rater(user=physician, public_id=built.study.public_id),
    )


def test_the_written_reads_still_refuse_what_is_not_the_raters(
    coordinator: User, physician: User, other_physician: User
) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    seat = Assignment.objects.filter(rater=physician).first()
    with pytest.raises(Http404):
        access.assignment_get_for_rater(user=other_physician, public_id=seat.public_id)
    with pytest.raises(Http404):
        access.study_get_for_rater(user=other_physician, public_id=built.study.public_id)
    draft = open_study(
        coordinator=coordinator, raters=[physician], raters_per_item=1, open_it=False
    )
    with pytest.raises(Http404):
        access.study_get_for_rater(user=physician, public_id=draft.study.public_id)


def test_the_item_reports_its_place_and_progress_as_counted_by_the_orm(
    coordinator: User, physician: User
) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    take_and_rate(physician, built.study)
    take_and_rate(physician, built.study)
    seats = Assignment.objects.filter(rater=physician).order_by("queue_position")
    for index, seat in enumerate(seats, 1):
        item = selectors.rating_item(
            assignment=access.assignment_get_for_rater(user=physician, public_id=seat.public_id)
        )
        assert item.number == index
        assert (item.progress.done, item.progress.total) == (2, seats.count())
        texts = {r.pk: r.display_text for r in built.responses}
        assert [shown.text for shown in item.responses] == [texts[pk] for pk in seat.shown_order]
        assert item.fields == list(seat.comparison.case.fields.items())


def test_written_inserts_store_what_the_orm_stores(coordinator: User, physician: User) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    judgment = take_and_rate(physician, built.study).judgment
    stored = list(judgment.ratings.order_by("position").values())
    ResponseRating.objects.filter(judgment=judgment).delete()
    sql.insert(
        [ResponseRating(**{k: v for k, v in row.items() if k != "id"}) for row in reversed(stored)]
    )
    again = list(judgment.ratings.order_by("position").values())
    assert [{k: v for k, v in row.items() if k != "id"} for row in again] == [
        {k: v for k, v in row.items() if k != "id"} for row in stored
    ]
    sql.insert([])  # nothing to insert: no statement


def test_a_written_create_stores_what_the_orm_creates(coordinator: User, physician: User) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    judgment = take_and_rate(physician, built.study).judgment
    stored = Judgment.objects.filter(pk=judgment.pk).values().get()
    Judgment.objects.filter(pk=judgment.pk).delete()
    fields = {k: v for k, v in stored.items() if k not in ("id", "created_at", "updated_at")}
    again = sql.create(Judgment(**fields))
    assert again.pk is not None and not again._state.adding
    reloaded = Judgment.objects.filter(pk=again.pk).values().get()
    assert {k: reloaded[k] for k in fields} == fields
    assert reloaded["created_at"] is not None and reloaded["updated_at"] is not None
    # The one-judgment-per-seat constraint refuses a second, as it refuses the ORM's insert.
    with pytest.raises(IntegrityError), transaction.atomic():
        sql.create(Judgment(**fields))


def _items(coordinator: User, physician: User) -> list[dict[str, Any]]:
    """Item payloads of every kind: pairwise rated and not, best of three, rubric mode."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=physician).key}")
    pair = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    best = open_study(
        coordinator=coordinator,
        raters=[physician],
        raters_per_item=1,
        mode="best_of_n",
        title="Best of three",
    )
    rubric = open_rubric_study(coordinator=coordinator, raters=[physician])
    rated = take_and_rate(physician, pair.study)
    payloads = [api.get(f"/api/rate/items/{rated.public_id}/").json()]
    for study in (pair.study, best.study, rubric.study):
        payloads.append(api.post(f"/api/rate/studies/{study.public_id}/next/").json())
    return payloads


def test_a_shared_output_serializer_renders_what_a_fresh_one_does(
    coordinator: User, physician: User
) -> None:
    payloads = _items(coordinator, physician)
    assert payloads[0]["judgment"] is not None
    for payload in payloads:
        fresh = dict(rater_api.RateItemOutput(payload).data)
        assert rater_api.ITEM.render(payload) == fresh == payload
        # Anything not declared is dropped, as a fresh serializer drops it.
        leaked = {**payload, "arm": "SFT", "shown_order": [1, 2]}
        assert rater_api.ITEM.render(leaked) == fresh

    results: list[Any] = []

    def render_all() -> None:
        results.append([rater_api.ITEM.render(p) for p in payloads])

    threads = [threading.Thread(target=render_all) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [payloads] * 8


BAD_BODIES: list[Any] = [
    None,
    [],
    "A",
    {"revision": -1},
    {"ratings": "all"},
    {"ratings": [{"position": "Z", "scores": {"x": "high"}}]},
    {"grades": [{"position": "A", "criterion": 0, "met": "perhaps"}]},
    {"spans": [{"position": "A", "start": -1, "category": "x"}]},
    {"preference": ["A"], "reason": "x" * 3_000},
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_a_shared_input_serializer_refuses_what_a_fresh_one_refuses(body: Any) -> None:
    fresh = rater_api.RateJudgmentInput(data=body)
    assert not fresh.is_valid()
    with pytest.raises(exceptions.ValidationError) as refused:
        rater_api.JUDGMENT_IN.validated(body)
    assert refused.value.detail == fresh.errors


def test_a_shared_input_serializer_accepts_what_a_fresh_one_accepts() -> None:
    body = {
        "preference": "A",
        "ratings": [{"position": "A", "scores": {"reasoning_clarity": 4}}],
        "spans": [{"position": "B", "quote": "x", "category": "factual_error", "harm": "minor"}],
    }
    fresh = rater_api.RateJudgmentInput(data=body)
    assert fresh.is_valid()
    assert rater_api.JUDGMENT_IN.validated(body) == fresh.validated_data


def test_api_tokens_are_checked_as_drf_checks_them(coordinator: User, physician: User) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    url = f"/api/rate/studies/{built.study.public_id}/next/"
    token = Token.objects.create(user=physician)

    def call(header: str) -> Any:
        return APIClient().post(url, HTTP_AUTHORIZATION=header)

    assert call(f"Token {token.key}").status_code == 200
    # 403, not 401: DRF answers failed authentication with the first authentication class's
    # challenge, and session authentication (first) has none.
    unknown = call("Token " + "0" * 40)
    assert unknown.status_code == 403 and unknown.json()["detail"] == "Invalid token."
    assert call(f"Token {token.key} extra").status_code == 403
    # Deactivating an account deletes its tokens; an update that skips the signal leaves one.
    User.objects.filter(pk=physician.pk).update(is_active=False)
    inactive = call(f"Token {token.key}")
    assert inactive.status_code == 403
    assert inactive.json()["detail"] == "User inactive or deleted."
    coordinators = call(f"Token {Token.objects.create(user=coordinator).key}")
    assert coordinators.status_code == 403
