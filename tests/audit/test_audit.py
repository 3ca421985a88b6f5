"""The audit trail: what is recorded, who sees it, and its CSV export."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from alignment_jobs.generation import jobs, specs
from clinic_eval.config import default_analysis_plan, default_design, default_rubric
from clinic_eval.design import services as design_services
from clinic_eval.models import AuditEvent, ExportLog, Judgment, Study, User
from clinic_eval.rating import services as rating_services
from clinic_eval.results.export_schema import FILE_COLUMNS, decode
from clinic_eval.studies import services
from tests.conftest import logged_in
from tests.support.rating_study import full_answer, open_study, physicians

pytestmark = pytest.mark.django_db


def audit_csv(client: Client, study: Study) -> list[dict]:
    response = client.get(
        reverse("coordinator:study_export_file", args=[study.pk, "audit_trail.csv"])
    )
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    columns = {column.name: column for column in FILE_COLUMNS["audit_trail.csv"]}
    return [
        {name: decode(columns[name].kind, cell) for name, cell in row.items()}
        for row in csv.DictReader(io.StringIO(text))
    ]


def test_design_changes_record_only_what_changed(coordinator: User, study: Study) -> None:
    raters = physicians(2)
    design = default_design()
    args = {
        "study": study,
        "rubric": default_rubric(),
        "analysis_plan": default_analysis_plan(),
    }
    design_services.study_design_update(design=design, rater_ids=[raters[0].pk], **args)
    design_services.study_design_update(
        design=design | {"raters_per_item": 1}, rater_ids=[r.pk for r in raters], **args
    )
    design_services.study_design_update(
        design=design | {"raters_per_item": 1}, rater_ids=[r.pk for r in raters], **args
    )
    events = AuditEvent.objects.filter(action=AuditEvent.Action.DESIGN_CHANGED, study_id=study.pk)
    assert events.count() == 2, "saving an unchanged design records nothing"
    latest = events.first()
    assert latest is not None
    assert set(latest.before) == {"design", "raters"} == set(latest.after)
    assert latest.before["raters"] == ["rater-00"]
    assert latest.after["raters"] == ["rater-00", "rater-01"]
    assert latest.after["design"]["raters_per_item"] == 1


def test_a_rating_edit_is_audited_with_old_and_new_values(
    coordinator: User, physician: User
) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    client = logged_in(physician)
    item = rating_services.assignment_next(rater=physician, study=built.study)
    assert item is not None
    url = reverse("rater:item", args=[item.public_id])
    assert client.post(url, full_answer(preference="A")).status_code == 302
    edit = full_answer(preference="B", revision="1", reason="misread the plan")
    assert client.post(url, edit).status_code == 302
    assert Judgment.objects.get(assignment=item).preference == "B"

    event = AuditEvent.objects.get(action=AuditEvent.Action.JUDGMENT_EDITED)
    assert event.actor == physician
    assert event.study_id == built.study.pk
    assert event.before["preference"] == "A" and event.after["preference"] == "B"
    assert "misread the plan" in event.summary
    assert event.via == "web" and event.ip_address == "127.0.0.1"


def test_the_coordinator_sees_and_exports_the_trail(coordinator: User, physician: User) -> None:
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1)
    study = built.study
    Client().post(reverse("login"), {"username": physician.username, "password": "wrong"})
    client = logged_in(coordinator)

    page = client.get(reverse("coordinator:study_audit", args=[study.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    for shown in ("Study created", "Design changed", "Study status changed", "Failed sign-in"):
        assert shown in body, shown
    partial = client.get(
        reverse("coordinator:study_audit", args=[study.pk]),
        {"action": AuditEvent.Action.STUDY_STATUS},
        HTTP_HX_REQUEST="true",
    )
    assert "<html" not in partial.content.decode()
    assert partial.content.decode().count("Study status changed") == 2
    assert "2 events" in partial.content.decode()

    rows = audit_csv(client, study)
    actions = [row["action"] for row in rows]
    assert actions[:3] == ["study_created", "design_changed", "study_status"]
    assert "login_failed" in actions
    assert [row["after"] for row in rows if row["action"] == "study_status"] == [
        {"status": "ready"},
        {"status": "open"},
    ]
    export = ExportLog.objects.get(what="audit_trail.csv")
    assert export.row_count == len(rows)
    assert AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT, study_id=study.pk).exists()


def test_another_studys_events_and_strangers_sign_ins_stay_out(
    coordinator: User, other_coordinator: User, study: Study, foreign_study: Study
) -> None:
    stranger = physicians(1, prefix="stranger")[0]
    Client().post(reverse("login"), {"username": stranger.username, "password": "wrong"})
    services.arm_create(study=foreign_study, label="Secret-arm", kind="imported")
    body = logged_in(coordinator).get(reverse("coordinator:study_audit", args=[study.pk]))
    text = body.content.decode()
    assert "Secret-arm" not in text and stranger.username not in text
    assert (
        logged_in(other_coordinator)
        .get(reverse("coordinator:study_audit", args=[study.pk]))
        .status_code
        == 404
    )


def test_an_unknown_action_filter_shows_everything(coordinator: User, study: Study) -> None:
    response = logged_in(coordinator).get(
        reverse("coordinator:study_audit", args=[study.pk]), {"action": "'; DROP TABLE"}
    )
    assert response.status_code == 200
    assert "Study created" in response.content.decode()


def test_generation_settings_launches_cancels_and_retries_are_audited(
    coordinator: User, study: Study, model_roots: object, django_capture_on_commit_callbacks: Any
) -> None:
    from alignment_jobs.models import GenerationItem, GenerationJob
    from tests.support.factories import CaseFactory

    CaseFactory(study=study)
    arm = services.arm_create(study=study, label="SFT-tiny", kind="model")
    base = str(model_roots.base)  # type: ignore[attr-defined]
    specs.spec_save(arm=arm, base_model_path=base, adapter_path="")
    specs.spec_save(arm=arm, max_tokens=12)
    job = jobs.job_launch(study=study, created_by=coordinator, enqueue=False)
    jobs.job_cancel(job=job)
    GenerationItem.objects.filter(job=job).update(status=GenerationItem.Status.FAILED)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.FINISHED_WITH_FAILURES
    )
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_retry_failed(job=job)

    events = {
        event.action: event
        for event in AuditEvent.objects.filter(study_id=study.pk).order_by("at", "id")
    }
    assert events[AuditEvent.Action.SPEC_SAVED].after == {"max_tokens": 12}
    launched = events[AuditEvent.Action.JOB_LAUNCHED]
    assert launched.actor == coordinator and launched.target == f"job:{job.pk}"
    assert "SFT-tiny" in launched.summary
    assert AuditEvent.Action.JOB_CANCELLED in events
    assert "queued again" in events[AuditEvent.Action.JOB_RETRIED].summary
