"""docker-compose.yml and the Dockerfiles, checked as files (no Docker engine runs on CI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = {"postgres", "redis", "web", "worker-cpu", "worker-gpu"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def queues_of(service: dict) -> set[str]:
    option = next(arg for arg in service["command"] if arg.startswith("--queues="))
    return set(option.removeprefix("--queues=").split(","))


def test_compose_runs_the_documented_services(compose: dict) -> None:
    assert set(compose["services"]) == LONG_RUNNING | {"migrate"}
    for name in LONG_RUNNING:
        assert "healthcheck" in compose["services"][name], f"{name} has no healthcheck"


def test_data_lives_in_named_volumes(compose: dict) -> None:
    services = compose["services"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redisdata:/data" in services["redis"]["volumes"]
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "appdata"}


def test_the_app_waits_for_migrations_and_healthy_services(compose: dict) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker-cpu", "worker-gpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"


def test_workers_split_the_queues_the_settings_route_to(compose: dict) -> None:
    services = compose["services"]
    assert queues_of(services["worker-cpu"]) == {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert queues_of(services["worker-gpu"]) == {"gpu"}
    assert settings.CELERY_TASK_ROUTES["alignment_jobs.*"] == {"queue": "gpu"}


def test_the_gpu_worker_reserves_a_gpu_and_reads_models_offline(compose: dict) -> None:
    gpu = compose["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["environment"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert gpu["environment"]["HF_HUB_OFFLINE"] == "1"
    assert any(volume.endswith(":/models:ro") for volume in gpu["volumes"])
    assert gpu["build"]["dockerfile"] == "docker/gpu-worker.Dockerfile"
    assert "--pool=solo" in gpu["command"] and "--concurrency=1" in gpu["command"]


def test_one_beat_runs_the_stale_shard_sweep_and_every_service_sees_the_models(
    compose: dict,
) -> None:
    services = compose["services"]
    beats = [name for name, service in services.items() if "--beat" in service.get("command", [])]
    assert beats == ["worker-cpu"], "exactly one beat, or the sweep would run twice as often"
    assert "requeue-stale-shards" in settings.CELERY_BEAT_SCHEDULE
    for name in ("web", "worker-cpu", "worker-gpu"):
        assert services[name]["environment"]["MODEL_ROOTS"] == "/models"
        assert any(volume.endswith(":/models:ro") for volume in services[name]["volumes"])


def test_no_secret_has_a_default(compose: dict) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        uses = re.findall(r"\$\{" + variable + r"(:\?|:-|\})", text)
        assert uses and set(uses) == {":?"}, f"{variable} must be required, never defaulted"
    assert compose["services"]["web"]["environment"]["DEBUG"] == "0"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/gpu-worker.Dockerfile"])
def test_dockerfiles_copy_paths_that_exist(dockerfile: str) -> None:
    for line in (ROOT / dockerfile).read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile}: {source} does not exist"
