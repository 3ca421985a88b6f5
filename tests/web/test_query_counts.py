"""SQL queries per rater request: a fixed bound each, and no growth with arms, cases or queue.

Every request of the rating loop, on the pages and through the API, is counted in studies
that differ in what an N+1 would scale with: the arms on screen (a pair, or best of four), the
cases, and the rater's queue (4 items or 90). Equal counts across them are the N+1 check; the
bounds catch a query added to every request. Raise a bound only for a query that must be there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clinic_eval.models import Study, User
from clinic_eval.studies import services
from tests.conftest import logged_in
from tests.support.factories import UserFactory
from tests.support.rating_study import ARM_LABELS, ORIGINAL_LABEL, full_answer, open_study

pytestmark = pytest.mark.django_db

# Measured: the whole request, authentication, middleware and session included. Inside the
# test's transaction each atomic block adds a SAVEPOINT and a RELEASE, counted here (2 in a
# submit); in production those are BEGIN/COMMIT. Issue 16 set the caps: API next 5, item 4,
# judgment 8, and the page submit that renders the next item 12. Before it: 13, 12, 21 (29
# rendering the next item), 15, 7 and 16. The item's case, responses, progress and queue place
# are one query ("shown").
BOUNDS = {
    "page: next": 4,  # session, user, study, claim
    "page: item": 4,  # session, user, seat, shown
    "page: submit": 9,  # session, user, seat, savepoint, judgment, ratings, done, release, claim
    "page: submit, next item rendered": 10,  # the same + shown
    "api: next": 4,  # token, study, claim, shown
    "api: item": 3,  # token, seat, shown
    "api: submit": 8,  # token, seat, savepoint, judgment, ratings, done, release, claim
}

SCENARIOS = {
    # name: (arm labels, mode, cases) -> arms on screen, queue length
    "pair, 4 cases": (ARM_LABELS[:2], "pairwise", 4),  # 2 on screen, 4 items (3 rated)
    "pair, 30 cases": (ARM_LABELS[:2], "pairwise", 30),  # 2 on screen, 30 items
    "3 pairs, 30 cases": ((*ARM_LABELS[:2], ORIGINAL_LABEL), "pairwise", 30),  # 90 items
    "best of 4, 4 cases": ((*ARM_LABELS, ORIGINAL_LABEL), "best_of_n", 4),  # 4 on screen
}


def _api_answer(positions: int) -> dict[str, Any]:
    return {
        "preference": "A",
        "rationale": "Clearer plan.",
        "revision": 0,
        "ratings": [
            {
                "position": "ABCDEFGH"[p],
                "scores": {"reasoning_clarity": 4, "treatment_feasibility": 3},
                "hallucination": "none",
            }
            for p in range(positions)
        ],
    }


def _count(call: Callable[[], Any], expected_status: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = call()
    assert response.status_code == expected_status, response.content[:500]
    return len(queries)


def _rating_loop_counts(coordinator: User, scenario: str) -> dict[str, int]:
    labels, mode, n_cases = SCENARIOS[scenario]
    rater = UserFactory(username=f"counted-{scenario.replace(' ', '').replace(',', '-')}")
    study: Study = open_study(
        coordinator=coordinator,
        raters=[rater],
        n_cases=n_cases,
        labels=labels,
        mode=mode,
        raters_per_item=1,
        title=f"Counting {scenario}",
    ).study
    positions = len(labels) if mode == "best_of_n" else 2
    counts: dict[str, int] = {}

    # The pages, as a browser without JavaScript uses them (redirect after each POST).
    page = logged_in(rater)
    next_url = reverse("rater:next", args=[study.public_id])
    page.get(reverse("rater:home"))  # the first request of a session stamps it once
    counts["page: next"] = _count(lambda: page.post(next_url), 302)
    item_url = page.post(next_url)["Location"]
    counts["page: item"] = _count(lambda: page.get(item_url), 200)
    counts["page: submit"] = _count(lambda: page.post(item_url, full_answer(positions)), 302)
    item_url = page.post(next_url)["Location"]
    counts["page: submit, next item rendered"] = _count(
        lambda: page.post(item_url, full_answer(positions), HTTP_HX_REQUEST="true"), 200
    )

    # The JSON API with a token, as benchmarks/load.py drives it.
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=rater).key}")
    api_next = f"/api/rate/studies/{study.public_id}/next/"
    counts["api: next"] = _count(lambda: api.post(api_next), 200)
    item_id = api.post(api_next).json()["public_id"]
    counts["api: item"] = _count(lambda: api.get(f"/api/rate/items/{item_id}/"), 200)
    counts["api: submit"] = _count(
        lambda: api.put(
            f"/api/rate/items/{item_id}/judgment/", _api_answer(positions), format="json"
        ),
        201,
    )
    return counts


def test_rater_requests_run_a_bounded_number_of_queries_whatever_the_study_size(
    coordinator: User,
) -> None:
    counts = {scenario: _rating_loop_counts(coordinator, scenario) for scenario in SCENARIOS}
    first = counts["pair, 4 cases"]
    for scenario, measured in counts.items():
        assert measured == first, f"{scenario}: {measured} != {first} (an N+1?)"
    assert first == BOUNDS, "the pinned counts: lower a bound when a query goes, never raise it"


def _original_sync_queries(coordinator: User, n_cases: int) -> int:
    from clinic_eval.models import Arm
    from tests.support.factories import CaseFactory

    study = services.study_create(title=f"Originals {n_cases}", created_by=coordinator)
    for _ in range(n_cases):
        CaseFactory(study=study, original_text="Plan: IVF.")
    Arm.objects.create(study=study, label="Physician", kind=Arm.Kind.PHYSICIAN_ORIGINAL)
    with CaptureQueriesContext(connection) as queries:
        assert services.physician_original_responses_sync(study=study) == n_cases
    return len(queries)


def test_syncing_physician_originals_does_not_query_per_case(coordinator: User) -> None:
    assert _original_sync_queries(coordinator, 3) == _original_sync_queries(coordinator, 30)
