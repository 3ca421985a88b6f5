"""A study's whole life on the production process layout, with no container engine.

The processes are those of docker-compose.yml, with their command lines read from it and from
the Dockerfile: gunicorn as the web image's CMD (3 workers), the CPU worker (queue ``celery``,
``--beat``) and two GPU workers (queue ``gpu``, ``--pool=solo``, one node name each as
docs/deployment.md runs one per GPU) on the transformers engine and tiny local models, against
a private PostgreSQL and Redis. Settings are compose's with an empty .env plus the README's
production .env: ``DEBUG=0``, a random 50+ character secret, secure cookies, the HTTPS redirect
and ``BEHIND_TLS_PROXY=1``; the client speaks to gunicorn as the TLS proxy would (plain HTTP
with ``X-Forwarded-Proto: https``). Static files are collected into a manifest as the image
build does (less the admin's and the API docs' bundles). Only the stale-shard timings are
shortened (heartbeat 1 s, stale after 15 s, sweep every second) and shards hold two items, so
a killed worker's shard moves on within seconds.

Through HTTP, as a coordinator and two physicians would use it: API token sign-in, the study,
the case import (checked by the CPU worker), the model arms and their generation settings, the
job launch and its progress, then the pages: approving any response the leak check held, the
design form, opening and closing the study; one physician rates through the rater API, the
other through the rating pages; the export zip and the report come over HTTP.

Through commands, where nothing else exists: ``migrate`` and ``collectstatic`` (compose's
migrate service, the image build), ``create_user`` (accounts), and ``study_report
--from-export`` (the offline check of an export). The test reads the database directly to
check what no page shows (which worker holds which shard, that every item is stored once) and
for two lists a person would read off a page: the held responses and the raters' ids.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from alignment_jobs.demo.tiny_models import TinyModelSet
from clinic_eval import synthetic
from clinic_eval.config import default_rubric
from clinic_eval.results.page import results_context
from tests.support.private_services import (
    PrivatePostgres,
    gunicorn,
    manage,
    private_postgres,
    private_redis,
)
from tests.support.production import compose_command, compose_environment, proxied_session
from tests.support.rating_study import full_answer
from tests.support.workers import spawn, stop_workers, wait_for

pytestmark = pytest.mark.slow

CASES = 6
ARMS = {"GRPO": "grpo", "SFT": "sft"}  # label -> tiny adapter
SHARD_SIZE = 2  # 6 cases x 2 arms: 6 shards of 2 items, about 3 per GPU worker
ITEMS = CASES * len(ARMS)
GPU_NODES = ("gpu0", "gpu1")
USERS = {"lead": "coordinator", "dr-api": "physician", "dr-page": "physician"}
# A killed worker's shard is handed on within seconds; a live one on a loaded CI machine (the
# engine load takes ~20 s of CPU beside the other workers) keeps a margin of many heartbeats.
FAST_SWEEP = {
    "GENERATION_SHARD_SIZE": str(SHARD_SIZE),
    "GENERATION_HEARTBEAT_SECONDS": "1",
    "GENERATION_STALE_SECONDS": "15",
    "GENERATION_SWEEP_SECONDS": "1",
    "GENERATION_RETRY_SECONDS": "1",
}
TIMEOUT = 30  # one HTTP request


@dataclass
class Deployment:
    url: str
    database: PrivatePostgres
    env: dict[str, str]
    logs: Path
    passwords: dict[str, str]
    gpu: dict[str, subprocess.Popen]  # by the name a shard records of its worker

    def tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
            for log in sorted(self.logs.glob("*.log"))
        )


def production_environment(
    database_url: str, broker_url: str, var_dir: Path, models: TinyModelSet
) -> dict[str, str]:
    inherited = {name: os.environ[name] for name in ("PATH", "LANG") if name in os.environ}
    (var_dir / "home").mkdir()
    return {
        **inherited,
        "HOME": str(var_dir / "home"),  # as each container has its own (gunicorn keeps a socket)
        "PYTHONUNBUFFERED": "1",  # as the Dockerfile sets
        **compose_environment("web"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CACHE_URL": broker_url.rsplit("/", 1)[0] + "/1",
        "MODEL_ROOTS": str(models.base.parent),
        "VAR_DIR": str(var_dir),
        "STATIC_ROOT": str(var_dir / "staticfiles"),
        "STATIC_MANIFEST": "1",
        "BEHIND_TLS_PROXY": "1",
        **FAST_SWEEP,
    }


def prepare(env: dict[str, str]) -> None:
    """Compose's migrate service and the Dockerfile's collectstatic step (less the admin's and
    the API docs' 35 MB: no page here loads them, and compressing them takes minutes)."""
    build = {**env, "DEBUG": "1"}
    ignored = ("--ignore=admin", "--ignore=rest_framework", "--ignore=drf_spectacular_sidecar")
    commands = [(env, "migrate", "--noinput"), (build, "collectstatic", "--noinput", *ignored)]
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda command: manage(*command), commands))


def create_users(env: dict[str, str]) -> dict[str, str]:
    """``create_user`` for every account, side by side; the passwords it generated."""
    with ThreadPoolExecutor() as pool:
        outputs = pool.map(
            lambda name: manage(env, "create_user", name, "--role", USERS[name]), USERS
        )
        found = [re.search(r"password: (\S+)", output) for output in outputs]
    return {name: password[1] for name, password in zip(USERS, found, strict=True) if password}


def start_workers(
    env: dict[str, str], var_dir: Path, logs: Path, processes: list[subprocess.Popen]
) -> dict[str, subprocess.Popen]:
    """Compose's CPU worker (with the beat) and two of its GPU workers, one node name each."""
    cpu = compose_command("worker-cpu", var_dir=var_dir)
    processes.append(spawn(cpu, logs / "worker-cpu.log", env))
    web_only = set(compose_environment("web"))
    gpu_env = {
        **env,
        **{k: v for k, v in compose_environment("worker-gpu").items() if k not in web_only},
        "OMP_NUM_THREADS": "1",  # two "GPU" workers share this machine's two cores
    }
    gpu = {}
    for node in GPU_NODES:
        command = compose_command("worker-gpu", var_dir=var_dir, extra=("-n", f"{node}@%h"))
        processes.append(spawn(command, logs / f"worker-{node}.log", gpu_env))
        gpu[f"{socket.gethostname()}:{processes[-1].pid}"] = processes[-1]  # a shard's worker
    return gpu


@pytest.fixture
def deployment(tmp_path: Path, tiny_models: TinyModelSet) -> Iterator[Deployment]:
    logs, var_dir = tmp_path / "logs", tmp_path / "var"
    logs.mkdir()
    var_dir.mkdir()
    processes: list[subprocess.Popen] = []
    with private_postgres() as database, private_redis() as broker:
        env = production_environment(database.url, broker.url, var_dir, tiny_models)
        prepare(env)
        try:
            with gunicorn(env, logs / "web.log", as_dockerfile=True) as web:
                gpu = start_workers(env, var_dir, logs, processes)
                deployed = Deployment(web.url, database, env, logs, create_users(env), gpu)
                nodes = [*GPU_NODES, "celery"]
                up = wait_for(
                    lambda: all(
                        re.search(rf"{n}@\S* ready\.", deployed.tails(10**6)) for n in nodes
                    ),
                    timeout=120,
                    poll=0.5,
                )
                assert up and len(deployed.passwords) == len(USERS), deployed.tails()
                yield deployed
        finally:
            stop_workers(processes)


# --- Clients ---------------------------------------------------------------------------------


def api_client(url: str, username: str, password: str) -> requests.Session:
    client = proxied_session(url)
    token = client.post(
        f"{url}/api/auth/token/", json={"username": username, "password": password}, timeout=TIMEOUT
    )
    assert token.status_code == 200, token.text
    client.headers["Authorization"] = f"Token {token.json()['token']}"
    return client


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, html[:500]
    return found[1]


def page_client(url: str, username: str, password: str) -> requests.Session:
    browser = proxied_session(url)
    login = browser.get(f"{url}/accounts/login/", timeout=TIMEOUT)
    signed_in = browser.post(
        f"{url}/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": csrf_token(login.text),
        },
        timeout=TIMEOUT,
    )
    assert signed_in.status_code == 200 and "/accounts/login/" not in signed_in.url
    return browser


def submit(browser: requests.Session, url: str, data: dict[str, Any]) -> requests.Response:
    """A form post from a page the browser has open: the CSRF token comes from its cookie."""
    token = browser.cookies["csrftoken"]
    sent = browser.post(url, data={**data, "csrfmiddlewaretoken": token}, timeout=TIMEOUT)
    assert sent.status_code == 200, f"{url}: {sent.status_code}\n{sent.text[:2000]}"
    return sent


def wait_json(
    client: requests.Session, url: str, done: Callable[[dict], Any], timeout: float
) -> dict:
    """Poll a JSON resource, as a client watching a job would, until ``done`` says so."""
    seen: dict = {}

    def finished() -> bool:
        nonlocal seen
        seen = client.get(url, timeout=TIMEOUT).json()
        return bool(done(seen))

    assert wait_for(finished, timeout=timeout, poll=0.5), seen
    return seen


# --- Steps -----------------------------------------------------------------------------------


def set_up_study(api: requests.Session, url: str, models: TinyModelSet) -> int:
    """Study, cases (a file the CPU worker checks and imports), model arms and their settings."""
    created = api.post(f"{url}/api/studies/", json={"title": "Lifecycle"}, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    base = f"{url}/api/studies/{study_id}"
    keep = ("case_id", "stratum", "narrative", "fields", "ground_truth")
    rows = [{k: row[k] for k in keep} for row in synthetic.generate_cases(n=CASES, seed=17)]
    cases = "".join(json.dumps(row) + "\n" for row in rows).encode()
    queued = api.post(f"{base}/imports/", files={"file": ("cases.jsonl", cases)}, timeout=TIMEOUT)
    assert queued.status_code == 202, queued.text
    imported = wait_json(
        api, f"{base}/imports/{queued.json()['id']}/", lambda i: i["finished_at"], timeout=60
    )
    assert (imported["status"], imported["row_count"]) == ("succeeded", CASES), imported
    for label, adapter in ARMS.items():
        arm = api.post(f"{base}/arms/", json={"label": label, "kind": "model"}, timeout=TIMEOUT)
        assert arm.status_code == 201, arm.text
        spec: dict[str, Any] = {
            "base_model_path": str(models.base),
            "adapter_path": str(models.adapters[adapter]),
            "temperature": 0.8,
            "max_tokens": 96,
            "seed": 7,
        }
        saved = api.put(f"{base}/arms/{arm.json()['id']}/generation/", json=spec, timeout=TIMEOUT)
        assert saved.status_code == 200, saved.text
    return study_id


def kill_a_gpu_worker_mid_shard(deployed: Deployment, job_id: int) -> tuple[str, list[int]]:
    """SIGKILL the first GPU worker seen holding a running shard after it finished one; returns
    its name and the shards it held."""
    query = "SELECT id, worker, status FROM alignment_jobs_generationshard WHERE job_id = %s"
    victim: list[str] = []
    with deployed.database.connect() as watch:  # one connection for 50 looks a second

        def one_done_one_running() -> bool:
            shards = watch.execute(query, (job_id,)).fetchall()
            for name in deployed.gpu:
                statuses = {status for _, worker, status in shards if worker == name}
                if {"done", "running"} <= statuses:
                    os.killpg(deployed.gpu[name].pid, signal.SIGKILL)
                    victim.append(name)
                    return True
            return False

        assert wait_for(one_done_one_running, timeout=150, poll=0.02), deployed.tails()
        (name,) = victim
        deployed.gpu[name].wait(timeout=10)
        shards = watch.execute(query, (job_id,)).fetchall()
    held = [pk for pk, worker, status in shards if worker == name and status == "running"]
    assert held, "the worker was killed between two shards, not in one"
    return name, held


def rate_through_the_api(url: str, password: str) -> int:
    rater = api_client(url, "dr-api", password)
    (study,) = rater.get(f"{url}/api/rate/studies/", timeout=TIMEOUT).json()
    rated = 0
    while True:
        given = rater.post(f"{url}/api/rate/studies/{study['public_id']}/next/", timeout=TIMEOUT)
        if given.status_code == 204:
            return rated
        assert given.status_code == 200, given.text
        item = rater.get(
            f"{url}/api/rate/items/{given.json()['public_id']}/", timeout=TIMEOUT
        ).json()
        answer = {
            "preference": item["choices"][rated % 2],
            "rationale": "Clearer plan.",
            "revision": 0,
            "ratings": [
                {
                    "position": shown["position"],
                    "scores": {"reasoning_clarity": 2 + rated % 3, "treatment_feasibility": 3},
                    "hallucination": "none",
                }
                for shown in item["responses"]
            ],
        }
        stored = rater.put(
            f"{url}/api/rate/items/{item['public_id']}/judgment/", json=answer, timeout=TIMEOUT
        )
        assert stored.status_code == 201, stored.text
        rated += 1


def rate_through_the_pages(url: str, password: str) -> int:
    browser = page_client(url, "dr-page", password)
    home = browser.get(f"{url}/rate/", timeout=TIMEOUT).text
    start = re.search(r'action="(/rate/studies/[^"/]+/next/)"', home)
    assert start, home[:2000]
    page = submit(browser, url + start[1], {})
    rated = 0
    while "/rated/" not in page.url:
        assert "/rate/items/" in page.url, page.url
        revision = re.search(r'name="revision" value="(\d+)"', page.text)
        assert revision, page.text[:2000]
        answer = full_answer(preference="AB"[rated % 2]) | {
            "revision": revision[1],
            "csrfmiddlewaretoken": csrf_token(page.text),
        }
        page = browser.post(page.url, data=answer, timeout=TIMEOUT)
        assert page.status_code == 200, page.text[:2000]
        rated += 1
    return rated


def results_page_figures(html: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The counts and, per arm, the win-rate cell of the results page."""
    counts = {
        name: int(value)
        for name, value in re.findall(r"<dt>([^<]+)</dt><dd>(\d+)</dd>", html)
        if name in {"Judgments", "Likert ratings", "Raters", "Cases"}
    }
    headline = html.split('id="headline"', 1)[1].split("</section>", 1)[0]
    rows = re.findall(r'<th scope="row">([^<]+)</th>\s*<td class="num">(.*?)</td>', headline, re.S)
    return counts, rows


# --- The test --------------------------------------------------------------------------------


def test_a_study_lives_its_whole_life_on_the_production_process_layout(
    deployment: Deployment, tiny_models: TinyModelSet, tmp_path: Path
) -> None:
    url, db = deployment.url, deployment.database
    assert requests.get(f"{url}/healthz", timeout=TIMEOUT).status_code == 200
    plain = requests.get(f"{url}/accounts/login/", allow_redirects=False, timeout=TIMEOUT)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")

    # A coordinator sets up the study and launches generation over the API.
    api = api_client(url, "lead", deployment.passwords["lead"])
    study_id = set_up_study(api, url, tiny_models)
    base = f"{url}/api/studies/{study_id}"
    launched = api.post(f"{base}/jobs/", json={"engine": "transformers"}, timeout=TIMEOUT)
    assert launched.status_code == 201, launched.text
    job = launched.json()
    assert job["item_count"] == ITEMS and job["shard_size"] == SHARD_SIZE

    # One GPU worker dies mid-shard; the beat's sweep hands its shard to the other.
    killed, held = kill_a_gpu_worker_mid_shard(deployment, job["id"])
    finished = wait_json(api, f"{base}/jobs/{job['id']}/", lambda j: j["finished_at"], timeout=180)
    assert finished["status"] == "succeeded", (finished, deployment.tails())
    assert (finished["done"], finished["failed"]) == (ITEMS, 0)
    (survivor,) = set(deployment.gpu) - {killed}
    shards = db.query(
        "SELECT id, worker, status, attempts FROM alignment_jobs_generationshard WHERE job_id = %s",
        job["id"],
    )
    assert len(shards) == ITEMS // SHARD_SIZE and {s[2] for s in shards} == {"done"}
    for pk, worker, _, attempts in shards:
        if pk in held:
            assert (worker, attempts) == (survivor, 2), "the survivor finished the killed shard"
    finished_by = {worker for _, worker, _, _ in shards}
    assert finished_by == {killed, survivor}, "both GPU workers finished shards"
    sweeps = re.findall(
        r"requeued \d+ shard\(s\) whose worker went silent: \[([\d, ]+)\]",
        (deployment.logs / "worker-cpu.log").read_text(),
    )
    requeued = {int(pk) for found in sweeps for pk in found.split(",")}
    assert set(held) <= requeued, "the beat's sweep requeued the killed worker's shard"
    # Every (case, arm, sample) stored exactly once: nothing lost, nothing duplicated.
    stored = db.query(
        "SELECT r.case_id, r.arm_id, r.sample_index, count(*) FROM clinic_eval_response r "
        "JOIN clinic_eval_arm a ON a.id = r.arm_id WHERE a.study_id = %s "
        "GROUP BY r.case_id, r.arm_id, r.sample_index",
        study_id,
    )
    assert len(stored) == ITEMS and {row[3] for row in stored} == {1}
    items = db.query(
        "SELECT status, count(*) FROM alignment_jobs_generationitem WHERE job_id = %s "
        "GROUP BY status",
        job["id"],
    )
    assert items == [("done", ITEMS)]

    # On the pages: approve what the leak check held, set the design, open the study.
    pages = page_client(url, "lead", deployment.passwords["lead"])
    coordinator = f"{url}/coordinator/studies/{study_id}"
    held_back = db.query(
        "SELECT r.id FROM clinic_eval_response r JOIN clinic_eval_arm a ON a.id = r.arm_id "
        "WHERE a.study_id = %s AND r.review = 'held'",
        study_id,
    )
    for (response_id,) in held_back:
        submit(pages, f"{coordinator}/responses/{response_id}/review/", {"decision": "approved"})
    raters = db.query(
        "SELECT id FROM clinic_eval_user WHERE username IN ('dr-api', 'dr-page') ORDER BY id"
    )
    assert pages.get(f"{coordinator}/design/", timeout=TIMEOUT).status_code == 200
    design = {
        "mode": "pairwise",
        "pairs": ["GRPO | SFT"],
        "allow_tie": "on",
        "raters_per_item": "2",
        "repeat_percent": "0",
        "idle_timeout_minutes": "30",
        "raters": [str(pk) for (pk,) in raters],
        "rubric": json.dumps(default_rubric()),
        "primary_kind": "preference",
        "primary_arm_a": "SFT",
        "primary_arm_b": "GRPO",
        "tests": ["sign"],
        "alpha": "0.05",
        "correction": "holm",
    }
    saved = submit(pages, f"{coordinator}/design/", design)
    assert "Design saved" in saved.text, saved.text[:3000]
    for status in ("ready", "open"):
        submit(pages, f"{coordinator}/status/", {"to_status": status})
        assert api.get(base + "/", timeout=TIMEOUT).json()["status"] == status

    # Two physicians rate every item: one through the rater API, one through the pages.
    assert rate_through_the_api(url, deployment.passwords["dr-api"]) == CASES
    assert rate_through_the_pages(url, deployment.passwords["dr-page"]) == CASES
    submit(pages, f"{coordinator}/status/", {"to_status": "closed"})
    assert api.get(base + "/", timeout=TIMEOUT).json()["status"] == "closed"

    # The export, the offline report of it, the server's report and the results page agree.
    export = api.get(f"{base}/export/", timeout=120)
    assert export.status_code == 200 and export.headers["Content-Type"] == "application/zip"
    archive = tmp_path / "export.zip"
    archive.write_bytes(export.content)
    offline = manage(
        deployment.env, "study_report", "--from-export", str(archive), "--format", "json"
    )
    from_export = json.loads(offline)
    assert from_export["counts"]["judgments"] == 2 * CASES
    assert from_export["study"]["status"] == "closed"
    in_zip = zipfile.ZipFile(archive).read("report.json").decode()
    from_database = api.get(f"{base}/report/", timeout=120).text
    assert in_zip.strip() == offline.strip() == from_database.strip(), "byte for byte"
    results = pages.get(f"{coordinator}/results/", timeout=120)
    assert results.status_code == 200
    shown_counts, shown_rows = results_page_figures(results.text)
    expected = results_context(from_export, None, interim=False, primary_label="")
    assert shown_counts == {
        "Judgments": expected["counts"]["judgments"],
        "Likert ratings": expected["counts"]["ratings"],
        "Raters": expected["counts"]["raters"],
        "Cases": expected["counts"]["cases"],
    }
    assert shown_rows == [
        (row["arm"], str(row["win_rate"].html) if row["win_rate"] else "—")
        for row in expected["headline"]["rows"]
    ]
    assert not re.search(r'" 5\d\d ', (deployment.logs / "web.log").read_text()), "a server error"
