"""``manage.py doctor`` against the real PostgreSQL, Redis and a real worker process."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from pytest_django.fixtures import Settings

from alignment_jobs.models import GenerationSpec
from alignment_jobs.operations import doctor
from clinic_eval.models import Arm
from tests.support.factories import StudyFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def run_doctor() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("doctor", "--timeout", "3", stdout=out)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, out.getvalue()


def test_a_healthy_installation_passes_and_names_its_worker_and_engines(
    worker: subprocess.Popen, queues: tuple[str, str]
) -> None:
    default, gpu = queues
    code, out = run_doctor()
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0].startswith("ok    database") and "every migration applied" in lines[0]
    assert any(line.startswith("ok    broker") for line in lines)
    assert any(line.startswith("ok    cache") for line in lines)
    consumed = next(line for line in lines if f"queue {default}" in line)
    assert consumed.startswith("ok") and f"consumed by {default}-" in consumed
    idle = next(line for line in lines if f"queue {gpu}" in line)
    assert idle.startswith("warn") and f"no worker is taking jobs from queue {gpu}" in idle
    assert f"--queues={gpu} --pool=solo" in idle, "it says how to start one"
    engines = next(line for line in lines if line.startswith("ok    engines"))
    assert "transformers" in engines and "jobs use" in engines
    assert out.rstrip().endswith("every check passed (see the warnings)")


def test_no_worker_a_missing_model_directory_and_a_broken_checkpoint_fail(
    queues: tuple[str, str], settings: Settings, tmp_path: Path
) -> None:
    settings.MODEL_ROOTS = [str(tmp_path), str(tmp_path / "not-mounted")]
    study = StudyFactory()
    arm = Arm.objects.create(study=study, label="GRPO", kind=Arm.Kind.MODEL)
    GenerationSpec.objects.create(arm=arm, base_model_path=str(tmp_path / "grpo-8b"))
    code, out = run_doctor()
    assert code == 1, out
    assert f"fail  queue {queues[0]} no worker is taking jobs from queue {queues[0]}" in out
    assert f"MODEL_ROOTS entry {tmp_path / 'not-mounted'} is not a directory" in out
    checkpoint = next(line for line in out.splitlines() if "checkpoint" in line)
    assert checkpoint.startswith("fail") and f"study {study.pk} arm GRPO: " in checkpoint
    assert "grpo-8b: no such directory" in checkpoint
    assert out.rstrip().endswith("check(s) failed")


def test_an_unreachable_broker_is_a_failure_with_what_to_do(queues: tuple[str, str]) -> None:
    findings = {f.check: f for f in doctor.broker("redis://127.0.0.1:1/0")}
    assert findings["broker"].status == "fail"
    assert "cannot reach redis://127.0.0.1:1/0" in findings["broker"].detail
    assert "start Redis" in findings["broker"].fix
