"""The load benchmark in its short form: physicians rating at once through gunicorn store
every accepted judgment exactly once, without a single failed request.

benchmarks/load.py prints the figures; this asserts only behaviour, never timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def _load_database_url() -> str:
    """The benchmark's own database, beside this run's test database, so parallel runs (and
    xdist workers) each drop and create only their own."""
    name = f"test_{settings.DATABASES['default']['NAME']}_load"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        name += f"_{worker}"
    return urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}"))


@pytest.mark.slow
def test_concurrent_physicians_store_each_accepted_judgment_exactly_once(tmp_path: Path) -> None:
    report_path = tmp_path / "load.json"
    command = [
        sys.executable,
        "benchmarks/load.py",
        "--users=8",
        "--duration=6",
        "--trivial-duration=2",
        f"--database-url={_load_database_url()}",
        f"--json-out={report_path}",
    ]
    env = os.environ | {"LOAD_BROKER_URL": os.environ["CELERY_BROKER_URL"]}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["errors"] == 0
    assert report["judgments_accepted"] > 0
    assert report["rating"]["judgment"]["requests"] >= report["judgments_accepted"]
    failed = [check for check in report["verification"]["checks"] if not check["passed"]]
    assert not failed and report["verification"]["passed"]
