"""PostgreSQL, Redis and gunicorn instances owned by one test, for fault tests.

The shared services on 5432 and 6379 serve everyone on the machine, so a test that needs to
stop or restart one starts a private copy on a free port and removes it afterwards. PostgreSQL's
tools refuse to run as root, so the cluster runs as the ``postgres`` OS user in a directory that
user owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.production import gunicorn_arguments

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
# Readiness waits are generous: the machine is shared and may be busy.
READY_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(condition: object, what: str, timeout: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def _as_postgres(*command: str, timeout: float = READY_SECONDS) -> str:
    done = subprocess.run(
        ["runuser", "-u", PG_USER, "--", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


class PrivatePostgres:
    """A throwaway cluster: trust auth, no fsync, sockets inside its own directory."""

    def __init__(self, database: str = "clinic_eval") -> None:
        self.port = free_port()
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="private-pg-"))
        shutil.chown(self.root, PG_USER, PG_USER)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _ctl(self, *args: str) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args)

    def init(self) -> None:
        _as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.start()
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._ctl("-l", str(self.log), "-o", options, "-w", "-t", str(READY_SECONDS), "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session at once, as a restart or failover does."""
        self._ctl("-m", mode, "-w", "-t", str(READY_SECONDS), "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self) -> psycopg.Connection:
        """A connection of the test's own, in autocommit: every query sees the latest rows."""
        return psycopg.connect(self.url.replace("postgres://", "postgresql://", 1), autocommit=True)

    def query(self, sql: str, *params: object) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.destroy()


class PrivateRedis:
    """A redis-server that keeps nothing on disk; ``stop`` makes the broker unreachable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="private-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=(self.root / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait(lambda: port_open(self.port), "redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None
        _wait(lambda: not port_open(self.port), "redis-server shutdown", timeout=30)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# --- The application against a private database -------------------------------------------


def app_environment(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """Production-like settings (DEBUG off), over plain HTTP on 127.0.0.1."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "clinic_eval.settings",
        "DEBUG": "0",
        "SECRET_KEY": "fault-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF",
        "SECURE_COOKIES": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/12",
        "VAR_DIR": str(var_dir),
        **extra,
    }


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


SET_PASSWORD = """
from clinic_eval.models import User
user = User.objects.get(username={username!r})
user.set_password({password!r})
user.save(update_fields=["password"])
"""


@dataclass
class SeededStudy:
    study: str  # the public id
    tokens: dict[str, str]  # username -> API token


def seed_open_study(
    env: dict[str, str], directory: Path, *, raters: int, cases: int
) -> SeededStudy:
    """An open pairwise study with an API token a rater (``manage.py seed_load_study``)."""
    tokens_file = directory / "tokens.json"
    manage(
        env,
        "seed_load_study",
        f"--raters={raters}",
        f"--cases={cases}",
        "--raters-per-item=2",
        f"--tokens-file={tokens_file}",
    )
    seeded = json.loads(tokens_file.read_text())
    return SeededStudy(study=seeded["study"], tokens=seeded["tokens"])


def password_set(env: dict[str, str], username: str, password: str) -> None:
    """The seeded accounts sign in with tokens only; one that uses the pages needs a password."""
    manage(env, "shell", "-c", SET_PASSWORD.format(username=username, password=password))


class Gunicorn:
    """gunicorn on a free port; ``as_dockerfile`` runs the web image's own command line."""

    def __init__(
        self, env: dict[str, str], log: Path, workers: int = 2, *, as_dockerfile: bool = False
    ) -> None:
        self.port = free_port()
        self.log = log
        arguments = (
            gunicorn_arguments(self.port)
            if as_dockerfile
            else [
                "clinic_eval.wsgi",
                f"--workers={workers}",
                f"--bind=127.0.0.1:{self.port}",
                "--timeout=60",
                "--graceful-timeout=5",
            ]
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *arguments],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            return port_open(self.port)

        _wait(ready, "gunicorn")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], log: Path, workers: int = 2, *, as_dockerfile: bool = False
) -> Iterator[Gunicorn]:
    server = Gunicorn(env, log, workers, as_dockerfile=as_dockerfile)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
