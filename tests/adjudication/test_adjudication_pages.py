"""The adjudicator's pages: who may open them, what they show (the raters anonymous, on the
adjudicator's letters, spans overlaid), and every byte scanned for anything that unblinds."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from clinic_eval.models import Adjudication, Assignment, User
from tests.adjudication.world import (
    ERROR,
    adjudicated_study,
    adjudication_of,
    comparisons,
    final_post,
    pair,
    rate,
    seats,
)
from tests.conftest import logged_in
from tests.rating.test_blinding import Transcript, forbidden, high_ids, model_arm_with_secrets
from tests.support.rating_study import OpenStudy, physicians

pytestmark = pytest.mark.django_db

__all__ = ["high_ids"]  # the fixture, used by name


@dataclass
class World:
    built: OpenStudy
    adjudication: Adjudication
    raters: tuple[Assignment, Assignment]  # the item's two seats: Rater 1 submitted first
    others: list[Adjudication]  # the study's other adjudications


@pytest.fixture
def world(high_ids: None, coordinator: User) -> World:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
            [Adjudication._meta.db_table, 8_610_000],
        )
    trio = physicians(3, prefix="trio")
    built = adjudicated_study(coordinator=coordinator, raters=trio, n_cases=4, spans=True)
    model_arm_with_secrets(built)
    opened = []
    for index, comparison in enumerate(comparisons(built.study)):
        first, second = pair(comparison)
        one, two = seats(comparison)
        rate(
            one,
            prefer=first,
            spans=[(second, ERROR, "factual_error", "severe", f"R1-span-note-{index}")],
            rationale=f"R1-rationale-{index}",
        )
        rate(
            two,
            prefer=second,
            flags={first: ("reasoning", "minor")},
            spans=[(first, "antagonist protocol", "reasoning_error", "minor", "R2-span-note")],
            rationale=f"R2-rationale-{index}",
        )
        adjudication = adjudication_of(comparison)
        assert adjudication is not None and adjudication.adjudicator is not None
        opened.append((adjudication, (one, two)))
    (adjudication, raters), *rest = opened
    return World(built, adjudication, raters, [a for a, _ in rest])


def item_url(adjudication: Adjudication) -> str:
    return reverse("rater:adjudication_item", args=[adjudication.public_id])


def test_an_adjudicator_opens_only_their_own_items(world: World, coordinator: User) -> None:
    mine = world.adjudication
    me = mine.adjudicator
    client = logged_in(me)
    assert client.get(item_url(mine)).status_code == 200
    foreign = [a for a in world.others if a.adjudicator != me]
    assert foreign, "the trio share the adjudications"
    for other in foreign:
        assert client.get(item_url(other)).status_code == 404
        assert client.post(item_url(other), final_post()).status_code == 404
    assert client.get(reverse("rater:adjudication_item", args=["no-such-item"])).status_code == 404

    # The item's raters, and a physician on no study, get nothing; coordinators never adjudicate.
    for seat in world.raters:
        assert logged_in(seat.rater).get(item_url(mine)).status_code == 404
    outsider = physicians(1, prefix="outside")[0]
    assert logged_in(outsider).get(item_url(mine)).status_code == 404
    assert logged_in(coordinator).get(item_url(mine)).status_code == 403
    assert Client().get(item_url(mine)).status_code == 302
    assert Adjudication.objects.filter(status=Adjudication.Status.DONE).count() == 0

    queue = client.get(reverse("rater:adjudication_queue")).content.decode()
    assert mine.public_id in queue
    assert not any(other.public_id in queue for other in foreign)


def test_the_item_shows_each_rater_anonymously_on_the_adjudicators_letters(world: World) -> None:
    adjudication = world.adjudication
    order = list(adjudication.shown_order)
    comparison = adjudication.comparison
    first, second = pair(comparison)
    letter = {pk: "AB"[order.index(pk)] for pk in order}
    html = logged_in(adjudication.adjudicator).get(item_url(adjudication)).content.decode()

    raters = html.split('class="card rater-answers"', 1)[1].split("</section>", 1)[0]
    one, two = raters.split('<article class="rater-answer"')[1:]
    assert "Rater 1" in one and f"Preferred: <strong>Response {letter[first]}</strong>" in one
    assert "R1-rationale-0" in one and "R2-rationale-0" not in one
    marked = f"Response {letter[second]}: Factual error, severe harm: “{ERROR}” (R1-span-note-0)"
    assert marked in one
    assert "Rater 2" in two and f"Preferred: <strong>Response {letter[second]}</strong>" in two
    assert f"Response {letter[first]}: Reasoning error, minor harm" in two

    # Every rater's spans are marked on the response text, by category and rater.
    card = html.split(f'id="title-{letter[second]}"', 1)[1].split("</article>", 1)[0]
    assert 'class="span-mark span-cat-factual_error span-harm-severe rater-1"' in card
    assert 'title="Rater 1: Factual error, severe harm"' in card
    assert re.search(r"<mark [^>]*>Give 900 IU of FSH daily from day one\.</mark>", card)
    card = html.split(f'id="title-{letter[first]}"', 1)[1].split("</article>", 1)[0]
    assert 'title="Rater 2: Reasoning error, minor harm"' in card
    assert "Reasoning error, minor</td>" in card, "Rater 2's flag on this response"

    # Why it is here, in words.
    assert "Decisive preferences disagree" in html


def test_a_rater_never_sees_another_raters_answers(world: World) -> None:
    one, two = world.raters
    for seat, own, other in ((one, "R1", "R2"), (two, "R2", "R1")):
        client = logged_in(seat.rater)
        page = client.get(reverse("rater:item", args=[seat.public_id])).content.decode()
        api = APIClient()
        api.force_authenticate(seat.rater)
        payload = api.get(reverse("api:rate_item", args=[seat.public_id])).content.decode()
        for text in (page, payload):
            assert f"{own}-rationale-0" in text
            assert f"{other}-rationale" not in text and f"{other}-span-note" not in text
            assert "Rater 1" not in text and "Rater 2" not in text


def test_the_home_page_loads_the_queue_panel(world: World) -> None:
    me = world.adjudication.adjudicator
    home = logged_in(me).get(reverse("rater:home")).content.decode()
    queue_url = reverse("rater:adjudication_queue")
    assert f'hx-get="{queue_url}" hx-trigger="load"' in home
    assert f'<a href="{queue_url}">' in home, "the link works without JavaScript"

    panel = logged_in(me).get(queue_url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in panel and "Adjudicate the next item" in panel
    waiting = Adjudication.objects.filter(adjudicator=me).count()
    assert f"<strong>{waiting}</strong> waiting" in panel

    nobody = physicians(1, prefix="idle")[0]
    empty = logged_in(nobody).get(queue_url, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="adjudication-queue"' in empty and "hidden" in empty


def test_no_adjudicator_page_reveals_an_arm_an_id_or_a_rater(world: World) -> None:
    adjudication = world.adjudication
    me = adjudication.adjudicator
    client = logged_in(me)
    url = item_url(adjudication)
    transcript = Transcript()
    transcript.add("home", client.get(reverse("rater:home")))
    transcript.add("queue", client.get(reverse("rater:adjudication_queue")))
    transcript.add(
        "queue panel", client.get(reverse("rater:adjudication_queue"), HTTP_HX_REQUEST="true")
    )
    transcript.add("item", client.get(url))
    transcript.add("item htmx", client.get(url, HTTP_HX_REQUEST="true"))
    transcript.add("invalid", client.post(url, final_post(reason="")))
    transcript.add("invalid htmx", client.post(url, final_post(reason=""), HTTP_HX_REQUEST="true"))
    transcript.add("recorded", client.post(url, final_post(), HTTP_HX_REQUEST="true"))
    transcript.add("again", client.post(url, final_post(), follow=True))
    transcript.add("refused", client.post(url, final_post(preference="B")))
    transcript.add("done", client.get(url))
    transcript.add("queue after", client.get(reverse("rater:adjudication_queue")))
    assert all("Rater 1" in text for what, text in transcript.pages if what.startswith("item"))

    patterns = forbidden(world.built)
    adjudication_pks = Adjudication.objects.values_list("pk", flat=True)
    patterns += [
        (f"adjudication pk {pk}", re.compile(rf"(?<![\w-]){pk}(?![\w-])"))
        for pk in adjudication_pks
    ]
    raters = {s.rater.username for c in comparisons(world.built.study) for s in seats(c)}
    raters.discard(me.username)  # the adjudicator's own name is in the page header
    patterns += [(f"rater {name}", re.compile(re.escape(name))) for name in sorted(raters)]
    leaks = [
        (what, label)
        for label, pattern in patterns
        for what, text in transcript.pages
        if pattern.search(text)
    ]
    assert leaks == []
