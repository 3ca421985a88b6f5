"""The physician rating page in headless Chromium: keyboard-only rating, resume, edit, no-JS."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from django.conf import settings
from django.db import connections
from playwright.sync_api import Page
from pytest_django.live_server_helper import LiveServer

from clinic_eval.models import Assignment, Case, Judgment, User
from tests.conftest import PASSWORD
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in
from tests.support.rating_study import ARM_LABELS, ORIGINAL_LABEL, OpenStudy, open_study, physicians

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")

# Keys pressed per item, in the page's question order: A's two scores and hallucination flag
# (plus severity when flagged), then B's, then the preference; and what the database must hold.
KEYBOARD_ITEMS: list[tuple[str, dict[int, tuple[dict[str, int], str, str]], str]] = [
    (
        "43n52na",
        {
            0: ({"reasoning_clarity": 4, "treatment_feasibility": 3}, "none", ""),
            1: ({"reasoning_clarity": 5, "treatment_feasibility": 2}, "none", ""),
        },
        "A",
    ),
    (
        "12n34nb",
        {
            0: ({"reasoning_clarity": 1, "treatment_feasibility": 2}, "none", ""),
            1: ({"reasoning_clarity": 3, "treatment_feasibility": 4}, "none", ""),
        },
        "B",
    ),
    (
        "22fm44nx",
        {
            0: ({"reasoning_clarity": 2, "treatment_feasibility": 2}, "factual", "minor"),
            1: ({"reasoning_clarity": 4, "treatment_feasibility": 4}, "none", ""),
        },
        "none",
    ),
]


# Markdown the page must render, and markup it must neither run nor load.
MARKDOWN = "**Plan**\n\n1. Laparoscopy\n2. IVF if tubes are blocked\n"
HOSTILE = (
    "Plan *B*. <script>window.__owned = 'script'</script>"
    '<img src="x" onerror="window.__owned = \'img\'">'
    "<a href=\"javascript:window.__owned = 'link'\">more</a>"
)


def _artifacts_dir() -> Path:
    default = Path(settings.BASE_DIR) / "var" / "test-artifacts"
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _db(query: Callable[..., T], *args: object) -> T:
    """Run a query in a thread of its own: Playwright's sync API keeps an event loop in the
    test's thread, where Django refuses the ORM (and would leave the connection open)."""

    def run() -> T:
        try:
            return query(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def _current_item(page: Page) -> str:
    return page.locator("#rating-item").get_attribute("data-item") or ""


def _assert_focus_on_first_unanswered(page: Page) -> None:
    focused = page.evaluate(
        """() => {
            const el = document.activeElement;
            const first = Array.from(document.querySelectorAll("fieldset[data-shortcuts]"))
                .find(f => !f.hidden && !f.querySelector("input[type=radio]:checked"));
            return {
                radio: el.matches("input[type=radio]"),
                inFirst: first !== undefined && first.contains(el),
                outline: getComputedStyle(el).outlineStyle,
            };
        }"""
    )
    assert focused["radio"] and focused["inFirst"], focused
    assert focused["outline"] != "none", "the focused radio shows a focus ring"


@dataclass(frozen=True)
class Stored:
    """What the database holds for one item, read outside the browser's thread."""

    preference: str
    ratings: dict[int, tuple[dict[str, int], str, str]]
    revision: int
    rationale: str
    edits: list[tuple[str, int, dict, dict]]
    rater_judgments: int


def _stored(public_id: str) -> Stored:
    judgment = Judgment.objects.get(assignment__public_id=public_id)
    return Stored(
        preference=judgment.preference,
        ratings={
            r.position: (r.scores, r.hallucination, r.severity) for r in judgment.ratings.all()
        },
        revision=judgment.revision,
        rationale=judgment.rationale,
        edits=[(e.reason, e.editor_id, e.before, e.after) for e in judgment.edits.all()],
        rater_judgments=Judgment.objects.filter(rater=judgment.rater).count(),
    )


def _judgments_of(rater: User) -> int:
    return Judgment.objects.filter(rater=rater).count()


def _assert_safe_and_blinded(page: Page, study: OpenStudy) -> None:
    text = page.locator("main").inner_text()
    for arm in study.arms:
        assert arm.label not in text, "the page names only Response A/B"
    found = page.evaluate(
        """() => ({
            owned: window.__owned,
            inlineScripts: document.querySelectorAll("script:not([src])").length,
            handlers: Array.from(document.querySelectorAll("*")).flatMap(
                el => el.getAttributeNames().filter(name => name.startsWith("on"))),
            images: document.querySelectorAll(".response-text img").length,
            allowEval: window.htmx.config.allowEval,
        })"""
    )
    assert found == {
        "owned": None,
        "inlineScripts": 0,
        "handlers": [],
        "images": 0,
        "allowEval": False,
    }


def _rate_with_keyboard(page: Page, keys: str) -> None:
    for key in keys:
        page.keyboard.press(key)
    page.keyboard.press("Enter")


def _check_layout(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}-1366x768-viewport.png"))
    page.screenshot(path=str(artifacts / f"{name}-1366x768-full.png"), full_page=True)
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 1366, f"the rating page scrolls sideways ({width}px)"
    a, b = (page.locator(".response-card").nth(i).bounding_box() for i in (0, 1))
    assert a is not None and b is not None
    assert abs(a["y"] - b["y"]) < 1 and b["x"] >= a["x"] + a["width"], "side by side at 1366"
    assert a["y"] < 768, "the responses start on the first screen"

    page.set_viewport_size({"width": 800, "height": 768})
    a, b = (page.locator(".response-card").nth(i).bounding_box() for i in (0, 1))
    assert a is not None and b is not None
    assert b["y"] >= a["y"] + a["height"] and abs(a["x"] - b["x"]) < 1, "stacked at 800"
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 800
    page.screenshot(path=str(artifacts / f"{name}-800x768-full.png"), full_page=True)
    page.set_viewport_size({"width": 1366, "height": 768})


@pytest.fixture
def rating(coordinator: User) -> OpenStudy:
    return open_study(
        coordinator=coordinator,
        raters=physicians(2),
        n_cases=4,
        raters_per_item=2,
        # Every arm pair shows the hostile markup and a Markdown list, whatever the queue order.
        texts={
            ARM_LABELS[0]: HOSTILE,
            ARM_LABELS[1]: f"{HOSTILE}\n\n{MARKDOWN}",
            ORIGINAL_LABEL: MARKDOWN,
        },
    )


def test_a_physician_rates_resumes_and_edits_with_the_keyboard(
    live_server: LiveServer, rating: OpenStudy
) -> None:
    rater = rating.raters[0]
    artifacts = _artifacts_dir()
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        page.set_default_timeout(5_000)
        sign_in(page, live_server.url, rater.username, PASSWORD)
        page.goto(f"{live_server.url}/rate/")
        assert page.evaluate("document.activeElement.textContent.trim()") == "Start rating"
        page.keyboard.press("Enter")
        page.wait_for_url("**/rate/items/*/")
        page.locator("form.rating-form").wait_for()
        total = _db(Assignment.objects.filter(rater=rater).count)
        assert total > len(KEYBOARD_ITEMS) + 1

        _check_layout(page, artifacts, "rating-page")
        keys_help = page.locator(".keys-help").inner_text()
        assert keys_help.startswith("Keys: 1–5 scores, N/F/R hallucination, A/B/T/X preference")
        assert page.get_by_role("heading", name="Response A").is_visible()
        assert page.get_by_role("heading", name="Response B").is_visible()

        rated: list[str] = []
        for number, (keys, ratings, preference) in enumerate(KEYBOARD_ITEMS, start=1):
            _assert_focus_on_first_unanswered(page)
            _assert_safe_and_blinded(page, rating)
            assert page.locator(".response-text ol li").count() > 0, "Markdown lists render"
            assert page.locator(".response-text", has_text="Plan B.").count() > 0, (
                "the hostile response is on the page (and, checked above, did nothing)"
            )
            item = _current_item(page)
            assert page.url.endswith(f"/rate/items/{item}/")
            page.evaluate("window.__marker = 1")
            _rate_with_keyboard(page, keys)
            page.wait_for_function(
                "item => document.querySelector('#rating-item')?.dataset.item !== item", arg=item
            )
            assert page.evaluate("window.__marker") == 1, "the next item came without a reload"
            following = _current_item(page)
            page.wait_for_url(f"**/rate/items/{following}/")
            rated.append(item)

            stored = _db(_stored, item)
            assert stored.rater_judgments == number
            assert (stored.preference, stored.ratings) == (preference, ratings)
            assert stored.revision == 1 and stored.rationale == "" and stored.edits == []
            assert page.locator("h1").inner_text().startswith(f"Item {number + 1} of {total}")

        # Back and Forward through the items htmx pushed give whole pages.
        current = _current_item(page)
        for step, expected in ((page.go_back, rated[-1]), (page.go_forward, current)):
            step()
            page.wait_for_function(
                """item => document.querySelector("#rating-item")?.dataset.item === item
                    && document.querySelector("header.site-header") !== null""",
                arg=expected,
            )
            page.locator("form.rating-form").wait_for()
            assert page.url.endswith(f"/rate/items/{expected}/")
        assert page.get_by_text("editing").count() == 0

        # A reload mid-queue resumes at the same item, with the right progress.
        response = page.reload()
        assert response is not None
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "script-src 'self' 'unsafe" not in policy
        page.locator("form.rating-form").wait_for()
        assert _current_item(page) == current and page.url.endswith(f"/rate/items/{current}/")
        assert page.locator(".rating-head progress").get_attribute("value") == "3"
        assert page.locator(".rating-head").get_by_text("3 rated").is_visible()
        _assert_focus_on_first_unanswered(page)

        # Edit the first rated item: a score and the preference by keyboard, then a reason.
        page.get_by_role("link", name="My rated items").click()
        page.wait_for_url("**/rated/")
        page.locator(f'a[href$="/rate/items/{rated[0]}/"]').click()
        page.wait_for_url(f"**/rate/items/{rated[0]}/")
        page.locator("form.rating-form").wait_for()
        assert page.get_by_text("editing").is_visible()
        page.screenshot(path=str(artifacts / "rating-page-edit-1366x768-viewport.png"))
        focused = page.evaluate("document.activeElement.name")
        assert focused == "A-reasoning_clarity", "an edit starts at the first question"
        page.evaluate("window.__marker = 2")
        page.keyboard.press("2")
        page.keyboard.press("b")
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.name") == "reason"
        page.keyboard.type("Misread the plan")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "item => document.querySelector('#rating-item')?.dataset.item !== item", arg=rated[0]
        )
        assert page.evaluate("window.__marker") == 2
        page.get_by_text("Your changes were saved.").wait_for()
        assert _current_item(page) == current, "after an edit the queue goes on where it was"

        stored = _db(_stored, rated[0])
        assert stored.revision == 2 and stored.preference == "B"
        assert stored.ratings[0][0] == {"reasoning_clarity": 2, "treatment_feasibility": 3}
        assert stored.ratings[1] == KEYBOARD_ITEMS[0][1][1], "Response B's rating is untouched"
        assert stored.rater_judgments == len(KEYBOARD_ITEMS)
        [(reason, editor_id, before, after)] = stored.edits
        assert reason == "Misread the plan" and editor_id == rater.pk
        assert (before["preference"], after["preference"]) == ("A", "B")
        clarity = [r["ratings"][0]["scores"]["reasoning_clarity"] for r in (before, after)]
        assert clarity == [4, 2]
    assert console.problems == []


def test_the_rating_page_works_without_javascript(
    live_server: LiveServer, rating: OpenStudy
) -> None:
    rater = rating.raters[1]
    console = ConsoleLog()
    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": 1366, "height": 768}, java_script_enabled=False
        )
        page = context.new_page()
        page.set_default_timeout(5_000)
        page.on("console", console.record)
        sign_in(page, live_server.url, rater.username, PASSWORD)
        page.goto(f"{live_server.url}/rate/")
        page.get_by_role("button", name="Start rating").click()
        page.wait_for_url("**/rate/items/*/")
        first = _current_item(page)
        for letter, scores in (("A", ("5", "4")), ("B", ("2", "1"))):
            page.check(f'input[name="{letter}-reasoning_clarity"][value="{scores[0]}"]')
            page.check(f'input[name="{letter}-treatment_feasibility"][value="{scores[1]}"]')
            page.check(f'input[name="{letter}-hallucination"][value="none"]')
        page.check('input[name="preference"][value="A"]')
        page.get_by_role("button", name="Submit and next").click()
        page.wait_for_url(lambda url: first not in url and "/rate/items/" in url)
        assert _current_item(page) not in ("", first)
        assert page.locator(".rating-head progress").get_attribute("value") == "1"

        assert _db(_judgments_of, rater) == 1
        stored = _db(_stored, first)
        assert stored.preference == "A" and stored.ratings == {
            0: ({"reasoning_clarity": 5, "treatment_feasibility": 4}, "none", ""),
            1: ({"reasoning_clarity": 2, "treatment_feasibility": 1}, "none", ""),
        }
        context.close()
    assert console.problems == []


# Issue 16: long values ran over the next field of the case grid.
LONG_FIELDS = {
    "male_carrier_status": "male Robertsonian translocation rob(13;14)",
    "male_karyotype": "46,XY,der(13;14)(q10;q10)",
}


def _lengthen_case_fields(study_pk: int) -> None:
    for case in Case.objects.filter(study_id=study_pk):
        case.fields = {**LONG_FIELDS, **case.fields}
        case.save(update_fields=["fields"])


def test_long_case_values_wrap_inside_their_own_field_at_1366_by_768(
    live_server: LiveServer, rating: OpenStudy
) -> None:
    _db(_lengthen_case_fields, rating.study.pk)
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, live_server.url, rating.raters[0].username, PASSWORD)
        page.goto(f"{live_server.url}/rate/")
        page.get_by_role("button", name="Start rating").click()
        page.wait_for_url("**/rate/items/*/")
        grid = page.locator(".case-summary .fields")
        for value in LONG_FIELDS.values():
            assert value in grid.inner_text()
        problems = page.evaluate(
            """() => {
                const rows = [...document.querySelectorAll(".case-summary .fields tr")];
                const boxes = rows.map(row => row.getBoundingClientRect());
                const problems = [];
                rows.forEach((row, i) => {
                    for (const cell of row.querySelectorAll("th, td")) {
                        const c = cell.getBoundingClientRect();
                        if (c.left < boxes[i].left - 0.5 || c.right > boxes[i].right + 0.5) {
                            problems.push(`${row.textContent.trim()} leaves its field`);
                        }
                    }
                    boxes.forEach((other, j) => {
                        const apart = other.right <= boxes[i].left + 0.5
                            || other.left >= boxes[i].right - 0.5
                            || other.bottom <= boxes[i].top + 0.5
                            || other.top >= boxes[i].bottom - 0.5;
                        if (j > i && !apart) problems.push(`${i} overlaps ${j}`);
                    });
                });
                return problems;
            }"""
        )
        assert problems == []
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1366, f"the rating page scrolls sideways ({width}px)"
    assert console.problems == []
