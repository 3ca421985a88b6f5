"""Queues of their own for each test, and a real worker consuming the default one."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from alignment_jobs import workers as queue_workers
from tests.support.workers import start_worker, stop_worker, wait_for


@pytest.fixture
def queues(settings: Settings, tmp_path: Path) -> tuple[str, str]:
    """The default and GPU queues renamed for this test, so other tests' workers do not count."""
    default, gpu = (f"doctor-{uuid.uuid4().hex[:8]}" for _ in range(2))
    settings.CELERY_TASK_DEFAULT_QUEUE = default
    settings.CELERY_GPU_QUEUE = gpu
    settings.MODEL_ROOTS = [str(tmp_path)]
    return default, gpu


def _worker_on(queue: str, tmp_path: Path) -> subprocess.Popen:
    process = start_worker(tmp_path / f"{queue}.log", queue=queue, var_dir=tmp_path)
    answered = wait_for(
        lambda: queue_workers.queue_health([queue], timeout=1)[queue].consumed, timeout=60
    )
    if not answered:
        stop_worker(process)
        raise AssertionError((tmp_path / f"{queue}.log").read_text()[-2000:])
    return process


@pytest.fixture
def worker(queues: tuple[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A real worker consuming the default queue."""
    process = _worker_on(queues[0], tmp_path)
    yield process
    stop_worker(process)


@pytest.fixture
def gpu_worker(queues: tuple[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A real worker consuming the GPU queue (it runs no shard in these tests)."""
    process = _worker_on(queues[1], tmp_path)
    yield process
    stop_worker(process)
