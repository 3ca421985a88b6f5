"""The rater API: the rating flow end to end, access per object and role, and blinding."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from clinic_eval.design import services
from clinic_eval.models import Assignment, Judgment, JudgmentEdit, Study, User
from tests.conftest import PASSWORD
from tests.support.rating_study import ARM_LABELS, ORIGINAL_LABEL, OpenStudy, open_study

pytestmark = pytest.mark.django_db

FORBIDDEN_KEY_WORDS = ("arm", "model", "checkpoint", "provenance", "temperature")
# Where a rater payload may carry a number; anything else numeric could be a key.
NUMERIC_KEYS = {
    "done",
    "total",
    "number",
    "revision",
    "scale_min",
    "scale_max",
    "max_spans_per_response",
}


def api_for(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def answer(
    positions: int = 2, preference: str = "A", revision: int = 0, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "preference": preference,
        "rationale": "Clearer plan.",
        "revision": revision,
        "ratings": [
            {
                "position": "ABCDEFGH"[p],
                "scores": {"reasoning_clarity": 4, "treatment_feasibility": 3},
                "hallucination": "none",
            }
            for p in range(positions)
        ],
    }
    body.update(extra)
    return body


def small_study(coordinator: User, rater: User, **design: object) -> OpenStudy:
    """One case, three arms: three pairwise items, all for ``rater``."""
    return open_study(
        coordinator=coordinator,
        raters=[rater],
        n_cases=1,
        labels=(*ARM_LABELS[:2], ORIGINAL_LABEL),
        raters_per_item=1,
        **design,
    )


class Recorder:
    """An API client for one user that keeps every JSON body it receives."""

    def __init__(self, user: User) -> None:
        self.client = api_for(user)
        self.bodies: list[str] = []

    def call(self, method: str, url: str, body: dict | None = None) -> Any:
        response = getattr(self.client, method)(url, body, format="json")
        if response.content:
            self.bodies.append(response.content.decode())
        return response


def assert_blind(text: str, built: OpenStudy) -> None:
    for label in [arm.label for arm in built.arms]:
        assert label not in text
    data = json.loads(text)
    # Arm and response keys are large, so they can be searched for anywhere; case, comparison
    # and seat keys are small, so the walk below allows numbers only where a rater needs them.
    large = {arm.pk for arm in built.arms} | {r.pk for r in built.responses}

    def walk(node: Any, key: str, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                # A span's "harm" (and the rubric's "harm_levels") is the one key that
                # contains "arm" without naming one.
                lowered = name.lower().replace("harm", "")
                assert not any(word in lowered for word in FORBIDDEN_KEY_WORDS), name
                walk(value, name, (*path, name))
        elif isinstance(node, list):
            for value in node:
                walk(value, key, path)
        elif isinstance(node, bool) or node is None:
            return
        elif isinstance(node, int | float):
            assert node not in large, f"{path} carries a primary key"
            in_scores = "scores" in path
            in_case_field = path[-2:] == ("fields", "value")
            assert key in NUMERIC_KEYS or in_scores or in_case_field, f"number at {path}"
        elif isinstance(node, str):
            numbers = {int(n) for n in re.findall(r"\d+", node)}
            assert not numbers & large, f"{path} carries a primary key"

    walk(data, "", ())


def test_the_full_rating_flow_through_the_api(coordinator: User, physician: User) -> None:
    built = small_study(coordinator, physician)
    study = built.study
    api = Recorder(physician)

    studies = api.call("get", "/api/rate/studies/")
    assert studies.status_code == 200
    assert studies.json() == [
        {
            "public_id": study.public_id,
            "title": study.title,
            "status": "open",
            "done": 0,
            "total": 3,
        }
    ]

    shown = api.call("post", f"/api/rate/studies/{study.public_id}/next/")
    assert shown.status_code == 200
    item = shown.json()
    assert item["number"] == 1 and item["progress"] == {"done": 0, "total": 3}
    assert item["study_id"] == study.public_id
    assert [r["position"] for r in item["responses"]] == ["A", "B"]
    assert item["responses"][0]["text"].startswith("**Plan**")  # raw Markdown
    assert item["case"]["narrative"] == built.cases[0].narrative
    assert {"name": "age", "value": 34} in item["case"]["fields"]
    assert item["choices"] == ["A", "B", "tie", "none"]
    assert item["rationale_required"] is False
    assert item["judgment"] is None
    dimension = item["rubric"]["dimensions"][0]
    assert dimension["key"] == "reasoning_clarity"
    assert (dimension["scale_min"], dimension["scale_max"]) == (1, 5)
    assert dimension["anchors"]["1"].startswith("Unclear")
    assert item["rubric"]["hallucination"]["types"] == ["none", "factual", "reasoning"]
    # A reload gets the same item back.
    again = api.call("post", f"/api/rate/studies/{study.public_id}/next/")
    assert again.json()["public_id"] == item["public_id"]
    assert api.call("get", f"/api/rate/items/{item['public_id']}/").json() == item

    judgment_url = f"/api/rate/items/{item['public_id']}/judgment/"
    created = api.call("put", judgment_url, answer())
    assert created.status_code == 201
    result = created.json()
    assert result["outcome"] == "created" and result["revision"] == 1
    assert result["next_item"] and result["next_item"] != item["public_id"]

    repeated = api.call("put", judgment_url, answer())
    assert repeated.status_code == 200 and repeated.json()["outcome"] == "unchanged"
    assignment = Assignment.objects.get(public_id=item["public_id"])
    assert Judgment.objects.filter(assignment=assignment).count() == 1

    stale = api.call("put", judgment_url, answer(preference="B"))
    assert stale.status_code == 409
    assert Judgment.objects.get(assignment=assignment).preference == "A"

    invalid = answer(preference="C")
    invalid["ratings"][1]["scores"]["reasoning_clarity"] = 9
    invalid["ratings"][0]["hallucination"] = "factual"
    refused = api.call("put", judgment_url, invalid)
    assert refused.status_code == 400
    assert set(refused.json()["errors"]) == {"preference", "B.reasoning_clarity", "A.severity"}

    edited = api.call(
        "put", judgment_url, answer(preference="tie", revision=1, reason="Misclicked.")
    )
    assert edited.status_code == 200
    assert edited.json()["outcome"] == "updated" and edited.json()["revision"] == 2
    edit = JudgmentEdit.objects.get(judgment__assignment=assignment)
    assert edit.reason == "Misclicked." and edit.editor == physician
    assert (edit.before["preference"], edit.after["preference"]) == ("A", "tie")

    stored = api.call("get", f"/api/rate/items/{item['public_id']}/").json()["judgment"]
    assert stored["preference"] == "tie" and stored["revision"] == 2
    assert stored["rationale"] == "Clearer plan."
    assert stored["ratings"][1] == {
        "position": "B",
        "scores": {"reasoning_clarity": 4, "treatment_feasibility": 3},
        "hallucination": "none",
        "severity": "",
        "note": "",
    }

    following = result["next_item"]
    while following:
        current = api.call("get", f"/api/rate/items/{following}/").json()
        response = api.call("put", f"/api/rate/items/{following}/judgment/", answer())
        assert response.status_code == 201
        assert current["number"] == current["progress"]["done"] + 1
        following = response.json()["next_item"]

    done = api.call("post", f"/api/rate/studies/{study.public_id}/next/")
    assert done.status_code == 204
    assert api.call("get", "/api/rate/studies/").json()[0]["done"] == 3
    assert Judgment.objects.filter(study=study).count() == 3

    assert len(api.bodies) > 10
    for body in api.bodies:
        assert_blind(body, built)


def test_best_of_n_items_show_every_response_by_letter(coordinator: User, physician: User) -> None:
    built = open_study(
        coordinator=coordinator,
        raters=[physician],
        n_cases=1,
        mode="best_of_n",
        raters_per_item=1,
        rationale_required=True,
    )
    api = Recorder(physician)
    item = api.call("post", f"/api/rate/studies/{built.study.public_id}/next/").json()
    assert [r["position"] for r in item["responses"]] == ["A", "B", "C"]
    assert item["choices"] == ["A", "B", "C", "none"]
    assert item["rationale_required"] is True

    url = f"/api/rate/items/{item['public_id']}/judgment/"
    missing = api.call("put", url, answer(positions=3, rationale=""))
    assert missing.status_code == 400 and "rationale" in missing.json()["errors"]
    assert api.call("put", url, answer(positions=3, preference="C")).status_code == 201
    for body in api.bodies:
        assert_blind(body, built)


def test_a_malformed_body_is_refused(coordinator: User, physician: User) -> None:
    built = small_study(coordinator, physician)
    api = api_for(physician)
    item = api.post(f"/api/rate/studies/{built.study.public_id}/next/").json()
    url = f"/api/rate/items/{item['public_id']}/judgment/"
    body = answer()
    body["ratings"][0]["position"] = "7340001"
    refused = api.put(url, body, format="json")
    assert refused.status_code == 400 and "ratings" in refused.json()
    incomplete = answer()
    incomplete["ratings"] = incomplete["ratings"][:1]
    short = api.put(url, incomplete, format="json")
    assert short.status_code == 400 and "ratings" in short.json()["errors"]
    assert not Judgment.objects.exists()


def test_a_closed_study_refuses_judgments(coordinator: User, physician: User) -> None:
    built = small_study(coordinator, physician)
    api = api_for(physician)
    item = api.post(f"/api/rate/studies/{built.study.public_id}/next/").json()
    services.study_transition(study=built.study, to_status=Study.Status.CLOSED)

    url = f"/api/rate/items/{item['public_id']}/judgment/"
    refused = api.put(url, answer(), format="json")
    assert refused.status_code == 409 and "no longer open" in refused.json()["detail"]
    assert api.post(f"/api/rate/studies/{built.study.public_id}/next/").status_code == 204
    assert api.get(f"/api/rate/items/{item['public_id']}/").status_code == 200
    assert not Judgment.objects.exists()


def test_a_physician_sees_only_their_own_items_and_studies(
    coordinator: User, physician: User, other_physician: User
) -> None:
    mine = small_study(coordinator, physician)
    theirs = small_study(coordinator, other_physician)
    their_item = api_for(other_physician).post(f"/api/rate/studies/{theirs.study.public_id}/next/")
    public_id = their_item.json()["public_id"]

    api = api_for(physician)
    assert [s["public_id"] for s in api.get("/api/rate/studies/").json()] == [mine.study.public_id]
    assert api.post(f"/api/rate/studies/{theirs.study.public_id}/next/").status_code == 404
    assert api.get(f"/api/rate/items/{public_id}/").status_code == 404
    put = api.put(f"/api/rate/items/{public_id}/judgment/", answer(), format="json")
    assert put.status_code == 404
    assert api.get("/api/rate/items/no-such-item/").status_code == 404
    assert not Judgment.objects.exists()


def test_coordinators_and_anonymous_users_are_refused(coordinator: User, physician: User) -> None:
    built = small_study(coordinator, physician)
    item = api_for(physician).post(f"/api/rate/studies/{built.study.public_id}/next/").json()
    calls = [
        ("get", "/api/rate/studies/"),
        ("post", f"/api/rate/studies/{built.study.public_id}/next/"),
        ("get", f"/api/rate/items/{item['public_id']}/"),
        ("put", f"/api/rate/items/{item['public_id']}/judgment/"),
    ]
    for method, url in calls:
        as_coordinator = getattr(api_for(coordinator), method)(url, answer(), format="json")
        assert as_coordinator.status_code == 403, url
        anonymous = getattr(APIClient(), method)(url, answer(), format="json")
        assert anonymous.status_code in (401, 403), url
    assert not Judgment.objects.exists()


def test_a_token_client_can_rate(coordinator: User, physician: User) -> None:
    built = small_study(coordinator, physician)
    token = APIClient().post(
        "/api/auth/token/", {"username": physician.username, "password": PASSWORD}
    )
    client = APIClient(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    item = client.post(f"/api/rate/studies/{built.study.public_id}/next/").json()
    saved = client.put(f"/api/rate/items/{item['public_id']}/judgment/", answer(), format="json")
    assert saved.status_code == 201


def test_the_schema_describes_the_rater_endpoints(physician: User) -> None:
    response = api_for(physician).get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    paths = json.loads(response.content)["paths"]
    assert "put" in paths["/api/rate/items/{public_id}/judgment/"]
    assert "post" in paths["/api/rate/studies/{study_id}/next/"]
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
