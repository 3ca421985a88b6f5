"""``manage.py doctor``: is this installation able to run a study, and if not, what to do."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from django.conf import settings
from django.core import checks as django_checks
from django.core.cache import cache
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from alignment_jobs import workers
from alignment_jobs.generation import specs
from alignment_jobs.models import GenerationSpec
from clinic_eval.celery import app
from clinic_eval.errors import DomainError
from clinic_eval.models import Study

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<5} {self.check:<12} {self.detail}"
        return f"{text}; {self.fix}" if self.fix else text


def database() -> Iterator[Finding]:
    try:
        connection.ensure_connection()
    except Exception as exc:
        yield Finding("database", "fail", f"cannot connect: {exc}", "check DATABASE_URL")
        return
    where = f"{connection.vendor} {connection.settings_dict.get('NAME')}"
    executor = MigrationExecutor(connection)
    waiting = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if waiting:
        yield Finding(
            "migrations", "fail", f"{len(waiting)} not applied", "run: python manage.py migrate"
        )
    else:
        yield Finding("database", "ok", f"{where}, every migration applied")


def broker(url: str | None = None) -> Iterator[Finding]:
    url = url or app.conf.broker_url
    try:
        with app.connection_for_write(url=url) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        yield Finding(
            "broker", "fail", f"cannot reach {url}: {exc}", "start Redis or fix CELERY_BROKER_URL"
        )
        return
    yield Finding("broker", "ok", str(url))


def cache_works() -> Iterator[Finding]:
    token = secrets.token_hex(8)
    try:
        cache.set("doctor-check", token, 30)
        back = cache.get("doctor-check")
    except Exception as exc:
        yield Finding(
            "cache", "fail", f"cannot use the cache: {exc}", "start Redis or fix CACHE_URL"
        )
        return
    backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    if back != token:
        yield Finding("cache", "fail", f"{backend} did not keep a value", "check CACHE_URL")
    else:
        yield Finding("cache", "ok", backend)


def queues(*, timeout: float) -> Iterator[Finding]:
    """A live consumer on the default queue is needed for imports and the sweep; one on the
    GPU queue for generation and rubric jobs (their jobs wait until one starts)."""
    default, gpu = settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_GPU_QUEUE
    found = workers.queue_health([default, gpu], timeout=timeout)
    for queue, state in found.items():
        if state.problem:
            yield Finding(f"queue {queue}", "warn", state.problem)
            continue
        waiting = "" if state.waiting is None else f", {state.waiting} waiting"
        if state.consumed:
            yield Finding(
                f"queue {queue}", "ok", f"consumed by {', '.join(state.workers)}{waiting}"
            )
            continue
        yield Finding(
            f"queue {queue}",
            "fail" if queue == default else "warn",
            f"no worker is taking jobs from queue {queue}{waiting}",
            f"start one with: {workers.start_command(queue)}",
        )
    for worker, can in sorted(workers.worker_engines(timeout=timeout).items()):
        installed = [name for name in ("vllm", "transformers") if can.get(name)]
        yield Finding(
            "engines",
            "ok" if installed else "warn",
            f"{worker}: {', '.join(installed) or 'no engine installed'}; "
            f"jobs use {can.get('default')}",
        )


def model_roots() -> Iterator[Finding]:
    if not settings.MODEL_ROOTS:
        yield Finding(
            "models", "fail", "MODEL_ROOTS is empty", "set MODEL_ROOTS to the model directory"
        )
    for root in settings.MODEL_ROOTS:
        path = Path(root)
        if path.is_dir():
            yield Finding("models", "ok", f"{root} is readable here")
        else:
            yield Finding(
                "models",
                "fail",
                f"MODEL_ROOTS entry {root} is not a directory on this machine",
                "mount the model directory (read-only) or fix MODEL_ROOTS",
            )


def _weights_gib(directory: Path) -> float:
    files = [*directory.glob("*.safetensors"), *directory.glob("*.bin")]
    return sum(f.stat().st_size for f in files) / 2**30


def arm_checkpoints() -> Iterator[Finding]:
    """Every generation spec of a study not yet closed: its checkpoint and adapter load here,
    and what its weights need."""
    open_specs = GenerationSpec.objects.exclude(
        arm__study__status=Study.Status.CLOSED
    ).select_related("arm__study")
    for spec in open_specs.order_by("arm__study_id", "arm__label"):
        name = f"study {spec.arm.study_id} arm {spec.arm.label}"
        try:
            specs.spec_check_paths(
                base_model_path=spec.base_model_path, adapter_path=spec.adapter_path
            )
        except DomainError as exc:
            yield Finding(
                "checkpoint", "fail", f"{name}: {exc}", "fix the arm's generation settings"
            )
            continue
        gib = _weights_gib(Path(spec.base_model_path))
        per_gpu = gib / max(1, spec.tensor_parallel_size)
        yield Finding(
            "checkpoint",
            "ok",
            f"{name}: {spec.base_model_path} ({gib:.1f} GiB of weights, about {per_gpu:.1f} GiB "
            f"per GPU over {spec.tensor_parallel_size} before the KV cache)",
        )


def deployment() -> Iterator[Finding]:
    """What ``manage.py check --deploy`` would say."""
    messages = django_checks.run_checks(include_deployment_checks=True)
    flagged = [m for m in messages if m.level >= django_checks.WARNING]
    if not flagged:
        yield Finding("settings", "ok", "check --deploy finds nothing")
    for message in flagged:
        status: Status = "fail" if message.level >= django_checks.ERROR else "warn"
        yield Finding("settings", status, f"{message.id}: {message.msg}", message.hint or "")


def run(*, timeout: float = 2.0) -> list[Finding]:
    steps: list[Callable[[], Iterator[Finding]]] = [
        database,
        broker,
        cache_works,
        lambda: queues(timeout=timeout),
        model_roots,
        arm_checkpoints,
        deployment,
    ]
    return [finding for step in steps for finding in step()]
