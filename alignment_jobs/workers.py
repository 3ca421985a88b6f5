"""Who consumes which queue, and what each worker can load: asked of the workers themselves
(Celery's remote control), for the job page, the API, `generate --wait` and `doctor`."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery.worker.control import inspect_command
from django.conf import settings
from django.core.cache import cache

from alignment_jobs.engines import EngineError, available_engine
from clinic_eval.celery import app


@dataclass(frozen=True)
class QueueHealth:
    queue: str
    workers: list[str] = field(default_factory=list)  # live consumers, by node name
    waiting: int | None = None  # messages not yet taken; None when the broker cannot say
    problem: str = ""  # why the workers or the broker could not be asked

    @property
    def consumed(self) -> bool:
        return bool(self.workers)


def start_command(queue: str) -> str:
    """How to start a worker for ``queue``, as the README and compose do."""
    if queue == settings.CELERY_GPU_QUEUE:
        return f"celery --app=clinic_eval worker --queues={queue} --pool=solo --concurrency=1"
    return f"celery --app=clinic_eval worker --queues={queue} --beat"


def _waiting(queue: str) -> int | None:
    try:
        with app.connection_for_read() as connection:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count)
    except Exception:  # the queue was never declared (nothing sent yet), or no broker
        return None


def queue_health_cached(queue: str, *, timeout: float = 1.0) -> QueueHealth:
    """``queue_health`` of one queue, asked at most every ``WORKER_CHECK_CACHE_SECONDS``: pages
    that poll every second must not each wait for the workers' answers."""
    key = f"workers:queue:{queue}"
    found = cache.get(key)
    if found is None:
        found = queue_health([queue], timeout=timeout)[queue]
        cache.set(key, found, settings.WORKER_CHECK_CACHE_SECONDS)
    return found


def queue_health(queues: Sequence[str], *, timeout: float = 2.0) -> dict[str, QueueHealth]:
    """Per queue: the workers that answered a remote-control ping within ``timeout`` seconds
    and consume it, and how many messages wait in it."""
    try:
        answers = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # the broker does not answer
        problem = f"could not ask the workers: {exc}"
        return {queue: QueueHealth(queue, problem=problem) for queue in queues}
    consumers: dict[str, list[str]] = {queue: [] for queue in queues}
    for worker, entries in sorted(answers.items()):
        for entry in entries or []:
            if entry.get("name") in consumers:
                consumers[entry["name"]].append(worker)
    return {queue: QueueHealth(queue, consumers[queue], _waiting(queue)) for queue in queues}


def engine_capabilities() -> dict[str, Any]:
    """What this process can load: the engine packages installed and the one jobs get."""
    found = {name: importlib.util.find_spec(name) is not None for name in ("vllm", "transformers")}
    try:
        default = available_engine("auto")
    except EngineError as exc:
        default = f"none ({exc})"
    return {**found, "default": default, "model_roots": list(settings.MODEL_ROOTS)}


@inspect_command()  # type: ignore[misc]
def engines(state: Any) -> dict[str, Any]:
    """``celery inspect engines``: each worker says which engines it can load."""
    return engine_capabilities()


def worker_engines(*, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
    """Per live worker, its ``engine_capabilities``; empty when none answered."""
    replies = app.control.broadcast("engines", reply=True, timeout=timeout) or []
    return {worker: reply for answer in replies for worker, reply in answer.items()}
