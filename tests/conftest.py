from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from alignment_jobs.demo.tiny_models import TinyModelSet
from clinic_eval.celery import app as celery_app
from clinic_eval.models import Study, User
from tests.support.factories import StudyFactory, UserFactory

# schemathesis (the fuzz tests) probes for Flask by importing it, and Flask is installed as
# locust's dependency. Flask's request globals would then sit in sys.modules, where vLLM's scan
# of every module for Triton kernels (vllm/triton_utils/dispatcher.py) touches them and fails any
# later vLLM load in this process with "Working outside of application context". Nothing in this
# process is a Flask app, so the probe is simply told Flask is absent.
sys.modules.setdefault("flask", None)  # type: ignore[arg-type]

PASSWORD = "a-long-test-password-1"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=3):
            return True
    except OSError:
        return False


# tests/unit touches no database, broker or browser: it runs on a laptop with nothing started
# (``pytest tests/unit``). Everything else needs the real services.
SERVICE_FREE = Path(__file__).resolve().parent / "unit"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run the suite half-way: it needs real PostgreSQL and Redis (see README)."""
    if session.items and all(item.path.is_relative_to(SERVICE_FREE) for item in session.items):
        return
    database_url = os.environ.get("DATABASE_URL", "")
    broker_url = os.environ.get("CELERY_BROKER_URL", "")
    problems = []
    if not database_url.startswith(("postgres://", "postgresql://")):
        problems.append("DATABASE_URL must point at PostgreSQL (make test sets it)")
    elif not _reachable(database_url, 5432):
        problems.append(f"PostgreSQL is not reachable at {database_url}")
    if not broker_url.startswith("redis://"):
        problems.append("CELERY_BROKER_URL must point at Redis (make test sets it)")
    elif not _reachable(broker_url, 6379):
        problems.append(f"Redis is not reachable at {broker_url}")
    if problems:
        pytest.exit("Test services missing: " + "; ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Settings) -> None:
    # PBKDF2's deliberate slowness would dominate the suite; hashing itself is Django's to test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _celery_runs_tasks_in_process() -> Iterator[None]:
    """Unit tests run tasks inline; tests/imports/test_worker.py runs a real worker instead."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def coordinator(db: None) -> User:
    return UserFactory(username="coord", role="coordinator", password=PASSWORD)


@pytest.fixture
def other_coordinator(db: None) -> User:
    return UserFactory(username="coord-elsewhere", role="coordinator", password=PASSWORD)


@pytest.fixture
def physician(db: None) -> User:
    return UserFactory(username="dr-01", role="physician", password=PASSWORD)


@pytest.fixture
def other_physician(db: None) -> User:
    return UserFactory(username="dr-02", role="physician", password=PASSWORD)


@pytest.fixture
def study(coordinator: User) -> Study:
    return StudyFactory(created_by=coordinator, coordinators=[coordinator])


@pytest.fixture
def foreign_study(other_coordinator: User) -> Study:
    return StudyFactory(created_by=other_coordinator, coordinators=[other_coordinator])


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def coordinator_client(coordinator: User) -> Client:
    return logged_in(coordinator)


@pytest.fixture
def physician_client(physician: User) -> Client:
    return logged_in(physician)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelSet:
    """A random-init Llama with three LoRA adapters, built locally once per test run."""
    from alignment_jobs.demo.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def model_roots(settings: Settings, tiny_models: TinyModelSet) -> TinyModelSet:
    settings.MODEL_ROOTS = [str(tiny_models.base.parent)]
    return tiny_models


@pytest.fixture
def rating(coordinator: User, physician: User, other_physician: User) -> Study:
    """An open study that ``physician`` and ``other_physician`` rate."""
    from tests.support.rating_study import open_study

    return open_study(coordinator=coordinator, raters=[physician, other_physician]).study
