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
    return spawn(command, log_path, full_env)


def spawn(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """A process in a group of its own (``stop_worker`` ends it and any children), its output
    in ``log_path``."""
    log = log_path.open("w")
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
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


def stop_workers(processes: list[subprocess.Popen], timeout: float = 30) -> None:
    """``stop_worker`` for several at once: all get their warm shutdown together, then whatever
    is left of each process group is killed."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
