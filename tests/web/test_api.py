"""The coordinator API with session and token authentication."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clinic_eval.models import DataImport, Study, User
from tests.support.factories import CaseFactory

pytestmark = pytest.mark.django_db


def token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def api(coordinator: User) -> APIClient:
    return token_client(coordinator)


def test_token_is_issued_for_a_username_and_password(coordinator: User) -> None:
    from tests.conftest import PASSWORD

    response = APIClient().post(
        "/api/auth/token/", {"username": "coord", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    assert Token.objects.get(user=coordinator).key == response.json()["token"]


def test_studies_list_only_the_callers_own(
    api: APIClient, study: Study, foreign_study: Study
) -> None:
    body = api.get("/api/studies/").json()
    assert body["count"] == 1
    assert body["results"][0]["id"] == study.pk
    assert body["results"][0]["rubric"]["dimensions"][0]["key"] == "reasoning_clarity"


def test_create_a_study(api: APIClient, coordinator: User) -> None:
    response = api.post("/api/studies/", {"title": "ICL vs SFT"}, format="json")
    assert response.status_code == 201
    study = Study.objects.get(pk=response.json()["id"])
    assert study.coordinators.get() == coordinator
    assert api.post("/api/studies/", {}, format="json").status_code == 400


def test_cases_list_filters_by_stratum(api: APIClient, study: Study) -> None:
    CaseFactory(study=study, external_id="A", stratum="General")
    CaseFactory(study=study, external_id="B", stratum="Confusion")
    body = api.get(f"/api/studies/{study.pk}/cases/", {"stratum": "Confusion"}).json()
    assert [case["external_id"] for case in body["results"]] == ["B"]
    case_id = body["results"][0]["id"]
    detail = api.get(f"/api/studies/{study.pk}/cases/{case_id}/").json()
    assert detail["ground_truth"] == {"diagnosis": ["tubal_factor"], "art_strategy": "IVF"}


def test_arms_are_created_and_listed(api: APIClient, study: Study) -> None:
    created = api.post(
        f"/api/studies/{study.pk}/arms/", {"label": "GRPO", "kind": "model"}, format="json"
    )
    assert created.status_code == 201
    again = api.post(
        f"/api/studies/{study.pk}/arms/", {"label": "GRPO", "kind": "model"}, format="json"
    )
    assert again.status_code == 400
    assert "already has an arm" in again.json()["detail"]
    assert [arm["label"] for arm in api.get(f"/api/studies/{study.pk}/arms/").json()] == ["GRPO"]


def test_import_through_the_api(
    api: APIClient, study: Study, django_capture_on_commit_callbacks: Callable
) -> None:
    content = json.dumps({"case_id": "X1", "stratum": "General", "narrative": "Text"}).encode()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/studies/{study.pk}/imports/",
            {"file": SimpleUploadedFile("cases.jsonl", content), "kind": "cases"},
            format="multipart",
        )
    assert response.status_code == 202
    import_id = response.json()["id"]
    status = api.get(f"/api/studies/{study.pk}/imports/{import_id}/").json()
    assert status["status"] == "succeeded" and status["row_count"] == 1
    assert api.get(f"/api/studies/{study.pk}/imports/").json()["count"] == 1


def test_a_bad_import_reports_lines_through_the_api(
    api: APIClient, study: Study, django_capture_on_commit_callbacks: Callable
) -> None:
    content = b'{"case_id": "X1", "stratum": "General"}\n'
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/studies/{study.pk}/imports/",
            {"file": SimpleUploadedFile("cases.jsonl", content)},
            format="multipart",
        )
    status = api.get(f"/api/studies/{study.pk}/imports/{response.json()['id']}/").json()
    assert status["status"] == "failed"
    assert status["errors"] == [{"line": 1, "message": "missing required field 'narrative'"}]


def test_an_unknown_file_format_is_a_400(api: APIClient, study: Study) -> None:
    response = api.post(
        f"/api/studies/{study.pk}/imports/",
        {"file": SimpleUploadedFile("cases.txt", b"x")},
        format="multipart",
    )
    assert response.status_code == 400
    assert not DataImport.objects.exists()


def test_physicians_get_403_everywhere(physician: User, study: Study) -> None:
    client = token_client(physician)
    for url in ("/api/studies/", f"/api/studies/{study.pk}/", f"/api/studies/{study.pk}/cases/"):
        assert client.get(url).status_code == 403
    assert client.post("/api/studies/", {"title": "x"}, format="json").status_code == 403
    assert not Study.objects.filter(title="x").exists()


def test_a_foreign_study_is_404(api: APIClient, foreign_study: Study) -> None:
    assert api.get(f"/api/studies/{foreign_study.pk}/").status_code == 404
    assert api.get(f"/api/studies/{foreign_study.pk}/cases/").status_code == 404


def test_orm_lookups_in_the_query_string_are_ignored(api: APIClient, study: Study) -> None:
    CaseFactory(study=study)
    response = api.get(
        f"/api/studies/{study.pk}/cases/", {"study__created_by__password__startswith": "pbkdf2"}
    )
    assert response.status_code == 200 and response.json()["count"] == 1


def test_the_openapi_schema_describes_the_endpoints(api: APIClient) -> None:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/studies/",
        "/api/studies/{study_id}/cases/",
        "/api/studies/{study_id}/imports/",
    ):
        assert path in schema["paths"]


def test_the_schema_generates_without_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
    assert "Warning" not in capsys.readouterr().err


def test_the_docs_page_loads_its_assets_from_this_server(api: APIClient, coordinator: User) -> None:
    client = APIClient()
    client.force_login(coordinator)
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn." not in page and "https://" not in page.split("<body")[0]


def test_create_cases_through_the_api_all_or_nothing(api: APIClient, study: Study) -> None:
    one = {
        "case_id": "A-1",
        "stratum": "General",
        "narrative": "Text.",
        "ground_truth": {"art_strategy": "ICSI"},
    }
    created = api.post(f"/api/studies/{study.pk}/cases/", one, format="json")
    assert created.status_code == 201
    assert [case["external_id"] for case in created.json()] == ["A-1"]

    batch = [
        {"case_id": "A-2", "stratum": "General", "narrative": "Text."},
        {"case_id": "A-1", "stratum": "General", "narrative": "Again."},
        {
            "case_id": "A-3",
            "stratum": "General",
            "narrative": "Text.",
            "ground_truth": {"art_strategy": "IVF+"},
        },
    ]
    refused = api.post(f"/api/studies/{study.pk}/cases/", batch, format="json")
    assert refused.status_code == 400
    body = refused.json()
    assert body["detail"] == "nothing was created"
    assert [(e["line"], e["message"].split(" (")[0]) for e in body["errors"]] == [
        (2, "case_id 'A-1' already exists in this study"),
        (3, "ground_truth.art_strategy: unknown label 'IVF+'"),
    ]
    assert list(study.cases.values_list("external_id", flat=True)) == ["A-1"]


def test_create_cases_refuses_an_empty_or_oversized_request(api: APIClient, study: Study) -> None:
    assert api.post(f"/api/studies/{study.pk}/cases/", [], format="json").status_code == 400
    too_many = [{"case_id": f"X-{i}"} for i in range(1001)]
    response = api.post(f"/api/studies/{study.pk}/cases/", too_many, format="json")
    assert response.status_code == 400 and "at most 1,000" in response.json()["detail"]
