"""A physician verifies a model-drafted rubric in headless Chromium: edit, delete, add, verify."""

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
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from alignment_jobs.models import GenerationSpec
from clinic_eval.models import Arm, CaseRubric, RubricChange, Study, StudyRater, User
from clinic_eval.rubrics import services
from clinic_eval.rubrics.selectors import rubric_is_usable
from clinic_eval.rubrics.services import CriterionInput
from tests.conftest import PASSWORD
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in
from tests.support.factories import ArmFactory, CaseFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")
DRAFTER_LABEL = "Drafter-SFT-v7"
DRAFTER_PATH = "/models/secret-sft-7b"


def _artifacts_dir() -> Path:
    default = Path(settings.BASE_DIR) / "var" / "test-artifacts"
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _db(query: Callable[..., T], *args: object) -> T:
    """The ORM in a thread of its own: Playwright's sync API keeps an event loop in this one."""

    def run() -> T:
        try:
            return query(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@dataclass(frozen=True)
class Stored:
    changes: list[tuple[str, int, int]]
    criteria: list[tuple[str, int]]
    version: int
    verified_versions: list[int]
    usable: bool


def _stored(rubric_id: int) -> Stored:
    rubric = CaseRubric.objects.get(pk=rubric_id)
    return Stored(
        changes=list(rubric.changes.values_list("action", "author_id", "version")),
        criteria=list(rubric.criteria.values_list("text", "points")),
        version=rubric.version,
        verified_versions=list(rubric.verifications.values_list("version", flat=True)),
        usable=rubric_is_usable(rubric=rubric),
    )


@pytest.fixture
def drafted(study: Study, physician: User) -> CaseRubric:
    StudyRater.objects.create(study=study, rater=physician)
    case = CaseFactory(study=study, external_id="C-001")
    arm = ArmFactory(study=study, label=DRAFTER_LABEL, kind=Arm.Kind.MODEL)
    GenerationSpec.objects.create(arm=arm, base_model_path=DRAFTER_PATH)
    return services.rubric_store(
        study=study,
        case=case,
        source=CaseRubric.Source.DRAFTED,
        drafted_by=arm,
        provenance={"arm": DRAFTER_LABEL, "model": DRAFTER_PATH},
        criteria=[
            CriterionInput("Recommends IVF for bilateral tubal occlusion", 5),
            CriterionInput("Explains the plan in plain words", 2, axis="communication_quality"),
            CriterionInput("Recommends IUI despite blocked tubes", -6),
        ],
    )


def _assert_blinded(page: Page) -> None:
    html = page.content()
    for word in (DRAFTER_LABEL, DRAFTER_PATH, "drafted", "provenance"):
        assert word.lower() not in html.lower(), f"{word!r} on the physician's page"


def test_a_physician_edits_deletes_adds_and_verifies_a_drafted_rubric(
    live_server: LiveServer, drafted: CaseRubric, physician: User
) -> None:
    artifacts = _artifacts_dir()
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        page.set_default_timeout(5_000)
        sign_in(page, live_server.url, physician.username, PASSWORD)

        # The rater home loads the verification queue with htmx; the link is a plain link.
        page.goto(f"{live_server.url}/rate/")
        queue = page.locator("#rubric-queue")
        expect(queue).to_contain_text("1 rubric waiting for your verification")
        queue.get_by_role("link", name="Verify the next rubric").click()
        page.wait_for_url("**/rate/rubrics/*/")
        expect(page.get_by_role("heading", name="Reference decision")).to_be_visible()
        _assert_blinded(page)
        page.evaluate("window.__marker = 1")
        rows = page.locator("#criteria-list > li")
        expect(rows).to_have_count(3)

        # Edit one criterion's points inline.
        explains = rows.filter(has_text="Explains the plan")
        explains.locator("summary", has_text="Edit").click()
        explains.locator("input[name$='-points']").fill("4")
        explains.get_by_role("button", name="Save criterion").click()
        expect(explains.locator(".points")).to_have_text("+4")
        expect(page.locator("#rubric-seen-version")).to_have_value("2")

        # Delete one, confirming in the row.
        iui = rows.filter(has_text="Recommends IUI")
        iui.locator("summary", has_text="Delete").click()
        iui.get_by_role("button", name="Yes, delete this criterion").click()
        expect(rows).to_have_count(2)
        expect(page.locator("#rubric-seen-version")).to_have_value("3")

        # Add one, with negative points.
        add = page.locator("#criterion-add")
        add.get_by_label("Criterion").fill("Invents a laboratory value")
        add.get_by_label("Points").fill("-3")
        add.get_by_label("Axis").select_option("accuracy")
        add.get_by_role("button", name="Add criterion").click()
        expect(rows).to_have_count(3)
        expect(rows.last.locator(".points")).to_have_text("-3")
        expect(page.locator("#rubric-seen-version")).to_have_value("4")
        expect(add.get_by_label("Criterion")).to_have_value("")
        assert page.evaluate("window.__marker") == 1, "every change came without a reload"
        _assert_blinded(page)

        page.screenshot(path=str(artifacts / "rubric-review-1366x768-full.png"), full_page=True)
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 1366, f"the rubric page scrolls sideways ({width}px)"

        page.get_by_role("button", name="Verify this rubric").click()
        page.wait_for_url("**/rate/rubrics/")
        expect(page.locator(".messages")).to_contain_text("Rubric verified")
        expect(page.locator("#rubric-queue")).to_contain_text("No rubric is waiting")
        page.screenshot(path=str(artifacts / "rubric-queue-after-verify-1366x768.png"))

    stored = _db(_stored, drafted.pk)
    assert stored.changes == [
        (RubricChange.Action.EDIT, physician.pk, 2),
        (RubricChange.Action.DELETE, physician.pk, 3),
        (RubricChange.Action.ADD, physician.pk, 4),
        (RubricChange.Action.VERIFY, physician.pk, 4),
    ]
    assert stored.criteria == [
        ("Recommends IVF for bilateral tubal occlusion", 5),
        ("Explains the plan in plain words", 4),
        ("Invents a laboratory value", -3),
    ]
    assert stored.version == 4 and stored.verified_versions == [4]
    assert stored.usable
    assert console.problems == []
