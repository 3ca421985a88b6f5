"""A job nobody works on says so, on its page, in its API and on the study page."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from alignment_jobs.generation import selectors
from alignment_jobs.models import GenerationJob, GenerationShard, GenerationSpec
from clinic_eval.models import Arm, User
from tests.conftest import logged_in
from tests.support.factories import StudyFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def quick(settings: Settings) -> None:
    settings.WORKER_SILENCE_SECONDS = 30
    settings.WORKER_CHECK_CACHE_SECONDS = 0


def queued_job(coordinator: User, *, minutes_ago: float) -> GenerationJob:
    study = StudyFactory(coordinators=[coordinator])
    arm = Arm.objects.create(study=study, label="GRPO", kind=Arm.Kind.MODEL)
    spec = GenerationSpec.objects.create(arm=arm, base_model_path="/models/grpo")
    job = GenerationJob.objects.create(study=study, shard_size=4)
    GenerationShard.objects.create(job=job, spec=spec, index=0)
    GenerationJob.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    job.refresh_from_db()
    return job


def test_a_job_no_worker_takes_says_since_when_and_how_to_start_one(
    queues: tuple[str, str], quick: None, coordinator: User
) -> None:
    gpu = queues[1]
    job = queued_job(coordinator, minutes_ago=5)
    state = selectors.job_workers(job=job)
    since = timezone.localtime(job.created_at).strftime("%H:%M")
    assert state.consumers == [] and state.last_heartbeat is None
    assert state.warning == (
        f"No worker is taking jobs from queue {gpu} since {since}; start one with: "
        f"celery --app=clinic_eval worker --queues={gpu} --pool=solo --concurrency=1"
    )
    client = logged_in(coordinator)
    page = client.get(reverse("jobs:job_detail", args=[job.study_id, job.pk])).content.decode()
    assert state.warning in page and 'data-testid="job-workers">0' in page
    api = APIClient()
    api.force_authenticate(coordinator)
    body = api.get(reverse("api:job_detail", args=[job.study_id, job.pk])).json()
    assert body["workers"]["warning"] == state.warning and body["workers"]["consumers"] == []
    panel = client.get(
        reverse("jobs:study_job_workers", args=[job.study_id]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert state.warning in panel and "<html" not in panel
    study_page = client.get(reverse("coordinator:study_detail", args=[job.study_id]))
    assert reverse("jobs:study_job_workers", args=[job.study_id]) in study_page.content.decode()
    fresh = queued_job(coordinator, minutes_ago=0)
    assert selectors.job_workers(job=fresh).warning == "", "a worker may still be starting"


def test_a_job_with_a_live_worker_on_its_queue_gets_no_warning(
    queues: tuple[str, str], quick: None, coordinator: User, gpu_worker: subprocess.Popen
) -> None:
    job = queued_job(coordinator, minutes_ago=5)
    state = selectors.job_workers(job=job)
    assert state.warning == "" and state.consumers and state.consumers[0].startswith(queues[1])
