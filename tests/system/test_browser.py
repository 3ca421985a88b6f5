"""Pages in headless Chromium against the live server and PostgreSQL."""

from __future__ import annotations

import pytest
from pytest_django.live_server_helper import LiveServer

from clinic_eval.models import Study, User
from tests.conftest import PASSWORD
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in
from tests.support.factories import ArmFactory, CaseFactory, ResponseFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOSTILE = (
    '<script>window.__owned = "script"</script>'
    '<img src="x" onerror="window.__owned = \'img\'">'
    "<a href=\"javascript:window.__owned='link'\">click</a>"
)


def test_case_and_response_text_never_runs_as_script(
    live_server: LiveServer, coordinator: User, study: Study
) -> None:
    case = CaseFactory(
        study=study, external_id="XSS-1", narrative=f"Narrative {HOSTILE}", fields={"note": HOSTILE}
    )
    ResponseFactory(case=case, arm=ArmFactory(study=study), raw_text=HOSTILE)
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, live_server.url, coordinator.username, PASSWORD)
        page.goto(f"{live_server.url}/coordinator/studies/{study.pk}/cases/{case.pk}/")
        for link in page.locator("a", has_text="click").all():
            link.click(no_wait_after=True)
        assert page.evaluate("window.__owned") is None
        assert page.get_by_text('<script>window.__owned = "script"</script>').count() >= 1
        assert page.locator("main img").count() == 0

        page.goto(f"{live_server.url}/coordinator/studies/{study.pk}/cases/")
        assert page.evaluate("window.__owned") is None
    assert console.problems == []


def test_coordinator_pages_fit_a_1366_by_768_screen(
    live_server: LiveServer, coordinator: User, study: Study
) -> None:
    CaseFactory.create_batch(60, study=study)
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, live_server.url, coordinator.username, PASSWORD)
        for path in (
            "",
            f"studies/{study.pk}/",
            f"studies/{study.pk}/cases/",
            f"studies/{study.pk}/imports/new/",
        ):
            page.goto(f"{live_server.url}/coordinator/{path}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1366, f"/coordinator/{path} scrolls sideways ({width}px)"

        page.goto(f"{live_server.url}/coordinator/studies/{study.pk}/cases/")
        page.get_by_role("link", name="Next ›").click()
        page.get_by_text("Page 2 of 2").wait_for()
        assert "page=2" in page.url
        page.go_back()
        page.get_by_text("Page 1 of 2").wait_for()

        page.goto(f"{live_server.url}/coordinator/")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        assert focused == "Skip to content", "keyboard users can skip the navigation"
    assert console.problems == []


def test_the_api_docs_render_under_the_content_security_policy(
    live_server: LiveServer, coordinator: User
) -> None:
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, live_server.url, coordinator.username, PASSWORD)
        response = page.goto(f"{live_server.url}/api/docs/")
        assert response is not None
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "script-src 'self' 'unsafe" not in policy
        page.locator(".opblock").first.wait_for()
        assert page.locator(".opblock").count() >= 10
    assert console.problems == []
