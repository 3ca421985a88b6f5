"""Real Celery worker processes for integration tests, each on a queue of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def worker_database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_for(condition: Callable[[], bool], *, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def start_worker(
    log_path: Path,
    *,
    queue: str,
    var_dir: Path,
    concurrency: int = 1,
    beat: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """A prefork worker (plus an embedded beat when asked) in a process group of its own."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "--app=clinic_eval",
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        f"--queues={queue}",
        f"--hostname={queue}-{log_path.stem}@%h",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if beat:
        command += ["--beat", f"--schedule={var_dir / 'beat-schedule'}"]
    full_env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "CELERY_GPU_QUEUE": queue,
        "DATABASE_CONN_MAX_AGE": "0",
        "VAR_DIR": str(var_dir),
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    log = log_path.open("w")
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # pool children a killed parent left
        os.killpg(process.pid, signal.SIGKILL)
