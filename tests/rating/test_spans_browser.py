"""Span marking in headless Chromium: by mouse and by keyboard, an edit and a removal, then the
exact ranges in the database, computed here from the display text."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Page
from pytest_django.live_server_helper import LiveServer

from clinic_eval.models import Assignment, Response, ResponseSpan, User
from clinic_eval.spans.text import sentences
from tests.conftest import PASSWORD
from tests.rating.test_rating_browser import _artifacts_dir, _db
from tests.rating.test_spans import spans_on, spans_study  # noqa: F401 - the fixture
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _shown_texts(public_id: str) -> list[str]:
    seat = Assignment.objects.get(public_id=public_id)
    texts = {r.pk: r.display_text for r in Response.objects.filter(pk__in=seat.shown_order)}
    return [texts[pk] for pk in seat.shown_order]


def _stored_spans(public_id: str) -> list[tuple[Any, ...]]:
    return [
        (s.position, s.start, s.end, s.category, s.harm, s.case_field)
        for s in ResponseSpan.objects.filter(judgment__assignment__public_id=public_id).order_by(
            "position", "start", "id"
        )
    ]


# The screen boxes of a range's first and last characters, found through the text nodes.
CHARACTER_BOXES = """([id, start, end]) => {
    const element = document.getElementById(id);
    function box(offset) {
        const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
        let node, count = 0;
        while ((node = walker.nextNode())) {
            if (offset < count + node.data.length) {
                const range = document.createRange();
                range.setStart(node, offset - count);
                range.setEnd(node, offset - count + 1);
                const r = range.getClientRects()[0];
                return {left: r.left, right: r.right, middle: (r.top + r.bottom) / 2};
            }
            count += node.data.length;
        }
        return null;
    }
    return [box(start), box(end - 1)];
}"""


def _drag_select(page: Page, letter: str, start: int, end: int) -> None:
    """Select [start, end) of a response's text with the mouse, as a rater would."""
    page.locator(f"#text-{letter}").scroll_into_view_if_needed()
    first, last = page.evaluate(CHARACTER_BOXES, [f"text-{letter}", start, end])
    page.mouse.move(first["left"] + 1, first["middle"])
    page.mouse.down()
    page.mouse.move((first["left"] + last["right"]) / 2, last["middle"], steps=4)
    page.mouse.move(last["right"] - 1, last["middle"], steps=4)
    page.mouse.up()


def _rows(page: Page, letter: str) -> list[dict[str, str]]:
    return page.evaluate(
        """letter => Array.from(document.querySelectorAll(
                `[data-span-list][data-letter="${letter}"] [data-span-row]`)).map(row =>
            Object.fromEntries(Array.from(row.querySelectorAll("[name]")).map(
                input => [input.name.split("-").slice(2).join("-"), input.value])))""",
        letter,
    )


def test_a_physician_marks_edits_and_removes_spans_by_mouse_and_keyboard(
    spans_on: dict,  # noqa: F811 - the fixture imported above
    live_server: LiveServer,
    coordinator: User,
    physician: User,
) -> None:
    spans_study(coordinator, physician)
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        page.set_default_timeout(5_000)
        sign_in(page, live_server.url, physician.username, PASSWORD)
        page.goto(f"{live_server.url}/rate/")
        page.get_by_role("button", name="Start rating").click()
        page.wait_for_url("**/rate/items/*/")
        page.locator("form.rating-form.spans-js").wait_for()
        item = page.locator("#rating-item").get_attribute("data-item") or ""
        texts = _db(_shown_texts, item)
        shown = page.evaluate(
            "() => ['A', 'B'].map(l => document.getElementById('text-' + l).textContent)"
        )
        assert shown == texts, "the browser's text is the display text, character for character"
        assert page.locator("[data-span-blank]").count() == 0, "no-JS rows are gone with JS on"
        a_sentences, b_sentences = sentences(texts[0]), sentences(texts[1])

        # Mouse: A's first sentence as a factual error of moderate harm.
        _drag_select(page, "A", *a_sentences[0])
        popover = page.locator(".span-popover")
        popover.wait_for()
        assert (
            popover.locator("[data-span-popover-quote]").inner_text()
            == texts[0][slice(*a_sentences[0])]
        )
        assert popover.locator("select[data-span-harm]").input_value() == "minor"
        popover.locator('[data-category="factual_error"]').click()
        page.screenshot(path=str(_artifacts_dir() / "spans-popover-1366x768-viewport.png"))
        popover.locator("select[data-span-harm]").select_option("moderate")
        popover.locator("[data-span-ok]").click()
        assert popover.count() == 0
        assert (
            page.locator("#text-A mark.span-cat-factual_error").inner_text()
            == texts[0][slice(*a_sentences[0])]
        )
        [row] = _rows(page, "A")
        assert (row["start"], row["end"], row["category"], row["harm"]) == (
            str(a_sentences[0][0]),
            str(a_sentences[0][1]),
            "factual_error",
            "moderate",
        )

        # Keyboard: from the first question, Shift+M marks on Response A; down to the second
        # sentence, extend over the third, tag it a reasoning error (2), confirm.
        page.locator('input[name="A-reasoning_clarity"]').first.focus()
        page.keyboard.press("Shift+M")
        assert page.evaluate("document.activeElement.id") == "text-A"
        page.keyboard.press("ArrowDown")
        focus = page.evaluate(
            """() => {
                const s = document.querySelector("#text-A .sentence.span-cursor-focus");
                return {start: s.dataset.start, outline: getComputedStyle(s).outlineStyle,
                        width: getComputedStyle(s).outlineWidth};
            }"""
        )
        assert focus["start"] == str(a_sentences[1][0])
        assert focus["outline"] != "none" and focus["width"] != "0px", "a visible focus ring"
        page.keyboard.press("Shift+ArrowDown")
        assert page.locator("#text-A .sentence.span-cursor").count() == 2
        page.keyboard.press("2")
        popover.wait_for()
        assert popover.locator('[aria-pressed="true"]').get_attribute("data-category") == (
            "reasoning_error"
        )
        page.keyboard.press("Enter")
        assert popover.count() == 0
        assert page.locator('input[name="A-reasoning_clarity"]:checked').count() == 0, (
            "the category key did not answer a Likert question"
        )
        assert page.evaluate("document.activeElement.id") == "text-A", "back to marking"
        page.keyboard.press("Escape")

        # A third span on B by mouse, then removed from the keyboard on its mark.
        _drag_select(page, "B", *b_sentences[0])
        popover.wait_for()
        popover.locator('[data-category="unsafe"]').click()
        popover.locator("[data-span-ok]").click()
        page.locator("#text-B mark.span-cat-unsafe").first.focus()
        page.keyboard.press("Delete")
        assert page.locator("#text-B mark").count() == 0 and _rows(page, "B") == []

        # Edit the mouse span: click its mark, make it an unsupported claim.
        page.locator("#text-A mark.span-cat-factual_error").first.click()
        popover.wait_for()
        assert popover.locator('[aria-pressed="true"]').get_attribute("data-category") == (
            "factual_error"
        )
        assert popover.locator("select[data-span-harm]").input_value() == "moderate"
        popover.locator('[data-category="unsupported_claim"]').click()
        popover.locator("[data-span-ok]").click()
        assert page.locator("#text-A mark.span-cat-factual_error").count() == 0
        assert page.locator("#text-A mark.span-cat-unsupported_claim").count() >= 1

        # An omission on B, tied to a case field.
        page.locator('[data-span-list][data-letter="B"] [data-span-add-omission]').click()
        page.locator(
            '[data-span-list][data-letter="B"] select[data-part="case_field"]'
        ).select_option("tubal_findings")

        page.screenshot(
            path=str(_artifacts_dir() / "spans-marked-1366x768-full.png"), full_page=True
        )
        for letter in "AB":
            page.check(f'input[name="{letter}-reasoning_clarity"][value="4"]')
            page.check(f'input[name="{letter}-treatment_feasibility"][value="3"]')
            page.check(f'input[name="{letter}-hallucination"][value="none"]')
        page.check('input[name="preference"][value="A"]')
        page.get_by_role("button", name="Submit and next").click()
        deadline = time.monotonic() + 10
        while not _db(_stored_spans, item) and time.monotonic() < deadline:
            time.sleep(0.1)

    assert _db(_stored_spans, item) == [
        (0, a_sentences[0][0], a_sentences[0][1], "unsupported_claim", "moderate", ""),
        (0, a_sentences[1][0], a_sentences[2][1], "reasoning_error", "minor", ""),
        (1, None, None, "omission", "minor", "tubal_findings"),
    ]
    assert console.problems == []


def test_without_javascript_a_quoted_passage_is_found_and_a_repeated_one_asks_which(
    spans_on: dict,  # noqa: F811 - the fixture imported above
    live_server: LiveServer,
    coordinator: User,
    physician: User,
) -> None:
    spans_study(coordinator, physician)
    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": 1366, "height": 768}, java_script_enabled=False
        )
        page = context.new_page()
        page.set_default_timeout(5_000)
        sign_in(page, live_server.url, physician.username, PASSWORD)
        page.goto(f"{live_server.url}/rate/")
        page.get_by_role("button", name="Start rating").click()
        page.wait_for_url("**/rate/items/*/")
        item = page.locator("#rating-item").get_attribute("data-item") or ""
        texts = _db(_shown_texts, item)
        letter = "A" if "IVF" in texts[0] else "B"
        text = texts["AB".index(letter)]
        assert page.locator(f"#text-{letter}").text_content() == text
        for each in "AB":
            page.check(f'input[name="{each}-reasoning_clarity"][value="4"]')
            page.check(f'input[name="{each}-treatment_feasibility"][value="3"]')
            page.check(f'input[name="{each}-hallucination"][value="none"]')
        page.check('input[name="preference"][value="A"]')
        page.fill(f'input[name="{letter}-span1-quote"]', "IVF")
        page.select_option(f'select[name="{letter}-span1-category"]', "factual_error")
        page.select_option(f'select[name="{letter}-span1-harm"]', "severe")
        page.get_by_role("button", name="Submit and next").click()
        page.get_by_text("This text appears 2 times in the response").wait_for()
        shot = _artifacts_dir() / "spans-no-js-1366x768-full.png"
        page.screenshot(path=str(shot), full_page=True)
        assert page.input_value(f'input[name="{letter}-span1-quote"]') == "IVF"
        page.fill(f'input[name="{letter}-span1-occurrence"]', "2")
        page.get_by_role("button", name="Submit and next").click()
        page.wait_for_url("**/rated/")
        context.close()
    second = text.index("IVF", text.index("IVF") + 1)
    assert _db(_stored_spans, item) == [
        ("AB".index(letter), second, second + 3, "factual_error", "severe", "")
    ]
