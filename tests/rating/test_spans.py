"""Span annotation on the rating page (the no-JavaScript path) and through the rater API:
ranges stored exactly, bad spans refused beside their row with nothing stored, edits audited,
the derived hallucination flag, rubric mode, and the cost of a spans-enabled page."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clinic_eval.config import default_rubric
from clinic_eval.models import (
    Assignment,
    Judgment,
    JudgmentEdit,
    Response,
    ResponseRating,
    ResponseSpan,
    Study,
    User,
)
from tests.conftest import logged_in
from tests.rating.test_rating_concurrency import at_once
from tests.support import rating_study
from tests.support.factories import UserFactory
from tests.support.rating_study import (
    ARM_LABELS,
    OpenStudy,
    full_answer,
    full_grades,
    open_rubric_study,
    open_study,
)

pytestmark = pytest.mark.django_db

# Two responses a rater sees side by side, with a passage that occurs twice ("IVF"), Markdown
# markers and characters HTML escapes, so offsets and the shown text can be checked exactly.
TEXTS = {
    ARM_LABELS[0]: (
        "**Plan**: start IVF with an antagonist protocol. Check AMH before IVF.\n"
        "Repeat the semen analysis in 3 months. Avoid IUI: the tubes are blocked."
    ),
    ARM_LABELS[1]: (
        "Offer IUI & clomiphene for 3 cycles. Tubal flushing is not needed.\n\n"
        '"Expectant management" for <6 months> is an option.'
    ),
}


@pytest.fixture
def spans_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Studies built in this test get a rubric with spans enabled (set before they open)."""
    rubric = default_rubric()
    rubric["spans"] = {**rubric["spans"], "enabled": True}
    monkeypatch.setattr(rating_study, "default_rubric", lambda: copy.deepcopy(rubric))
    yield rubric


def spans_study(coordinator: User, rater: User, **design: Any) -> OpenStudy:
    """One case, two arms: a single pairwise item for ``rater``."""
    return open_study(
        coordinator=coordinator,
        raters=[rater],
        n_cases=1,
        labels=ARM_LABELS[:2],
        raters_per_item=1,
        texts=TEXTS,
        **design,
    )


def take_item(client: Client, study: Study) -> tuple[str, list[str]]:
    """The item's page address and its responses' display texts in on-screen order."""
    url = client.post(reverse("rater:next", args=[study.public_id]))["Location"]
    seat = Assignment.objects.get(public_id=url.rstrip("/").rsplit("/", 1)[1])
    texts = {r.pk: r.display_text for r in Response.objects.filter(pk__in=seat.shown_order)}
    return url, [texts[pk] for pk in seat.shown_order]


def spans_of(url: str) -> list[tuple[int, int | None, int | None, str, str, str, str, str]]:
    seat = Assignment.objects.get(public_id=url.rstrip("/").rsplit("/", 1)[1])
    return [
        (s.position, s.start, s.end, s.quote, s.category, s.harm, s.case_field, s.note)
        for s in ResponseSpan.objects.filter(judgment__assignment=seat).order_by(
            "position", "start", "id"
        )
    ]


def span_fields(letter: str, number: int, **parts: object) -> dict[str, str]:
    return {f"{letter}-span{number}-{part}": str(value) for part, value in parts.items()}


class TextOf(HTMLParser):
    """The text content of every element with ``data-span-text``, as a browser would read it,
    and the classes of the marks inside it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.marks: list[list[str]] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if self._depth:
            self._depth += tag not in ("br", "input")
            if tag == "mark":
                self.marks.append((names.get("class") or "").split())
        elif "data-span-text" in names:
            self._depth = 1
            self.texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.texts[-1] += data


def shown(html: str) -> TextOf:
    parser = TextOf()
    parser.feed(html)
    return parser


def row_html(html: str, letter: str, number: int) -> str:
    """The markup of one span row, found by its fields' names."""
    for row in re.findall(r"<li class=\"span-row.*?</li>", html, re.DOTALL):
        if f'name="{letter}-span{number}-category"' in row:
            return row
    raise AssertionError(f"no row {letter}-span{number}")


# --- The page ---------------------------------------------------------------------------------


def test_the_page_shows_each_response_character_for_character_with_rows_to_quote(
    spans_on: dict, coordinator: User, physician: User
) -> None:
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    html = client.get(url).content.decode()
    assert shown(html).texts == texts, "textContent is the display text, Markdown as typed"
    assert "<strong>" not in html.split('class="case-summary"', 1)[1].split("</form>")[0]
    for letter in "AB":
        for number in (1, 2, 3):  # the blank rows for quoting without JavaScript
            row = row_html(html, letter, number)
            for part in ("quote", "occurrence", "category", "harm", "case_field", "note"):
                assert f'name="{letter}-span{number}-{part}"' in row
        assert f'name="{letter}-span4-quote"' not in html
    assert "Harm scale" in html and "AHRQ Common Formats Harm Scale v1.2" in html
    assert "Lasting harm or a life-threatening risk." in html
    assert 'src="/static/js/spans.js"' in html
    # The hallucination flag is asked as before (the rubric keeps it "asked").
    assert 'name="A-hallucination"' in html


def test_without_spans_the_page_renders_markdown_as_before(
    coordinator: User, physician: User
) -> None:
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, _ = take_item(client, built.study)
    html = client.get(url).content.decode()
    assert "<strong>Plan</strong>" in html
    assert "data-span-text" not in html and "-span1-" not in html


def test_a_quoted_passage_is_stored_with_its_exact_range(
    spans_on: dict, coordinator: User, physician: User
) -> None:
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    quote_a = "Repeat the semen analysis in 3 months." if "semen" in texts[0] else "Offer IUI"
    start_a = texts[0].index(quote_a)
    answer = full_answer(
        **span_fields("A", 1, quote=quote_a, category="factual_error", harm="moderate"),
        **span_fields("B", 2, category="omission", harm="minor", case_field="tubal_findings"),
        **span_fields("B", 1, quote="", category="", harm="", note=""),  # left blank: skipped
    )
    response = client.post(url, answer)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert spans_of(url) == [
        (0, start_a, start_a + len(quote_a), quote_a, "factual_error", "moderate", "", ""),
        (1, None, None, "", "omission", "minor", "tubal_findings", ""),
    ]

    # The edit form shows them again: the range as a marked row, the omission with its field.
    html = client.get(url).content.decode()
    assert shown(html).marks == [["span-mark", "span-cat-factual_error"]]
    assert shown(html).texts == texts
    marked = row_html(html, "A", 1)
    assert f'name="A-span1-start" value="{start_a}"' in marked
    assert f'name="A-span1-end" value="{start_a + len(quote_a)}"' in marked
    assert '<option value="moderate" title="' in marked and "selected>Moderate" in marked
    omission = row_html(html, "B", 1)
    assert '<option value="tubal_findings" selected>' in omission
    assert 'name="A-span2-quote"' in html, "a blank row follows the stored ones"

    # Ticking Remove on the omission deletes it (an audited edit).
    edit = full_answer(revision=1)
    for letter, number, part, value in re.findall(
        r'name="([AB])-span(\d)-(start|end|quote|category|harm|case_field|note)" value="([^"]*)"',
        html,
    ):
        edit[f"{letter}-span{number}-{part}"] = value
    edit |= {
        "A-span1-category": "factual_error",
        "A-span1-harm": "moderate",
        "B-span1-category": "omission",
        "B-span1-harm": "minor",
        "B-span1-case_field": "tubal_findings",
        "B-span1-remove": "1",
    }
    assert client.post(url, edit).status_code == 302
    assert [s[4] for s in spans_of(url)] == ["factual_error"]
    [audit] = JudgmentEdit.objects.filter(judgment__assignment__public_id=url.split("/")[-2])
    assert [s["category"] for s in audit.before["spans"]] == ["factual_error", "omission"]
    assert [s["category"] for s in audit.after["spans"]] == ["factual_error"]


def test_a_quote_found_twice_needs_its_occurrence(
    spans_on: dict, coordinator: User, physician: User
) -> None:
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    letter, quote = ("A", "IVF") if "IVF" in texts[0] else ("B", "IVF")
    text = texts["AB".index(letter)]
    assert text.count(quote) == 2
    span = span_fields(letter, 1, quote=quote, category="factual_error", harm="minor", note="x")

    refused = client.post(url, full_answer(**span))
    assert refused.status_code == 422
    row = row_html(refused.content.decode(), letter, 1)
    assert "This text appears 2 times in the response" in row and "(1 to 2)" in row
    assert f'value="{quote}"' in row and 'value="x"' in row, "the rater's values are kept"
    assert not Judgment.objects.exists() and not ResponseSpan.objects.exists()

    second = text.index(quote, text.index(quote) + 1)
    assert client.post(url, full_answer(**span, **{f"{letter}-span1-occurrence": "2"})).status_code
    assert spans_of(url) == [
        ("AB".index(letter), second, second + 3, "IVF", "factual_error", "minor", "", "x")
    ]


BAD_SPANS = {
    "range outside the text": (
        dict(start=5, end=100_000, category="factual_error", harm="minor"),
        "quote",
        "lies outside the response",
    ),
    "unknown category": (
        dict(start=0, end=4, category="made_up", harm="minor"),
        "category",
        "Choose a category from the list.",
    ),
    "unknown harm": (
        dict(start=0, end=4, category="factual_error", harm="catastrophic"),
        "harm",
        "Choose a harm level",
    ),
    "quote not found": (
        dict(quote="Start ICSI at once", category="factual_error", harm="minor"),
        "quote",
        "This text is not in the response",
    ),
    "omission with a quote": (
        dict(quote="IUI", category="omission", harm="minor"),
        "quote",
        "An omission marks what is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPANS))
def test_a_bad_span_gets_an_error_beside_its_row_and_nothing_is_stored(
    case: str, spans_on: dict, coordinator: User, physician: User
) -> None:
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    parts, field, message = BAD_SPANS[case]
    good = {"start": 0, "end": 4, "category": "reasoning_error", "harm": "none"}
    answer = full_answer(**span_fields("B", 1, **good), **span_fields("B", 2, **parts))
    response = client.post(url, answer)
    assert response.status_code == 422
    html = response.content.decode()
    row = row_html(html, "B", 2)
    assert message in row and 'class="span-row' in row and " invalid" in row
    error_at = row.index(message)
    assert row.rindex(f'name="B-span2-{field}"') < error_at, "the error follows its field"
    assert message not in row_html(html, "B", 1)
    assert not Judgment.objects.exists() and not ResponseSpan.objects.exists()


def test_an_overlapping_duplicate_is_refused(
    spans_on: dict, coordinator: User, physician: User
) -> None:
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    first = texts[0].split(".")[0]
    twice = {
        **span_fields("A", 1, start=0, end=len(first), category="factual_error", harm="minor"),
        # The same passage again, this time by quoting it: the same span.
        **span_fields("A", 2, quote=first, category="factual_error", harm="severe"),
    }
    response = client.post(url, full_answer(**twice))
    assert response.status_code == 422
    assert "This span is marked twice." in row_html(response.content.decode(), "A", 2)
    assert not ResponseSpan.objects.exists()


def test_a_double_submit_stores_one_set_of_spans(
    spans_on: dict, coordinator: User, physician: User
) -> None:
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    answer = full_answer(
        **span_fields("A", 1, start=0, end=8, category="unsafe", harm="severe", note="n"),
        **span_fields("B", 1, start=0, end=9, category="guideline_deviation", harm="minor"),
    )
    assert client.post(url, answer).status_code == 302
    again = client.post(url, answer)  # a double click or a retried POST: nothing changes
    assert again.status_code == 302
    assert Judgment.objects.count() == 1 and ResponseSpan.objects.count() == 2
    assert [(s[1], s[2], s[3]) for s in spans_of(url)] == [
        (0, 8, texts[0][:8]),
        (0, 9, texts[1][:9]),
    ]
    assert not JudgmentEdit.objects.exists()


def test_the_derived_flag_is_not_asked_and_comes_from_the_spans(
    spans_on: dict, coordinator: User, physician: User
) -> None:
    spans_on["spans"]["hallucination_flag"] = "derived"
    built = spans_study(coordinator, physician)
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    html = client.get(url).content.decode()
    assert 'name="A-hallucination"' not in html and 'name="A-severity"' not in html
    assert "not asked; it is derived from your spans" in html
    answer = full_answer(
        **span_fields("A", 1, start=0, end=6, category="reasoning_error", harm="minor"),
        **span_fields("A", 2, start=7, end=12, category="factual_error", harm="moderate"),
        **span_fields("B", 1, start=0, end=5, category="guideline_deviation", harm="severe"),
    )
    del answer["A-hallucination"], answer["B-hallucination"]
    assert client.post(url, answer).status_code == 302
    flags = {
        r.position: (r.hallucination, r.severity)
        for r in ResponseRating.objects.filter(judgment__assignment__public_id=url.split("/")[-2])
    }
    # A: the moderate factual error outweighs the minor reasoning error; B: guideline
    # deviations imply no hallucination.
    assert flags == {0: ("factual", "major"), 1: ("none", "")}


def test_spans_on_a_rubric_mode_item(spans_on: dict, coordinator: User, physician: User) -> None:
    built = open_rubric_study(coordinator=coordinator, raters=[physician], n_cases=1)
    client = logged_in(physician)
    url = client.post(reverse("rater:next", args=[built.study.public_id]))["Location"]
    html = client.get(url).content.decode()
    text = built.responses[0].display_text
    assert len(shown(html).texts) == 1 and shown(html).texts[0] in {
        r.display_text for r in built.responses
    }
    text = shown(html).texts[0]
    refused = client.post(url, full_grades(**span_fields("A", 1, quote="ICSI", harm="minor")))
    assert refused.status_code == 422
    assert "Choose a category from the list." in row_html(refused.content.decode(), "A", 1)
    answer = full_grades(
        **span_fields("A", 1, quote="IVF, then review", category="reasoning_error", harm="none")
    )
    assert client.post(url, answer).status_code == 302
    start = text.index("IVF, then review")
    assert spans_of(url) == [
        (0, start, start + 16, "IVF, then review", "reasoning_error", "none", "", "")
    ]


@pytest.mark.django_db(transaction=True)
def test_ten_identical_posts_with_spans_store_one_set(spans_on: dict, coordinator: User) -> None:
    rater = UserFactory(username="dr-twice", role=User.Role.PHYSICIAN)
    built = spans_study(coordinator, rater)
    url, texts = take_item(logged_in(rater), built.study)
    answer = full_answer(**span_fields("A", 1, start=0, end=8, category="unsafe", harm="severe"))
    statuses = at_once(10, lambda _: logged_in(rater).post(url, answer).status_code)
    assert set(statuses) == {302}
    assert spans_of(url) == [(0, 0, 8, texts[0][:8], "unsafe", "severe", "", "")]
    assert Judgment.objects.count() == 1 and not JudgmentEdit.objects.exists()


def test_spans_on_a_best_of_n_item(spans_on: dict, coordinator: User, physician: User) -> None:
    labels = (*ARM_LABELS, rating_study.ORIGINAL_LABEL)
    built = open_study(
        coordinator=coordinator,
        raters=[physician],
        n_cases=1,
        labels=labels,
        raters_per_item=1,
        mode="best_of_n",
    )
    client = logged_in(physician)
    url, texts = take_item(client, built.study)
    assert shown(client.get(url).content.decode()).texts == texts and len(texts) == 4
    span = span_fields("D", 1, start=0, end=3, category="unsafe", harm="moderate")
    answer = full_answer(positions=4, **span)
    assert client.post(url, answer).status_code == 302
    assert spans_of(url) == [(3, 0, 3, texts[3][:3], "unsafe", "moderate", "", "")]


# --- The API ----------------------------------------------------------------------------------


def api_answer(**extra: Any) -> dict[str, Any]:
    return {
        "preference": "A",
        "rationale": "",
        "revision": 0,
        "ratings": [
            {
                "position": letter,
                "scores": {"reasoning_clarity": 4, "treatment_feasibility": 3},
                "hallucination": "none",
            }
            for letter in "AB"
        ],
        **extra,
    }


UNSAFE = "Unsafe or contraindicated recommendation"


def test_spans_through_the_api(spans_on: dict, coordinator: User, physician: User) -> None:
    built = spans_study(coordinator, physician)
    api = APIClient()
    api.force_login(physician)
    item = api.post(f"/api/rate/studies/{built.study.public_id}/next/").json()
    assert item["rubric"]["spans"] == {
        "enabled": True,
        "categories": [
            {"key": "factual_error", "title": "Factual error", "omission": False},
            {"key": "reasoning_error", "title": "Reasoning error", "omission": False},
            {"key": "unsupported_claim", "title": "Unsupported claim", "omission": False},
            {"key": "unsafe", "title": UNSAFE, "omission": False},
            {"key": "guideline_deviation", "title": "Deviation from guideline", "omission": False},
            {"key": "omission", "title": "Omission", "omission": True},
        ],
        "harm_levels": ["none", "minor", "moderate", "severe"],
        "hallucination_flag": "asked",
        "max_spans_per_response": 40,
    }
    texts = [r["text"] for r in item["responses"]]
    for response in item["responses"]:
        text = response["text"]
        assert [text[s:e] for s, e in response["sentences"]][:2] == [
            piece.strip() + "." for piece in re.split(r"\.\s", text)[:2]
        ]
    url = f"/api/rate/items/{item['public_id']}/judgment/"
    first_a = texts[0].split(".")[0]
    spans = [
        {"position": "A", "start": 0, "end": len(first_a), "category": "unsafe", "harm": "severe"},
        {"position": "B", "quote": "3", "category": "factual_error", "harm": "minor", "note": "!"},
        {"position": "B", "category": "omission", "harm": "moderate", "note": "No AMH."},
    ]
    refused = api.put(
        url, api_answer(spans=[*spans, {**spans[1], "quote": "never said"}]), format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"B.span3.quote": refused.json()["errors"]["B.span3.quote"]}
    assert not ResponseSpan.objects.exists()

    created = api.put(url, api_answer(spans=spans), format="json")
    assert created.status_code == 201, created.json()
    three = texts[1].index("3")
    stored = api.get(f"/api/rate/items/{item['public_id']}/").json()["judgment"]["spans"]
    keys = ("position", "start", "end", "quote", "category", "harm", "case_field", "note")
    assert stored == [
        dict(zip(keys, values, strict=True))
        for values in (
            ("A", 0, len(first_a), first_a, "unsafe", "severe", "", ""),
            ("B", three, three + 1, "3", "factual_error", "minor", "", "!"),
            ("B", None, None, "", "omission", "moderate", "", "No AMH."),
        )
    ]

    # An edit: the omission goes, a reasoning error on A comes.
    edited = [
        *stored[:2],
        {"position": "A", "start": 1, "end": 4, "category": "reasoning_error", "harm": "none"},
    ]
    response = api.put(
        url, api_answer(spans=edited, revision=1, reason="Missed one."), format="json"
    )
    assert response.status_code == 200 and response.json()["outcome"] == "updated"
    assert response.json()["revision"] == 2
    edit = JudgmentEdit.objects.get(judgment__assignment__public_id=item["public_id"])
    assert [s["category"] for s in edit.before["spans"]] == ["unsafe", "factual_error", "omission"]
    assert [s["category"] for s in edit.after["spans"]] == [
        "unsafe",
        "reasoning_error",
        "factual_error",
    ]
    assert edit.after["spans"][1]["quote"] == texts[0][1:4] and edit.reason == "Missed one."
    assert ResponseSpan.objects.count() == 3

    again = api.put(url, api_answer(spans=edited, revision=2), format="json")
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    assert JudgmentEdit.objects.count() == 1 and Judgment.objects.get().revision == 2


def test_without_spans_the_api_says_so_and_refuses_them(coordinator: User, physician: User) -> None:
    built = spans_study(coordinator, physician)
    api = APIClient()
    api.force_login(physician)
    item = api.post(f"/api/rate/studies/{built.study.public_id}/next/").json()
    assert item["rubric"]["spans"]["enabled"] is False
    assert all("sentences" not in r for r in item["responses"])
    span = {"position": "A", "start": 0, "end": 3, "category": "unsafe", "harm": "minor"}
    url = f"/api/rate/items/{item['public_id']}/judgment/"
    refused = api.put(url, api_answer(spans=[span]), format="json")
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"A.span1": "This study does not mark spans."}
    assert not Judgment.objects.exists()


# --- Cost -------------------------------------------------------------------------------------

# With spans on, an item costs what it costs without them (tests/web/test_query_counts.py pins
# those); a submission that carries spans reads the shown texts once and writes the spans in
# one insert, and an edit form loads its spans with its ratings.
SPANS_BOUNDS = {
    "page: item": 4,
    "page: submit with spans": 11,
    "page: edit form": 7,
    "api: item": 3,
    "api: submit with spans": 10,
}


def _count(call: Any, status: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = call()
    assert response.status_code == status, response.content[:2000]
    return len(queries)


def test_the_queries_of_a_spans_enabled_item_are_pinned(
    spans_on: dict, coordinator: User, physician: User
) -> None:
    study = open_study(
        coordinator=coordinator,
        raters=[physician],
        n_cases=3,
        labels=ARM_LABELS[:2],
        raters_per_item=1,
        texts=TEXTS,
    ).study
    page = logged_in(physician)
    next_url = reverse("rater:next", args=[study.public_id])
    page.get(reverse("rater:home"))
    url = page.post(next_url)["Location"]
    span = span_fields("A", 1, start=0, end=4, category="unsafe", harm="minor")
    counts = {
        "page: item": _count(lambda: page.get(url), 200),
        "page: submit with spans": _count(lambda: page.post(url, full_answer(**span)), 302),
        "page: edit form": _count(lambda: page.get(url), 200),
    }
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=physician).key}")
    item_id = api.post(f"/api/rate/studies/{study.public_id}/next/").json()["public_id"]
    body = api_answer(
        spans=[{"position": "B", "start": 0, "end": 4, "category": "unsafe", "harm": "minor"}]
    )
    counts["api: item"] = _count(lambda: api.get(f"/api/rate/items/{item_id}/"), 200)
    counts["api: submit with spans"] = _count(
        lambda: api.put(f"/api/rate/items/{item_id}/judgment/", body, format="json"), 201
    )
    assert counts == SPANS_BOUNDS
