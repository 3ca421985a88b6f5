"""Coordinator pages and API for generation: settings, launch, live progress, held responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, TestCase
from django.urls import reverse

from alignment_jobs.demo.tiny_models import TinyModelSet
from alignment_jobs.generation import jobs, specs
from alignment_jobs.models import GenerationJob, GenerationSpec
from clinic_eval.models import Arm, Response, Study, User
from tests.generation.test_generation import make_cases
from tests.support.factories import ArmFactory, CaseFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def arm(study: Study, model_roots: TinyModelSet) -> Arm:
    make_cases(study, 3)
    return ArmFactory(study=study, label="SFT", kind=Arm.Kind.MODEL)


def spec_form(models: TinyModelSet, **overrides: object) -> dict:
    return {
        "base_model_path": str(models.base),
        "adapter_path": str(models.adapters["sft"]),
        "system_prompt": "Be brief.",
        "user_template": "{{ narrative }}\n{{ answer_format }}",
        "use_chat_template": "on",
        "few_shot_k": 0,
        "few_shot_pool": "",
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 8,
        "n_samples": 1,
        "seed": 3,
        "dtype": "auto",
        "tensor_parallel_size": 1,
        **overrides,
    }


def test_the_settings_page_saves_and_refuses_a_missing_checkpoint(
    coordinator_client: Client, arm: Arm, model_roots: TinyModelSet
) -> None:
    url = reverse("jobs:spec_edit", args=[arm.study_id, arm.pk])
    missing = str(model_roots.base.parent / "nope")
    response = coordinator_client.post(url, spec_form(model_roots, base_model_path=missing))
    assert response.status_code == 200
    assert "nope: no such directory" in response.content.decode()
    assert not GenerationSpec.objects.exists()
    response = coordinator_client.post(url, spec_form(model_roots))
    assert response.status_code == 302
    assert GenerationSpec.objects.get(arm=arm).adapter_path == str(model_roots.adapters["sft"])
    assert "Be brief." in coordinator_client.get(url).content.decode()


def test_launch_from_the_page_then_poll_until_the_partial_stops_polling(
    coordinator_client: Client, arm: Arm, model_roots: TinyModelSet
) -> None:
    study = arm.study
    coordinator_client.post(
        reverse("jobs:spec_edit", args=[study.pk, arm.pk]), spec_form(model_roots)
    )
    page = reverse("jobs:job_list", args=[study.pk])
    refused = coordinator_client.post(page, {"arms": [arm.pk], "scope": "ids", "engine": "auto"})
    assert "List at least one case id." in refused.content.decode()

    with TestCase.captureOnCommitCallbacks(execute=True):
        response = coordinator_client.post(
            page, {"arms": [arm.pk], "scope": "all", "engine": "transformers"}
        )
    job = GenerationJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("jobs:job_detail", args=[study.pk, job.pk])

    full = coordinator_client.get(response["Location"])
    assert "<html" in full.content.decode() and 'id="job-progress"' in full.content.decode()
    partial = coordinator_client.get(response["Location"], headers={"HX-Request": "true"})
    body = partial.content.decode()
    assert partial.status_code == 286, "a finished job tells htmx to stop polling"
    assert "<html" not in body and 'value="100"' in body and "3 / 3" in body


def test_a_running_job_keeps_polling_and_can_be_cancelled(
    coordinator_client: Client, arm: Arm, model_roots: TinyModelSet
) -> None:
    specs.spec_save(arm=arm, base_model_path=str(model_roots.base))
    job = jobs.job_launch(study=arm.study, created_by=None, enqueue=False)
    url = reverse("jobs:job_detail", args=[arm.study_id, job.pk])
    partial = coordinator_client.get(url, headers={"HX-Request": "true"})
    assert partial.status_code == 200
    assert 'hx-trigger="every 1s"' in partial.content.decode()
    coordinator_client.post(reverse("jobs:job_cancel", args=[arm.study_id, job.pk]))
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.CANCELLED


def test_the_api_sets_a_spec_launches_and_reports_progress(
    coordinator_client: Client, arm: Arm, model_roots: TinyModelSet
) -> None:
    study = arm.study
    spec_url = reverse("api:spec", args=[study.pk, arm.pk])
    assert coordinator_client.get(spec_url).status_code == 404
    bad = coordinator_client.put(
        spec_url, {"base_model_path": "/etc"}, content_type="application/json"
    )
    assert bad.status_code == 400 and "outside the model directories" in bad.json()["detail"]
    good = coordinator_client.put(
        spec_url,
        {"base_model_path": str(model_roots.base), "max_tokens": 8, "temperature": 0},
        content_type="application/json",
    )
    assert good.status_code == 200 and good.json()["template_version"] == 1

    jobs_url = reverse("api:job_list", args=[study.pk])
    unknown = coordinator_client.post(jobs_url, {"arms": ["NOPE"]}, content_type="application/json")
    assert unknown.status_code == 400
    with TestCase.captureOnCommitCallbacks(execute=True):
        created = coordinator_client.post(
            jobs_url,
            {"arms": ["SFT"], "case_ids": ["SYN-00001"], "engine": "transformers"},
            content_type="application/json",
        )
    assert created.status_code == 201, created.content
    detail = coordinator_client.get(
        reverse("api:job_detail", args=[study.pk, created.json()["id"]])
    )
    assert detail.json()["status"] == "succeeded"
    assert (detail.json()["done"], detail.json()["percent"]) == (1, 100)
    listed = coordinator_client.get(jobs_url).json()
    assert listed["count"] == 1


def test_held_responses_wait_for_a_coordinator(
    coordinator_client: Client, coordinator: User, study: Study
) -> None:
    from clinic_eval.studies.services import NewResponse, responses_store

    arm = ArmFactory(study=study, label="GRPO", kind=Arm.Kind.IMPORTED)
    cases = [CaseFactory(study=study) for _ in range(3)]
    texts = [
        "Plan: IVF.",
        "As an AI language model developed by OpenAI, I suggest IVF.",
        "<think>GRPO would say</think> the GRPO arm recommends ICSI <|eot_id|>",
    ]
    responses_store(
        study=study,
        arm=arm,
        responses=[
            NewResponse(case_id=c.pk, raw_text=t) for c, t in zip(cases, texts, strict=True)
        ],
    )
    stored = {r.raw_text: r for r in Response.objects.all()}
    assert stored[texts[0]].review == Response.Review.CLEAR
    leaky = stored[texts[1]]
    assert leaky.review == Response.Review.HELD
    assert {f["kind"] for f in leaky.leak_flags} == {"self_identification", "vendor_or_model_name"}
    echo = stored[texts[2]]
    assert echo.display_text == "the GRPO arm recommends ICSI"
    assert {f["kind"] for f in echo.leak_flags} >= {"arm_label"}

    page = coordinator_client.get(reverse("jobs:held_responses", args=[study.pk]))
    assert page.content.decode().count("Approve as shown") == 2
    coordinator_client.post(
        reverse("jobs:response_review", args=[study.pk, leaky.pk]), {"decision": "excluded"}
    )
    coordinator_client.post(
        reverse("jobs:response_review", args=[study.pk, echo.pk]), {"decision": "approved"}
    )
    leaky.refresh_from_db()
    echo.refresh_from_db()
    assert (leaky.review, echo.review) == ("excluded", "approved")
    assert echo.reviewed_by == coordinator
    assert set(Response.objects.filter(review__in=Response.SERVABLE)) == {
        stored[texts[0]],
        echo,
    }


def test_import_responses_for_one_arm_with_the_command(study: Study, tmp_path: Path) -> None:
    make_cases(study, 2)
    ArmFactory(study=study, label="External-8B", kind=Arm.Kind.IMPORTED)
    lines = [
        {"case_id": "SYN-00001", "text": "Reasoning.\n\nART strategy: ICSI"},
        {"case_id": "SYN-00002", "arm": "External-8B", "text": "**ART strategy:** IVF"},
    ]
    path = tmp_path / "outputs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    call_command("import_responses", "--study", study.pk, "--arm", "External-8B", str(path))
    decisions = dict(
        Response.objects.values_list("case__external_id", "parsed_decision__art_strategy")
    )
    assert decisions == {"SYN-00001": "ICSI", "SYN-00002": "IVF"}

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"case_id": "SYN-00001", "arm": "Else", "text": "x"}) + "\n")
    with pytest.raises(CommandError, match="1 problem"):
        call_command("import_responses", "--study", study.pk, "--arm", "External-8B", str(other))
    with pytest.raises(CommandError, match="no imported-outputs arm labelled 'Nope'"):
        call_command("import_responses", "--study", study.pk, "--arm", "Nope", str(other))


def test_the_case_page_shows_what_the_leak_check_and_parser_found(
    coordinator_client: Client, study: Study
) -> None:
    from clinic_eval.studies.services import NewResponse, responses_store

    arm = ArmFactory(study=study, label="GRPO", kind=Arm.Kind.IMPORTED)
    case = CaseFactory(study=study)
    responses_store(
        study=study,
        arm=arm,
        responses=[
            NewResponse(
                case_id=case.pk, raw_text="I am ChatGPT.\n\nART strategy: ICSI", sample_index=0
            ),
        ],
    )
    page = coordinator_client.get(reverse("coordinator:case_detail", args=[study.pk, case.pk]))
    body = page.content.decode()
    assert "Held back: the leak check flagged it" in body
    assert "vendor_or_model_name" in body
    assert "Decision not read: Diagnosis: not found" in body
    assert "Decision: art_strategy = ICSI" in body
