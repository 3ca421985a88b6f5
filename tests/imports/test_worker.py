"""A real Celery worker process, fed through Redis, writing to the PostgreSQL test database."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clinic_eval import synthetic
from clinic_eval.celery import app
from clinic_eval.imports import services
from clinic_eval.models import DataImport, Study, User
from tests.support.factories import StudyFactory
from tests.support.workers import children_of, start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A prefork worker with one child, on a queue of its own so nothing else interferes."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    process = start_worker(tmp_path / "worker.log", queue=queue, var_dir=tmp_path)
    app.conf.task_always_eager = False
    previous_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        yield process
    finally:
        app.conf.task_default_queue = previous_queue
        stop_worker(process)
        with app.connection_for_write() as broker:
            broker.default_channel.queue_delete(queue)


def submit(study: Study, user: User, rows: list[dict]) -> DataImport:
    return services.data_import_submit(
        study=study,
        kind="cases",
        filename="cases.jsonl",
        content=synthetic.dumps_jsonl(rows).encode(),
        created_by=user,
    )


def status_of(data_import: DataImport) -> str:
    return DataImport.objects.values_list("status", flat=True).get(pk=data_import.pk)


def test_a_queued_import_is_applied_by_a_real_worker(
    worker: subprocess.Popen, tmp_path: Path
) -> None:
    user = User.objects.create(username="c", role=User.Role.COORDINATOR)
    study = StudyFactory(created_by=user)
    data_import = submit(study, user, synthetic.generate_cases(n=50, seed=3))
    finished = wait_for(lambda: status_of(data_import) == "succeeded", timeout=60)
    assert finished, (tmp_path / "worker.log").read_text()[-3000:]
    assert study.cases.count() == 50


def test_a_worker_killed_mid_import_loses_nothing_and_duplicates_nothing(
    worker: subprocess.Popen, tmp_path: Path
) -> None:
    user = User.objects.create(username="c", role=User.Role.COORDINATOR)
    study = StudyFactory(created_by=user)
    data_import = submit(study, user, synthetic.generate_cases(n=8000, seed=4))

    assert wait_for(lambda: status_of(data_import) == "running", timeout=60, poll=0.01), (
        tmp_path / "worker.log"
    ).read_text()[-3000:]
    pool_children = children_of(worker.pid)
    assert len(pool_children) == 1
    os.kill(pool_children[0], signal.SIGKILL)

    finished = wait_for(lambda: status_of(data_import) == "succeeded", timeout=120)
    log = (tmp_path / "worker.log").read_text()
    assert finished, log[-3000:]
    assert "WorkerLostError" in log or "signal 9" in log, "the child really died mid-task"
    data_import.refresh_from_db()
    assert data_import.attempts == 2, "the redelivered task ran the import a second time"
    assert study.cases.count() == 8000
    assert study.cases.values("external_id").distinct().count() == 8000
