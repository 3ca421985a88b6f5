"""Faults in the services beneath the application: PostgreSQL restarting, Redis gone.

Each test breaks a private instance it owns (tests/support/private_services.py), never the
shared ones. A worker killed mid-job is covered in tests/generation/test_generation_worker.py
and tests/imports/test_worker.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from django.db import transaction
from django.test import Client
from django.urls import reverse

from alignment_jobs.demo.tiny_models import TinyModelSet
from alignment_jobs.generation import jobs
from alignment_jobs.models import GenerationItem, GenerationJob, GenerationShard
from clinic_eval.celery import app as celery_app
from clinic_eval.models import Arm, Study
from tests.conftest import PASSWORD
from tests.generation.test_generation import make_cases, model_arm
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in
from tests.support.private_services import (
    PrivatePostgres,
    PrivateRedis,
    app_environment,
    gunicorn,
    manage,
    password_set,
    private_postgres,
    private_redis,
    seed_open_study,
)

pytestmark = pytest.mark.slow

RATERS = 4  # API clients; one more physician rates in a browser
CASES = 4
OUTAGE_SECONDS = 2.5
RETRY_PAUSE_CAP = 0.3
CLIENT_DEADLINE_SECONDS = 60


# --- PostgreSQL restarted while raters submit ---------------------------------------------


@dataclass
class Server:
    url: str
    database: PrivatePostgres
    study: str
    tokens: list[str]  # the API clients'
    browser_rater: str


@pytest.fixture
def rating_server(tmp_path: Path) -> Iterator[Server]:
    """gunicorn (2 workers, DEBUG off) on a private cluster holding an open pairwise study."""
    with private_postgres() as database:
        env = app_environment(database.url, tmp_path)
        manage(env, "migrate", "--no-input")
        seeded = seed_open_study(env, tmp_path, raters=RATERS + 1, cases=CASES)
        browser_rater, *api_raters = sorted(seeded.tokens)
        password_set(env, browser_rater, PASSWORD)
        with gunicorn(env, tmp_path / "gunicorn.log") as server:
            yield Server(
                url=server.url,
                database=database,
                study=seeded.study,
                tokens=[seeded.tokens[name] for name in api_raters],
                browser_rater=browser_rater,
            )


@dataclass
class Seen:
    """What one rater's client saw; the test reads these after the threads end."""

    statuses: Counter = field(default_factory=Counter)
    unavailable: list[requests.Response] = field(default_factory=list)
    connection_errors: int = 0
    retries: int = 0
    server_errors: list[str] = field(default_factory=list)
    submitted: set[str] = field(default_factory=set)
    accepted: dict[str, str] = field(default_factory=dict)  # item -> created/unchanged/...
    failure: str = ""


def answer(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "preference": item["choices"][0],
        "rationale": "Clearer plan.",
        "revision": 0,
        "ratings": [
            {
                "position": shown["position"],
                "scores": {"reasoning_clarity": 4, "treatment_feasibility": 3},
                "hallucination": "none",
            }
            for shown in item["responses"]
        ],
    }


class RaterClient:
    """A front end that sends the same request again on 503 or a dropped connection."""

    def __init__(self, server: Server, token: str, seen: Seen) -> None:
        self.server = server
        self.seen = seen
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.deadline = time.monotonic() + CLIENT_DEADLINE_SECONDS

    def call(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        while time.monotonic() < self.deadline:
            try:
                response = self.http.request(method, self.server.url + path, json=body, timeout=20)
            except requests.ConnectionError:
                self.seen.connection_errors += 1
                self.seen.retries += 1
                time.sleep(RETRY_PAUSE_CAP)
                continue
            self.seen.statuses[response.status_code] += 1
            if response.status_code == 503:
                self.seen.unavailable.append(response)
                self.seen.retries += 1
                time.sleep(min(float(response.headers.get("Retry-After", 1)), RETRY_PAUSE_CAP))
                continue
            if response.status_code >= 500:
                self.seen.server_errors.append(f"{method} {path}: {response.status_code}")
            return response
        raise TimeoutError(f"{method} {path}: no answer before the deadline")

    def rate_everything(self) -> None:
        study = self.server.study
        while True:
            given = self.call("post", f"/api/rate/studies/{study}/next/")
            if given.status_code == 204:
                return
            assert given.status_code == 200, given.text
            public_id = given.json()["public_id"]
            shown = self.call("get", f"/api/rate/items/{public_id}/")
            assert shown.status_code == 200, shown.text
            self.seen.submitted.add(public_id)
            stored = self.call(
                "put", f"/api/rate/items/{public_id}/judgment/", answer(shown.json())
            )
            # 200 "unchanged": an earlier attempt was stored before its answer was lost.
            assert stored.status_code in (200, 201), stored.text
            self.seen.accepted[public_id] = stored.json()["outcome"]

    def run(self) -> None:
        try:
            self.rate_everything()
        except Exception as exc:  # reported by the test, with what the client saw
            self.seen.failure = f"{type(exc).__name__}: {exc}"


def accepted(seen: list[Seen]) -> int:
    return sum(len(s.accepted) for s in seen)


FORM_VALUES = """form => Object.fromEntries(
    Array.from(new FormData(form).entries()).filter(([name]) => name !== 'csrfmiddlewaretoken')
)"""


def html_session(server: Server, username: str) -> requests.Session:
    """A signed-in browser session, for the pages rather than the API."""
    browser = requests.Session()
    login = browser.get(f"{server.url}/accounts/login/", timeout=20)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    assert token, login.text[:500]
    signed_in = browser.post(
        f"{server.url}/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token[1]},
        timeout=20,
    )
    assert signed_in.status_code == 200 and "/accounts/login/" not in signed_in.url
    return browser


def test_raters_submitting_through_a_postgres_restart_lose_and_duplicate_nothing(
    rating_server: Server,
) -> None:
    server, database = rating_server, rating_server.database
    pages = html_session(server, server.browser_rater)
    seen = [Seen() for _ in server.tokens]
    threads = [
        threading.Thread(target=RaterClient(server, token, s).run, name=f"rater-{i}")
        for i, (token, s) in enumerate(zip(server.tokens, seen, strict=True))
    ]
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        page.set_default_timeout(15_000)
        sign_in(page, server.url, server.browser_rater, PASSWORD)
        page.goto(f"{server.url}/rate/")
        page.get_by_role("button", name="Start rating").click()
        page.wait_for_url("**/rate/items/*/")
        page.locator("form.rating-form").wait_for()
        in_browser = page.locator("#rating-item").get_attribute("data-item")
        for key in "43n52na":
            page.keyboard.press(key)
        filled = page.locator("form.rating-form").evaluate(FORM_VALUES)

        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while accepted(seen) < RATERS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert accepted(seen) >= RATERS, "the raters never got going"

        database.stop("fast")
        outage_started = time.monotonic()
        page_during_outage = pages.get(f"{server.url}/rate/", timeout=20)
        page.keyboard.press("Enter")
        notice = page.locator("form.rating-form [data-retry-notice]")
        notice.wait_for()
        notice_text = notice.inner_text()
        kept = page.locator("form.rating-form").evaluate(FORM_VALUES)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
        database.start()

        page.locator("form.rating-form button[type=submit]").click()
        page.wait_for_function(
            "item => document.querySelector('#rating-item')?.dataset.item !== item",
            arg=in_browser,
        )

        for thread in threads:
            thread.join(timeout=CLIENT_DEADLINE_SECONDS + 10)
    assert not any(thread.is_alive() for thread in threads)
    failures = [s.failure for s in seen if s.failure]
    assert not failures, failures

    # The clients were told to come back, in words and in headers, and never saw a crash.
    unavailable = [r for s in seen for r in s.unavailable]
    assert unavailable, "no request reached the server during the outage"
    for response in unavailable:
        assert response.headers["Retry-After"].isdigit()
        body = response.json()
        assert body["retryable"] is True
        assert "briefly unavailable" in body["detail"] and "again" in body["detail"]
    assert not [error for s in seen for error in s.server_errors]
    assert not any(s.statuses[500] for s in seen)

    # A page during the outage: the 503 page, not a stack trace.
    assert page_during_outage.status_code == 503
    assert page_during_outage.headers["Retry-After"].isdigit()
    assert "Briefly unavailable" in page_during_outage.text
    assert "Traceback" not in page_during_outage.text
    assert "OperationalError" not in page_during_outage.text
    # The browser's submit during the outage kept every answer and said to send it again.
    assert "Nothing you entered was lost" in notice_text
    assert kept == filled and filled["preference"] == "A"

    # Every item a client submitted was accepted, and is stored exactly once.
    submitted = set().union(*(s.submitted for s in seen))
    accepted_items = {item for s in seen for item in s.accepted}
    assert submitted == accepted_items
    seats_for_api = database.query(
        "SELECT count(*) FROM clinic_eval_assignment a JOIN clinic_eval_user u "
        "ON u.id = a.rater_id WHERE u.username <> %s",
        server.browser_rater,
    )[0][0]
    assert len(accepted_items) == seats_for_api
    rows = database.query(
        "SELECT a.public_id, count(j.id), min(u.username) FROM clinic_eval_assignment a "
        "JOIN clinic_eval_judgment j ON j.assignment_id = a.id "
        "JOIN clinic_eval_user u ON u.id = j.rater_id GROUP BY a.public_id"
    )
    stored = {public_id: count for public_id, count, _ in rows}
    assert set(stored) == accepted_items | {in_browser}
    assert set(stored.values()) == {1}, "a judgment stored twice"
    done = database.query("SELECT count(*) FROM clinic_eval_assignment WHERE status = 'done'")[0][0]
    assert done == len(stored)

    statuses = sum((s.statuses for s in seen), Counter())
    print(
        f"\nPostgreSQL restart: {len(unavailable)} answers 503, "
        f"{sum(s.connection_errors for s in seen)} dropped connections, "
        f"{sum(s.retries for s in seen)} retries, statuses {dict(statuses)}, "
        f"outcomes {dict(Counter(o for s in seen for o in s.accepted.values()))}"
    )


# --- Redis unavailable when a coordinator launches a job -----------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    """Publishing goes to a private redis-server, with tasks sent rather than run in-process."""
    previous = celery_app.conf.get("broker_write_url")
    with private_redis() as server:
        celery_app.conf.broker_write_url = server.url
        celery_app.conf.task_always_eager = False
        try:
            yield server
        finally:
            celery_app.conf.broker_write_url = previous
            celery_app.conf.task_always_eager = True


@pytest.fixture
def draft_study(study: Study, model_roots: TinyModelSet) -> tuple[Study, Arm]:
    make_cases(study, 3)
    return study, model_arm(study, "SFT", model_roots, "sft")


def nothing_of_a_job(study: Study, status: str = Study.Status.DRAFT) -> bool:
    study.refresh_from_db()
    return (
        not GenerationJob.objects.exists()
        and not GenerationShard.objects.exists()
        and not GenerationItem.objects.exists()
        and study.status == status
    )


def queued_tasks(server: PrivateRedis) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.llen(celery_app.conf.task_routes["alignment_jobs.*"]["queue"]))
    finally:
        client.close()


UNREACHABLE = "The job queue (Redis) is unreachable, so no job was created"


@pytest.mark.django_db(transaction=True)
def test_a_launch_while_redis_is_down_says_so_and_creates_nothing(
    broker: PrivateRedis, draft_study: tuple[Study, Arm], coordinator_client: Client
) -> None:
    study, arm = draft_study
    page = reverse("jobs:job_list", args=[study.pk])
    launch = {"arms": [arm.pk], "scope": "all", "engine": "transformers"}
    broker.stop()

    started = time.monotonic()
    refused = coordinator_client.post(page, launch)
    assert time.monotonic() - started < 15, "the coordinator waited on kombu's retries"
    assert refused.status_code == 200
    assert UNREACHABLE in refused.content.decode()
    assert nothing_of_a_job(study)

    api = coordinator_client.post(
        reverse("api:job_list", args=[study.pk]),
        {"arms": [arm.label], "engine": "transformers"},
        content_type="application/json",
    )
    assert api.status_code == 503
    assert api["Retry-After"].isdigit()
    assert api.json()["retryable"] is True and UNREACHABLE in api.json()["detail"]
    assert nothing_of_a_job(study)

    broker.start()
    launched = coordinator_client.post(page, launch)
    job = GenerationJob.objects.get()
    assert launched.status_code == 302
    assert launched["Location"] == reverse("jobs:job_detail", args=[study.pk, job.pk])
    study.refresh_from_db()
    assert study.status == Study.Status.GENERATING
    assert job.item_count == 3 and queued_tasks(broker) == job.shards.count() == 1


@pytest.mark.django_db(transaction=True)
def test_redis_lost_between_the_check_and_the_publish_undoes_the_launch(
    broker: PrivateRedis, draft_study: tuple[Study, Arm]
) -> None:
    study, _ = draft_study
    # The publish waits for the outer commit, so the broker can go after the check passed.
    with pytest.raises(jobs.QueueUnavailable, match=re.escape(UNREACHABLE)):  # noqa: SIM117
        with transaction.atomic():
            jobs.job_launch(study=study, created_by=None, engine="transformers")
            assert GenerationItem.objects.count() == 3
            broker.stop()
    assert nothing_of_a_job(study)


@pytest.mark.django_db(transaction=True)
def test_a_retry_while_redis_is_down_leaves_the_failed_items_as_they_were(
    broker: PrivateRedis, draft_study: tuple[Study, Arm], coordinator_client: Client
) -> None:
    study, _ = draft_study
    job = jobs.job_launch(study=study, created_by=None, engine="transformers", enqueue=False)
    job.items.update(status=GenerationItem.Status.FAILED, attempts=3, error="engine died")
    job.shards.update(status=GenerationShard.Status.DONE, attempts=1)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.FINISHED_WITH_FAILURES
    )

    def unchanged() -> bool:
        return (
            GenerationJob.objects.get(pk=job.pk).status
            == GenerationJob.Status.FINISHED_WITH_FAILURES
            and set(job.items.values_list("status", "attempts", "error"))
            == {(GenerationItem.Status.FAILED, 3, "engine died")}
            and set(job.shards.values_list("status", "attempts"))
            == {(GenerationShard.Status.DONE, 1)}
        )

    broker.stop()
    api = coordinator_client.post(reverse("api:job_retry_failed", args=[study.pk, job.pk]))
    assert api.status_code == 503 and "no item was queued again" in api.json()["detail"]
    assert unchanged()

    broker.start()
    with pytest.raises(jobs.QueueUnavailable, match="no item was queued again"):  # noqa: SIM117
        with transaction.atomic():
            jobs.job_retry_failed(job=job)
            broker.stop()
    assert unchanged()

    broker.start()
    retried = coordinator_client.post(reverse("api:job_retry_failed", args=[study.pk, job.pk]))
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert queued_tasks(broker) == 1
