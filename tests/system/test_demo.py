"""`make demo`'s command end to end: SQLite, the embedded broker and worker, in a real browser."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alignment_jobs.demo.rubrics import DRAFTER, GRADED_ARMS, GRADED_TITLE, GRADER, VERIFY_CASES
from clinic_eval.demo.study import (
    DEMO_ADJUDICATORS,
    DEMO_CLOSED_TITLE,
    DEMO_COORDINATOR,
    DEMO_GENERATION_TITLE,
    DEMO_ITEMS_PER_RATER,
    DEMO_PHYSICIANS,
    DEMO_TITLE,
)
from clinic_eval.spans.text import sentences
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in
from tests.support.workers import children_of, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Demo:
    url: str
    log: Path
    pid: int
    database: Path


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo exactly as `make demo` runs it, with no DATABASE_URL or broker configured."""
    var_dir = tmp_path_factory.mktemp("demo-var")
    port = free_port()
    keep = {"PATH", "HOME", "LANG"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({"DEBUG": "1", "VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"})
    log = (var_dir / "demo.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_demo", "--port", str(port), "--cases", "60"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if json.load(response) == {"status": "ok"}:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(
                    process.pid, signal.SIGKILL
                )  # a demo that never came up is not left running
            pytest.fail("the demo did not start:\n" + (var_dir / "demo.log").read_text()[-4000:])
        time.sleep(0.5)
    try:
        yield Demo(
            url=base_url,
            log=var_dir / "demo.log",
            pid=process.pid,
            database=var_dir / "clinic_eval.sqlite3",
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        assert (var_dir / "clinic_eval.sqlite3").exists(), "the demo used the embedded SQLite"
        assert not (ROOT / "control").exists(), "the embedded broker keeps its files in VAR_DIR"


@pytest.fixture
def demo(demo_server: Demo) -> str:
    return demo_server.url


def test_the_demo_prints_its_accounts_and_url(demo_server: Demo) -> None:
    printed = demo_server.log.read_text()
    assert f"clinic-eval demo: open {demo_server.url}/" in printed
    for username, password in (DEMO_COORDINATOR, *DEMO_PHYSICIANS):
        assert f"{username:<14} password: {password}" in printed
    with urllib.request.urlopen(f"{demo_server.url}/accounts/login/") as response:
        assert response.status == 200
        assert "Sign in" in response.read().decode()


def test_a_coordinator_sees_the_demo_study_and_imports_through_the_worker(
    demo: str, tmp_path: Path
) -> None:
    console = ConsoleLog()
    good = tmp_path / "more-cases.jsonl"
    good.write_text(
        "\n".join(
            json.dumps({"case_id": f"NEW-{i}", "stratum": "General", "narrative": "Text."})
            for i in range(3)
        )
        + "\n"
    )
    bad = tmp_path / "bad-cases.csv"
    bad.write_bytes(
        b"case_id,stratum,narrative,truth.art_strategy\n"
        b"B-1,General,,IVF\n"
        b"B-2,General,Text,IVF\n"
        b"B-2,General,Text,IVF\n"
        b"B-3,General,Text,IVF++\n"
        b"B-4,General,caf\xe9,IVF\n"
    )
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_COORDINATOR)
        page.get_by_role("link", name=DEMO_TITLE).click()
        assert page.locator("h2", has_text="Cases").inner_text().endswith("60")
        arms = page.locator("table").nth(1).inner_text()
        for label in ("SFT-sim", "DPO-sim", "GRPO-sim", "ICL-sim", "Physician"):
            assert label in arms

        page.get_by_role("link", name="Import cases or responses").click()
        page.set_input_files("#id_file", str(bad))
        page.get_by_role("button", name="Check and import").click()
        page.get_by_text("Nothing was imported: 4 problems found").wait_for(timeout=30_000)
        rows = page.locator("table.errors tbody tr").all_inner_texts()
        assert [row.split("\t")[0] for row in rows] == ["2", "4", "5", "6"]

        page.goto(page.url.rsplit("/imports/", 1)[0] + "/imports/new/")
        page.set_input_files("#id_file", str(good))
        page.get_by_role("button", name="Check and import").click()
        page.get_by_text("3 cases imported").wait_for(timeout=30_000)

        page.get_by_role("link", name="Browse cases").click()
        page.fill("#id_q", "NEW-")
        page.get_by_text("3 cases matching").wait_for(timeout=10_000)
        assert "q=NEW-" in page.url, "the filter is in the address, so it can be shared"
    assert console.problems == []


def test_a_physician_sees_only_the_rating_area(demo: str) -> None:
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_PHYSICIANS[0])
        assert page.get_by_role("heading", name="My ratings").is_visible()
        body = page.content()
        for hidden in ("SFT-sim", "GRPO-sim", DEMO_GENERATION_TITLE, "Studies"):
            assert hidden not in body
        assert DEMO_TITLE in body, "the physician sees the study they rate, and only that"
        response = page.goto(f"{demo}/coordinator/")
        assert response is not None and response.status == 403
    assert [p for p in console.problems if "403" not in p] == []


def test_a_coordinator_runs_a_real_cpu_job_on_the_tiny_models_and_watches_it_finish(
    demo: str,
) -> None:
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_COORDINATOR)
        page.get_by_role("link", name=DEMO_GENERATION_TITLE).click()
        page.get_by_role("link", name="Generation jobs").click()
        arms = page.locator("table").first.inner_text()
        for label in ("SFT-tiny", "DPO-tiny", "GRPO-tiny", "ICL-tiny"):
            assert label in arms
        assert "/tiny/base" in arms, "the coordinator sees the checkpoint each arm loads"

        page.get_by_label("These case ids").check()
        page.fill("#id_case_ids", "SYN-00001 SYN-00002 SYN-00003")
        page.get_by_role("button", name="Launch").click()
        page.get_by_text("Job #1 queued: 12 case × arm items.").wait_for(timeout=15_000)
        percent = page.get_by_test_id("job-percent")
        percent.filter(has_text="100%").wait_for(timeout=240_000)
        page.get_by_test_id("job-status").filter(has_text="Finished").wait_for(timeout=10_000)
        assert page.locator("#job-bar").get_attribute("value") == "100"
        assert "12 / 12" in page.locator("#job-progress").inner_text()
        assert "tokens/s" in page.locator("#job-progress").inner_text()
    assert console.problems == []


def _one(database: Path, sql: str, *params: object) -> tuple:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return db.execute(sql, params).fetchone()


MID_JOB = """
    SELECT
      (SELECT COUNT(*) FROM alignment_jobs_generationitem WHERE job_id = ? AND status = 'done'),
      (SELECT COUNT(*) FROM alignment_jobs_generationshard WHERE job_id = ? AND status = 'running')
"""


def test_the_demo_restarts_a_killed_worker_and_its_job_finishes_each_item_once(
    demo_server: Demo,
) -> None:
    """Issue 17: SIGKILL the demo's worker mid-job (a shard done, another running); the demo
    restarts it, says so, and the job completes with every item stored exactly once."""
    cases = " ".join(f"SYN-{n:05d}" for n in range(4, 19))  # 15 cases x 4 arms, 4 shards
    with chromium() as browser:
        page = new_page(browser, ConsoleLog())
        sign_in(page, demo_server.url, *DEMO_COORDINATOR)
        page.get_by_role("link", name=DEMO_GENERATION_TITLE).click()
        page.get_by_role("link", name="Generation jobs").click()
        page.get_by_label("These case ids").check()
        page.fill("#id_case_ids", cases)
        page.get_by_role("button", name="Launch").click()
        queued = page.get_by_text("case × arm items.")
        queued.wait_for(timeout=15_000)
        words = queued.inner_text().split()
    job_id = int(words[words.index("queued:") - 1].lstrip("#"))
    total = int(words[words.index("queued:") + 1])
    assert total == 60

    def mid_job() -> bool:
        done, running = _one(demo_server.database, MID_JOB, job_id, job_id)
        return 0 < done < total and running > 0

    assert wait_for(mid_job, timeout=240, poll=0.02), demo_server.log.read_text()[-3000:]
    workers = [
        pid
        for pid in children_of(demo_server.pid)
        if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    restarted = f"The demo's worker stopped (exit code {-signal.SIGKILL}); restarting it."
    assert wait_for(lambda: restarted in demo_server.log.read_text(), timeout=30)
    finished = "SELECT finished_at IS NOT NULL FROM alignment_jobs_generationjob WHERE id = ?"
    assert wait_for(lambda: _one(demo_server.database, finished, job_id) == (1,), timeout=300), (
        demo_server.log.read_text()[-3000:]
    )
    statuses = "SELECT status, COUNT(*) FROM alignment_jobs_generationitem WHERE job_id = ?"
    assert _one(demo_server.database, statuses + " GROUP BY status", job_id) == ("done", total)
    stored = (
        "SELECT COUNT(*), COUNT(DISTINCT i.id) FROM clinic_eval_response r"
        " JOIN alignment_jobs_generationitem i ON i.case_id = r.case_id AND i.arm_id = r.arm_id"
        " WHERE i.job_id = ?"
    )
    assert _one(demo_server.database, stored, job_id) == (total, total), (
        "one response per item: nothing lost, nothing duplicated"
    )


def test_a_physician_rates_the_demo_study_end_to_end_and_the_coordinator_sees_it(
    demo: str,
) -> None:
    """Issue 4's done-when: a whole queue rated with the keyboard, then progress and balance."""
    console = ConsoleLog()
    username, password = DEMO_PHYSICIANS[2]
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, username, password)
        page.get_by_role("button", name="Start rating").click()
        page.wait_for_selector("#rating-item")
        total = int(page.locator("#rating-item h1").inner_text().split(" of ")[1].split()[0])
        assert DEMO_ITEMS_PER_RATER <= total <= DEMO_ITEMS_PER_RATER + 3
        for _ in range(total):
            assert "-sim" not in page.content()
            before = page.get_attribute("#rating-item", "data-item")
            page.keyboard.type("43n52nb")
            page.keyboard.press("Enter")
            page.locator(f'#rating-item:not([data-item="{before}"])').wait_for()
        page.get_by_text("All your items are rated").wait_for()

        coordinator = new_page(browser, console)
        sign_in(coordinator, demo, *DEMO_COORDINATOR)
        coordinator.get_by_role("link", name=DEMO_TITLE).click()
        coordinator.get_by_role("link", name="Rater progress").click()
        rows = coordinator.locator("#monitor tbody tr").all_inner_texts()
        row = next(r.split("\t") for r in rows if r.startswith(username))
        assert row[1:3] == [str(total), str(total)], row
        assert row[5] == "0%", "every choice was B: the side-bias column shows it"
        coordinator.get_by_role("link", name="Design and balance").click()
        assert "Positions per arm set" in coordinator.content()
        assert coordinator.locator(".hash").first.inner_text().strip()
    assert console.problems == []


def test_the_closed_demo_study_shows_every_results_panel(demo: str) -> None:
    """Issue 5's done-when: the results page renders every panel for the demo study."""
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "var" / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_COORDINATOR)
        page.get_by_role("link", name=DEMO_CLOSED_TITLE).click()
        page.get_by_role("link", name="Results").click()
        page.wait_for_selector("#primary")
        assert page.locator("#simulated-badge").is_visible()
        assert page.locator("#interim-banner").count() == 0
        images = page.locator("main img")
        assert images.count() >= 4
        for index in range(images.count()):
            width = images.nth(index).evaluate("img => img.naturalWidth")
            assert width > 0, "every plot decodes"
        text = page.locator("main").inner_text()
        for heading in ("Primary endpoint", "Agreement", "Position", "stratum"):
            assert heading.lower() in text.lower(), heading
        assert "SFT-sim" in text and "GRPO-sim" in text
        # Issue 13: the clustered primary numbers first, the per-judgment ones beneath them.
        assert "generalises to physicians and cases like these" in text
        assert page.locator("#primary-sensitivity").is_visible()
        assert page.locator("#primary-model-based").is_visible()
        clustered_top = page.locator("#pairwise-clustered").bounding_box()["y"]
        assert clustered_top < page.locator("#pairwise-sensitivity").bounding_box()["y"]
        page.screenshot(path=str(artifacts / "results-demo-1366x768-full.png"), full_page=True)
        page.screenshot(path=str(artifacts / "results-demo-1366x768-viewport.png"))
        # The open demo study's design page shows the power frozen into its plan.
        page.get_by_role("link", name="Studies").first.click()
        page.get_by_role("link", name=DEMO_TITLE).click()
        page.get_by_role("link", name="Design and balance").click()
        frozen = page.locator("#power-frozen")
        assert frozen.is_visible() and "Power for an effect of" in frozen.inner_text()
        assert frozen.locator("img").evaluate("img => img.naturalWidth") > 0
    assert console.problems == []


def test_every_headline_column_can_be_reached_at_1366_by_768(demo: str) -> None:
    """Issue 16: the headline table's last accuracy columns were cut off on a laptop screen.
    It may scroll inside its own box (which keyboard users can focus), never the page."""
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_COORDINATOR)
        page.get_by_role("link", name=DEMO_CLOSED_TITLE).click()
        page.get_by_role("link", name="Results").click()
        region = page.locator("#headline-scroll")
        region.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 1366
        headers = region.locator("thead th")
        names = headers.all_inner_texts()
        assert any(name.startswith("Macro-F1") for name in names[-2:]), names
        for index, name in enumerate(names):
            headers.nth(index).scroll_into_view_if_needed()
            box, cell = region.bounding_box(), headers.nth(index).bounding_box()
            assert box is not None and cell is not None
            assert box["x"] - 1 <= cell["x"], name
            assert cell["x"] + cell["width"] <= box["x"] + box["width"] + 1, name
            assert cell["x"] + cell["width"] <= 1366, name
        region.evaluate("element => { element.scrollLeft = 0; }")
        region.focus()
        page.keyboard.press("ArrowRight")
        # Chromium scrolls smoothly: wait for the scroll to start instead of reading it at once.
        page.wait_for_function(
            "element => element.scrollLeft > 0", arg=region.element_handle(), timeout=5_000
        )
        assert region.evaluate("element => element.scrollLeft") > 0, "the keyboard scrolls it"
    assert console.problems == []


def test_a_demo_physician_refines_and_verifies_a_tiny_model_draft(demo: str) -> None:
    """Issue 7's done-when, first half: a rubric drafted by the tiny local model, verified by a
    demo physician in the browser."""
    from playwright.sync_api import expect

    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_PHYSICIANS[1])
        queue = page.locator("#rubric-queue")
        expect(queue).to_contain_text(f"{VERIFY_CASES} rubrics waiting for your verification")
        queue.get_by_role("link", name="Verify the next rubric").click()
        page.wait_for_url("**/rate/rubrics/*/")
        assert DRAFTER not in page.content(), "the drafting model stays hidden"
        rows = page.locator("#criteria-list > li")
        drafted = rows.count()
        assert drafted >= 1
        add = page.locator("#criterion-add")
        add.get_by_label("Criterion").fill("Recommends IVF given blocked tubes")
        add.get_by_label("Points").fill("5")
        add.get_by_role("button", name="Add criterion").click()
        expect(rows).to_have_count(drafted + 1)
        gibberish = rows.first
        gibberish.locator("summary", has_text="Delete").click()
        gibberish.get_by_role("button", name="Yes, delete this criterion").click()
        expect(rows).to_have_count(drafted)
        verified = page.url
        page.get_by_role("button", name="Verify this rubric").click()
        # On to the next draft waiting for this physician.
        page.wait_for_url(lambda url: url != verified and "/rate/rubrics/" in url)
        expect(page.locator(".messages")).to_contain_text("Rubric verified")
        page.goto(f"{demo}/rate/")
        waiting = f"{VERIFY_CASES - 1} rubrics waiting"
        expect(page.locator("#rubric-queue")).to_contain_text(waiting)
    assert console.problems == []


def test_the_closed_rubric_study_shows_scores_with_intervals_and_grader_agreement(
    demo: str,
) -> None:
    """Issue 7's done-when, second half: graded by physicians and by the grader model."""
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_COORDINATOR)
        page.get_by_role("link", name=GRADED_TITLE).click()
        page.get_by_role("link", name="Results").click()
        section = page.locator("#rubric")
        section.wait_for()
        text = section.inner_text()
        for arm in GRADED_ARMS:
            assert arm in text
        assert f"Grader {GRADER}" in text
        assert " to " in text, "scores carry their 95% intervals"
        assert "Can the grader model be trusted?" in text and "Cohen's kappa" in text
        assert page.locator("#simulated-badge").is_visible()
    assert console.problems == []


def _all(database: Path, sql: str, *params: object) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return db.execute(sql, params).fetchall()


CLOSED_SPANS = """
    SELECT a.label, s.category, s.harm, s.start, s."end", s.quote, s.case_field,
           s.judgment_id, s.response_id, r.display_text, c.fields FROM clinic_eval_responsespan s
    JOIN clinic_eval_judgment j ON j.id = s.judgment_id
    JOIN clinic_eval_response r ON r.id = s.response_id
    JOIN clinic_eval_arm a ON a.id = r.arm_id
    JOIN clinic_eval_case c ON c.id = r.case_id
    WHERE j.study_id = (SELECT id FROM clinic_eval_study WHERE title = ?)
"""
RATED_PER_ARM = """
    SELECT a.label, COUNT(*) FROM clinic_eval_responserating rr
    JOIN clinic_eval_judgment j ON j.id = rr.judgment_id
    JOIN clinic_eval_response r ON r.id = rr.response_id
    JOIN clinic_eval_arm a ON a.id = r.arm_id
    WHERE j.study_id = (SELECT id FROM clinic_eval_study WHERE title = ?) GROUP BY a.label
"""
ADJUDICATIONS = """
    SELECT ad.id, ad.status, ad.reason, u.username, ad.comparison_id,
           (SELECT GROUP_CONCAT(ru.username) FROM clinic_eval_assignment x
            JOIN clinic_eval_user ru ON ru.id = x.rater_id WHERE x.comparison_id = ad.comparison_id)
    FROM clinic_eval_adjudication ad JOIN clinic_eval_study st ON st.id = ad.study_id
    LEFT JOIN clinic_eval_user u ON u.id = ad.adjudicator_id
    WHERE st.title = ?
"""


def test_the_closed_demo_study_carries_planted_spans_and_adjudications(
    demo_server: Demo,
) -> None:
    """Issue 15's demo: simulated spans stored as real ones (exact ranges of the display text,
    omissions naming a case field), more reasoning errors on GRPO-sim and more omissions on
    SFT-sim by design, and adjudications opened by the plan's rule, some of them done."""
    spans = _all(demo_server.database, CLOSED_SPANS, DEMO_CLOSED_TITLE)
    assert len(spans) > 100
    marked: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for arm, category, _, start, end, quote, field, judgment, response, text, fields in spans:
        marked.setdefault((arm, category), set()).add((judgment, response))
        if category == "omission":
            assert start is None and end is None and quote == ""
            assert field in json.loads(fields), "an omission names one of the case's fields"
        else:
            assert text[start:end] == quote and quote.strip() == quote and quote
            assert any(a <= start and end <= b for a, b in sentences(text)), "in one sentence"
    rated = dict(_all(demo_server.database, RATED_PER_ARM, DEMO_CLOSED_TITLE))

    def share(arm: str, category: str) -> float:
        return len(marked.get((arm, category), ())) / rated[arm]

    assert share("GRPO-sim", "reasoning_error") > 2 * share("SFT-sim", "reasoning_error")
    assert share("SFT-sim", "omission") > 2 * share("GRPO-sim", "omission")
    harms = [row[2] for row in spans]
    assert harms.count("minor") + harms.count("moderate") > 0.75 * len(harms)
    assert 0 < harms.count("severe") < 0.1 * len(harms)

    adjudications = _all(demo_server.database, ADJUDICATIONS, DEMO_CLOSED_TITLE)
    done = [row for row in adjudications if row[1] == "done"]
    assert done and len(done) < len(adjudications), "some adjudicated, some still pending"
    assert len({row[4] for row in adjudications}) == len(adjudications), "one per item"
    for _, status, reason, adjudicator, _, raters in adjudications:
        if adjudicator is not None:
            assert adjudicator in DEMO_ADJUDICATORS
            assert adjudicator not in raters.split(","), "an adjudicator never rated the item"
        if status == "done":
            assert reason.startswith("Simulated adjudication:")

    (rubric,) = _one(
        demo_server.database, "SELECT rubric FROM clinic_eval_study WHERE title = ?", DEMO_TITLE
    )
    assert json.loads(rubric)["spans"]["enabled"] is True, "the open study marks spans"


def test_a_coordinator_filters_the_closed_demo_studys_response_viewer(demo: str) -> None:
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo, *DEMO_COORDINATOR)
        page.get_by_role("link", name=DEMO_CLOSED_TITLE).click()
        page.get_by_role("link", name="Results").click()
        page.get_by_role("link", name="Response viewer").click()
        articles = page.locator("article.viewed-response")
        articles.first.wait_for()
        assert articles.locator("mark.span-cat-reasoning_error").count() > 0
        title = articles.locator("mark").first.get_attribute("title") or ""
        assert title.startswith("sim-rater-"), "a mark names its rater, category and harm"

        page.select_option("#id_arm", "GRPO-sim")
        page.wait_for_url("**arm=GRPO-sim**")
        page.wait_for_function(
            "() => [...document.querySelectorAll('article.viewed-response')]"
            ".every(a => a.dataset.arm === 'GRPO-sim')"
        )
        page.select_option("#id_category", "reasoning_error")
        page.wait_for_url("**category=reasoning_error**")
        page.wait_for_function(
            "() => [...document.querySelectorAll('article.viewed-response mark')]"
            ".every(m => m.classList.contains('span-cat-reasoning_error'))"
        )
        titles = articles.locator("mark").evaluate_all("marks => marks.map(m => m.title)")
        assert titles and all("Reasoning error" in title for title in titles)
        assert all(
            a == "GRPO-sim" for a in articles.evaluate_all("as => as.map(a => a.dataset.arm)")
        )
    assert console.problems == []


SHOWN_TEXTS = """
    SELECT r.id, r.display_text, a.shown_order FROM clinic_eval_assignment a
    JOIN clinic_eval_comparison_responses cr ON cr.comparison_id = a.comparison_id
    JOIN clinic_eval_response r ON r.id = cr.response_id
    WHERE a.public_id = ?
"""
ITEM_SPANS = """
    SELECT s.position, s.start, s."end", s.category FROM clinic_eval_responsespan s
    JOIN clinic_eval_judgment j ON j.id = s.judgment_id
    WHERE j.assignment_id = (SELECT id FROM clinic_eval_assignment WHERE public_id = ?)
"""


def test_a_demo_physician_marks_a_span_in_the_open_study(demo_server: Demo) -> None:
    """Issue 15's demo: the open study's rating page marks spans on the exact display text."""
    console = ConsoleLog()
    username, password = DEMO_PHYSICIANS[0]
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, demo_server.url, username, password)
        page.get_by_role("button", name="Start rating").click()
        page.locator("form.rating-form.spans-js").wait_for()
        item = page.locator("#rating-item").get_attribute("data-item") or ""
        rows = _all(demo_server.database, SHOWN_TEXTS, item)
        order = json.loads(rows[0][2])
        texts = [next(text for pk, text, _ in rows if pk == shown) for shown in order]
        shown = page.evaluate(
            "() => ['A', 'B'].map(l => document.getElementById('text-' + l).textContent)"
        )
        assert shown == texts, "the physician marks the display text, character for character"
        # Keyboard: into Response A's text, down to its second sentence, a reasoning error (2).
        page.locator('input[name="A-reasoning_clarity"]').first.focus()
        page.keyboard.press("Shift+M")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("2")
        page.locator(".span-popover").wait_for()
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        for letter in "AB":
            page.check(f'input[name="{letter}-reasoning_clarity"][value="4"]')
            page.check(f'input[name="{letter}-treatment_feasibility"][value="3"]')
            page.check(f'input[name="{letter}-hallucination"][value="none"]')
        page.check('input[name="preference"][value="A"]')
        page.get_by_role("button", name="Submit and next").click()
        assert wait_for(lambda: _all(demo_server.database, ITEM_SPANS, item), timeout=15)
    start, end = sentences(texts[0])[1]
    assert _all(demo_server.database, ITEM_SPANS, item) == [(0, start, end, "reasoning_error")]
    assert console.problems == []
