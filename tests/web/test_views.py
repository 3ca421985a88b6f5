"""Coordinator and physician pages through the test client."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.http import HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django.fixtures import Settings

from alignment_jobs.models import GenerationItem, GenerationJob, GenerationShard, GenerationSpec
from clinic_eval.design import services
from clinic_eval.models import Arm, DataImport, Response, Study, User
from clinic_eval.templatetags import clinic_eval_tags
from tests.conftest import PASSWORD
from tests.support.factories import (
    ArmFactory,
    CaseFactory,
    DataImportFactory,
    ResponseFactory,
    StudyFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def html(response: HttpResponse) -> str:
    return response.content.decode()


# --- Sign-in --------------------------------------------------------------------------------


def test_login_page_renders_with_csp_and_no_inline_script() -> None:
    response = Client().get(reverse("login"))
    assert response.status_code == 200
    assert "Sign in" in html(response)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in html(response), "scripts load from files only"


@pytest.mark.parametrize(
    ("user_fixture", "landing"),
    [("coordinator", "coordinator:study_list"), ("physician", "rater:home")],
)
def test_login_lands_on_the_role_start_page(
    request: pytest.FixtureRequest, user_fixture: str, landing: str
) -> None:
    user = request.getfixturevalue(user_fixture)
    client = Client()
    response = client.post(
        reverse("login"), {"username": user.username, "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse(landing)


def test_wrong_password_is_refused_with_a_message(coordinator: User) -> None:
    response = Client().post(reverse("login"), {"username": "coord", "password": "nope"})
    assert response.status_code == 200
    assert "did not match" in html(response)


def test_login_never_redirects_off_site(coordinator: User) -> None:
    response = Client().post(
        f"{reverse('login')}?next=//evil.example/steal",
        {"username": "coord", "password": PASSWORD, "next": "//evil.example/steal"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_logout_ends_the_session_on_the_server(coordinator_client: Client) -> None:
    assert coordinator_client.get(reverse("coordinator:study_list")).status_code == 200
    response = coordinator_client.post(reverse("logout"))
    assert response.status_code == 302
    assert coordinator_client.get(reverse("coordinator:study_list")).status_code == 302


def test_sessions_expire_after_the_idle_timeout(
    coordinator_client: Client, settings: Settings
) -> None:
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from clinic_eval.accounts.middleware import SESSION_REFRESH_SECONDS, SESSION_REFRESHED_AT

    url = reverse("coordinator:study_list")
    coordinator_client.get(url)
    assert coordinator_client.session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    key = coordinator_client.session.session_key
    # Within the refresh interval a request leaves the stored deadline alone (no write) ...
    Session.objects.filter(pk=key).update(expire_date=timezone.now() + timedelta(minutes=5))
    coordinator_client.get(url)
    early = Session.objects.get(pk=key).expire_date
    assert early < timezone.now() + timedelta(minutes=6)
    # ... and once it has passed, the next request pushes the deadline a full timeout ahead.
    session = coordinator_client.session
    session[SESSION_REFRESHED_AT] -= SESSION_REFRESH_SECONDS + 1
    session.save()
    coordinator_client.get(url)
    pushed = Session.objects.get(pk=key).expire_date
    assert pushed > timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE - 5)


def test_healthz_checks_the_database() -> None:
    response = Client().get(reverse("healthz"))
    assert response.json() == {"status": "ok"}


# --- Studies --------------------------------------------------------------------------------


def test_study_list_shows_only_the_coordinators_studies(
    coordinator_client: Client, study: Study, foreign_study: Study
) -> None:
    page = html(coordinator_client.get(reverse("coordinator:study_list")))
    assert study.title in page
    assert foreign_study.title not in page


def test_creating_a_study_makes_the_creator_its_coordinator(
    coordinator_client: Client, coordinator: User
) -> None:
    response = coordinator_client.post(
        reverse("coordinator:study_list"), {"title": "SFT vs GRPO", "question": "Which?"}
    )
    study = Study.objects.get(title="SFT vs GRPO")
    assert response["Location"] == reverse("coordinator:study_detail", args=[study.pk])
    assert list(study.coordinators.all()) == [coordinator]
    assert study.status == Study.Status.DRAFT
    assert [d["key"] for d in study.rubric["dimensions"]] == [
        "reasoning_clarity",
        "treatment_feasibility",
    ]


def test_study_page_counts_cases_per_stratum(coordinator_client: Client, study: Study) -> None:
    CaseFactory.create_batch(3, study=study, stratum="General")
    CaseFactory(study=study, stratum="Human Enhancement")
    response = coordinator_client.get(reverse("coordinator:study_detail", args=[study.pk]))
    overview = response.context["overview"]
    assert overview.case_count == 4
    assert overview.cases_per_stratum == [
        ("General", 3),
        ("Confusion", 0),
        ("Human Enhancement", 1),
    ]


def test_status_moves_along_the_lifecycle_and_refuses_jumps(
    coordinator_client: Client, study: Study
) -> None:
    url = reverse("coordinator:study_transition", args=[study.pk])
    follow = coordinator_client.post(url, {"to_status": "ready"}, follow=True)
    assert "import cases before marking the study ready" in html(follow)
    CaseFactory(study=study)
    coordinator_client.post(url, {"to_status": "ready"})
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    follow = coordinator_client.post(url, {"to_status": "closed"}, follow=True)
    assert "a ready study cannot become closed" in html(follow)
    follow = coordinator_client.post(url, {"to_status": "open"}, follow=True)
    assert "the design cannot be built: assign at least one physician" in html(follow)
    case = study.cases.get()
    for label in ("SFT", "GRPO"):
        ResponseFactory(case=case, arm=ArmFactory(study=study, label=label))
    rater = UserFactory(username="dr-09", role="physician")
    services.study_design_update(
        study=study,
        design=study.design | {"arm_sets": [["SFT", "GRPO"]], "raters_per_item": 1},
        rubric=study.rubric,
        analysis_plan=study.analysis_plan,
        rater_ids=[rater.pk],
    )
    coordinator_client.post(url, {"to_status": "open"})
    coordinator_client.post(url, {"to_status": "closed"})
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED


def test_adding_arms_and_refusing_a_duplicate_label(
    coordinator_client: Client, study: Study
) -> None:
    url = reverse("coordinator:arm_create", args=[study.pk])
    response = coordinator_client.post(url, {"label": "SFT", "kind": "model"})
    assert response.status_code == 302
    response = coordinator_client.post(url, {"label": "sft", "kind": "imported"})
    assert response.status_code == 200
    assert "already has an arm labelled" in html(response)
    assert list(study.arms.values_list("label", flat=True)) == ["SFT"]


# --- Cases ----------------------------------------------------------------------------------


def test_case_list_filters_and_answers_htmx_with_the_table_only(
    coordinator_client: Client, study: Study
) -> None:
    CaseFactory(study=study, external_id="G-1", stratum="General")
    CaseFactory(study=study, external_id="HE-1", stratum="Human Enhancement")
    url = reverse("coordinator:case_list", args=[study.pk])

    full = html(coordinator_client.get(url, {"stratum": "Human Enhancement"}))
    assert "<html" in full and "HE-1" in full and "G-1" not in full

    partial = html(coordinator_client.get(url, {"q": "G-"}, **HTMX))
    assert "<html" not in partial and 'id="case-table"' in partial
    assert "G-1" in partial and "HE-1" not in partial


def test_case_list_pages_keep_real_links(coordinator_client: Client, study: Study) -> None:
    CaseFactory.create_batch(60, study=study)
    page = html(coordinator_client.get(reverse("coordinator:case_list", args=[study.pk])))
    assert 'href="?page=2&amp;stratum=&amp;q="' in page, "links work without JavaScript"
    assert "Page 1 of 2" in page


def test_case_page_shows_findings_decisions_and_responses(
    coordinator_client: Client, study: Study
) -> None:
    case = CaseFactory(study=study, original_author_ref="dr-04")
    ResponseFactory(case=case, arm=ArmFactory(study=study, label="GRPO"), raw_text="Plan: ICSI")
    page = html(
        coordinator_client.get(reverse("coordinator:case_detail", args=[study.pk, case.pk]))
    )
    for text in (
        "tubal findings",
        "bilateral occlusion",
        "Ground truth",
        "tubal_factor",
        "by dr-04",
        "GRPO",
        "Plan: ICSI",
    ):
        assert text in page


def test_case_text_is_escaped(coordinator_client: Client, study: Study) -> None:
    case = CaseFactory(study=study, narrative='<script>alert("x")</script><img onerror=1>')
    page = html(
        coordinator_client.get(reverse("coordinator:case_detail", args=[study.pk, case.pk]))
    )
    assert "<script>alert" not in page and "<img onerror" not in page
    assert "&lt;script&gt;" in page


# --- Imports --------------------------------------------------------------------------------


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def test_uploading_cases_imports_them_and_shows_the_outcome(
    coordinator_client: Client, study: Study, django_capture_on_commit_callbacks: Callable
) -> None:
    lines = [{"case_id": f"U-{i}", "stratum": "General", "narrative": "Text."} for i in range(3)]
    content = "\n".join(json.dumps(line) for line in lines).encode()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = coordinator_client.post(
            reverse("coordinator:import_create", args=[study.pk]),
            {"kind": "cases", "file": upload("cases.jsonl", content)},
        )
    assert len(callbacks) == 1, "the import is queued once, after the upload commits"
    data_import = DataImport.objects.get()
    detail_url = reverse("coordinator:import_detail", args=[study.pk, data_import.pk])
    assert response["Location"] == detail_url
    assert data_import.status == DataImport.Status.SUCCEEDED
    assert "3 cases imported" in html(coordinator_client.get(detail_url))
    assert study.cases.count() == 3


def test_uploading_a_bad_file_lists_its_lines(
    coordinator_client: Client, study: Study, django_capture_on_commit_callbacks: Callable
) -> None:
    content = (
        b'{"case_id": "A", "stratum": "General"}\n'
        b'{"case_id": "B", "stratum": "Nope", "narrative": "x"}\n'
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = coordinator_client.post(
            reverse("coordinator:import_create", args=[study.pk]),
            {"kind": "cases", "file": upload("bad.jsonl", content)},
        )
    page = html(coordinator_client.get(response["Location"]))
    assert "Nothing was imported: 2 problems found" in page
    assert "missing required field &#x27;narrative&#x27;" in page
    assert "unknown stratum &#x27;Nope&#x27;" in page
    assert not study.cases.exists()


def test_upload_refuses_an_oversized_file_before_reading_it(
    coordinator_client: Client, study: Study, settings: Settings
) -> None:
    settings.IMPORT_MAX_BYTES = 1024
    response = coordinator_client.post(
        reverse("coordinator:import_create", args=[study.pk]),
        {"kind": "cases", "file": upload("big.jsonl", b"x" * 2000)},
    )
    assert response.status_code == 200
    assert "the limit is 1,024 bytes" in html(response)
    assert not DataImport.objects.exists()


def test_upload_refuses_an_unknown_format(coordinator_client: Client, study: Study) -> None:
    response = coordinator_client.post(
        reverse("coordinator:import_create", args=[study.pk]),
        {"kind": "cases", "file": upload("cases.xlsx", b"PK\x03\x04")},
    )
    assert "cannot tell the format of &#x27;cases.xlsx&#x27;" in html(response)


def test_import_status_polls_until_the_import_ends(
    coordinator_client: Client, study: Study
) -> None:
    data_import = DataImportFactory(study=study)
    url = reverse("coordinator:import_detail", args=[study.pk, data_import.pk])
    pending = coordinator_client.get(url, **HTMX)
    assert pending.status_code == 200
    assert 'hx-trigger="every 1s"' in html(pending) and "<html" not in html(pending)

    DataImport.objects.filter(pk=data_import.pk).update(status="succeeded", row_count=5)
    finished = coordinator_client.get(url, **HTMX)
    assert finished.status_code == 286, "htmx stops polling on 286"
    assert "hx-trigger" not in html(finished)
    assert "5 cases imported" in html(finished)


def test_an_import_page_of_another_study_is_not_found(
    coordinator_client: Client, study: Study, foreign_study: Study
) -> None:
    data_import = DataImportFactory(study=foreign_study)
    url = reverse("coordinator:import_detail", args=[study.pk, data_import.pk])
    assert coordinator_client.get(url).status_code == 404


def test_physician_home_offers_no_coordinator_links(physician_client: Client) -> None:
    page = html(physician_client.get(reverse("rater:home")))
    assert "My ratings" in page
    assert reverse("coordinator:study_list") not in page
    assert Arm.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("amh_ng_ml", "amh (ng/mL)"),
        ("semen_concentration_m_per_ml", "semen concentration (M/mL)"),
        ("total_progressive_motile_count_m", "total progressive motile count (M)"),
        ("semen_normal_forms_pct", "semen normal forms (%)"),
        ("tubal_findings", "tubal findings"),
        ("_m", " m"),
    ],
)
def test_field_names_read_as_labels_with_units(name: str, label: str) -> None:
    assert clinic_eval_tags.humanize_field(name) == label


def test_field_values_read_as_words() -> None:
    assert [clinic_eval_tags.field_value(v) for v in (True, False, None, 2.5)] == [
        "yes",
        "no",
        "—",
        "2.5",
    ]


def test_an_idle_session_is_over(coordinator_client: Client) -> None:
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    assert coordinator_client.get(reverse("coordinator:study_list")).status_code == 200
    Session.objects.update(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    response = coordinator_client.get(reverse("coordinator:study_list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


COORDINATOR_READS = [
    ("coordinator:study_list", False, False),
    ("coordinator:study_detail", True, False),
    ("coordinator:case_list", True, False),
    ("coordinator:case_detail", True, True),
    ("coordinator:import_create", True, False),
    ("api:study_list", False, False),
    ("api:case_list", True, False),
    ("api:arm_list", True, False),
    ("api:import_list", True, False),
    ("jobs:job_list", True, False),
    ("api:job_list", True, False),
    ("jobs:held_responses", True, False),
]


def queries_for(client: Client, study: Study, rows: int) -> dict[str, int]:
    cases = CaseFactory.create_batch(rows, study=study)
    for _ in range(rows):
        arm = ArmFactory(study=study)
        ResponseFactory(case=cases[0], arm=arm, review=Response.Review.HELD)
        DataImportFactory(study=study)
        job = GenerationJob.objects.create(study=study, shard_size=4)
        spec = GenerationSpec.objects.create(arm=arm, base_model_path="/models/x")
        shard = GenerationShard.objects.create(job=job, spec=spec, index=0)
        GenerationItem.objects.create(job=job, shard=shard, case=cases[0], arm=arm)
    counts = {}
    client.get(reverse("coordinator:study_list"))  # a session's first request stamps it once
    for name, needs_study, needs_case in COORDINATOR_READS:
        args = [study.pk] * needs_study + [cases[0].pk] * needs_case
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse(name, args=args)).status_code == 200
        counts[name] = len(queries)
    return counts


def test_coordinator_reads_cost_the_same_queries_for_few_rows_and_many(
    coordinator: User, coordinator_client: Client
) -> None:
    few = queries_for(coordinator_client, StudyFactory(coordinators=[coordinator]), rows=2)
    many = queries_for(coordinator_client, StudyFactory(coordinators=[coordinator]), rows=30)
    assert many == few, "a page or endpoint runs a query per row"
