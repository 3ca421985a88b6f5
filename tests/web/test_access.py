"""Every route x every role, generated from the URLconf.

A route added without an entry in ``RULES`` fails ``test_every_route_has_an_access_rule``, so
nobody can ship a page without deciding who may open it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from alignment_jobs.models import GenerationJob, GenerationSpec
from clinic_eval.models import (
    Arm,
    Assignment,
    Case,
    CaseRubric,
    DataImport,
    Judgment,
    PowerAnalysis,
    Response,
    RubricCriterion,
    Study,
    StudyRater,
    User,
)
from clinic_eval.rating import services
from clinic_eval.rubrics import selectors as rubric_selectors
from tests.conftest import logged_in
from tests.support.factories import ArmFactory, CaseFactory, DataImportFactory, ResponseFactory

pytestmark = pytest.mark.django_db

PUBLIC = "public"  # anyone, signed in or not
SIGNED_IN = "signed-in"  # any signed-in user (the API schema and its docs)
COORDINATOR = "coordinator"  # coordinators, and only for their own studies
PHYSICIAN = "physician"  # raters
ADJUDICATOR = "adjudicator"  # a physician, and only for the items handed to them
DJANGO_ADMIN = "django-admin"  # superusers, checked by Django's admin itself

RULES: dict[str, str] = {
    "home": PUBLIC,
    "healthz": PUBLIC,
    "login": PUBLIC,
    "logout": PUBLIC,
    "api:token": PUBLIC,
    "api:schema": SIGNED_IN,
    "api:docs": SIGNED_IN,
    "rater:home": PHYSICIAN,
    "rater:next": PHYSICIAN,
    "rater:rated": PHYSICIAN,
    "rater:item": PHYSICIAN,
    "api:rate_study_list": PHYSICIAN,
    "api:rate_next": PHYSICIAN,
    "api:rate_item": PHYSICIAN,
    "api:rate_judgment": PHYSICIAN,
    "rater:adjudication_queue": PHYSICIAN,
    "rater:adjudication_item": ADJUDICATOR,
    "coordinator:study_list": COORDINATOR,
    "coordinator:study_detail": COORDINATOR,
    "coordinator:study_transition": COORDINATOR,
    "coordinator:arm_create": COORDINATOR,
    "coordinator:case_list": COORDINATOR,
    "coordinator:case_detail": COORDINATOR,
    "coordinator:import_create": COORDINATOR,
    "coordinator:import_detail": COORDINATOR,
    "coordinator:study_design": COORDINATOR,
    "coordinator:study_results": COORDINATOR,
    "coordinator:response_viewer": COORDINATOR,
    "coordinator:study_export": COORDINATOR,
    "coordinator:study_export_file": COORDINATOR,
    "api:study_report": COORDINATOR,
    "api:study_export": COORDINATOR,
    "api:study_export_file": COORDINATOR,
    "coordinator:study_design_preview": COORDINATOR,
    "coordinator:study_design_csv": COORDINATOR,
    "coordinator:study_power": COORDINATOR,
    "coordinator:study_power_status": COORDINATOR,
    "coordinator:study_balance_csv": COORDINATOR,
    "coordinator:study_monitor": COORDINATOR,
    "coordinator:study_audit": COORDINATOR,
    "coordinator:rater_remind": COORDINATOR,
    "coordinator:rater_reassign": COORDINATOR,
    "coordinator:adjudication_assign": COORDINATOR,
    "api:study_list": COORDINATOR,
    "api:study_detail": COORDINATOR,
    "api:case_list": COORDINATOR,
    "api:case_detail": COORDINATOR,
    "api:arm_list": COORDINATOR,
    "api:import_list": COORDINATOR,
    "api:import_detail": COORDINATOR,
    "jobs:job_list": COORDINATOR,
    "jobs:job_detail": COORDINATOR,
    "jobs:study_job_workers": COORDINATOR,
    "jobs:job_cancel": COORDINATOR,
    "jobs:job_retry_failed": COORDINATOR,
    "jobs:spec_edit": COORDINATOR,
    "jobs:held_responses": COORDINATOR,
    "jobs:response_review": COORDINATOR,
    "api:job_list": COORDINATOR,
    "api:job_detail": COORDINATOR,
    "api:job_cancel": COORDINATOR,
    "api:job_retry_failed": COORDINATOR,
    "api:spec": COORDINATOR,
    "jobs:rubric_draft": COORDINATOR,
    "jobs:rubric_grade": COORDINATOR,
    "jobs:rubric_jobs_status": COORDINATOR,
    "rubrics:overview": COORDINATOR,
    "rubrics:import": COORDINATOR,
    "rubrics:export": COORDINATOR,
    "rubrics:detail": COORDINATOR,
    "rubrics:criterion_add": COORDINATOR,
    "rubrics:criterion_edit": COORDINATOR,
    "rubrics:criterion_delete": COORDINATOR,
    "rubrics:queue": PHYSICIAN,
    "rubrics:review": PHYSICIAN,
    "rubrics:verify": PHYSICIAN,
    "rubrics:review_add": PHYSICIAN,
    "rubrics:review_edit": PHYSICIAN,
    "rubrics:review_delete": PHYSICIAN,
}


@dataclass(frozen=True)
class Route:
    name: str
    kwargs: tuple[str, ...]


def all_routes() -> list[Route]:
    routes: list[Route] = []

    def walk(patterns: list, namespace: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.namespace == "admin":
                    routes.append(Route("admin:*", ()))
                    continue
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry.url_patterns, inner)
            elif isinstance(entry, URLPattern):
                assert entry.name, f"unnamed route {entry.pattern}"
                routes.append(Route(f"{namespace}{entry.name}", tuple(entry.pattern.converters)))

    walk(get_resolver().url_patterns, "")
    return routes


def test_every_route_has_an_access_rule() -> None:
    unruled = [route.name for route in all_routes() if route.name not in {*RULES, "admin:*"}]
    assert unruled == [], f"add these routes to RULES in {__file__}"


@pytest.fixture
def objects(study: Study, physician: User) -> dict[str, int]:
    StudyRater.objects.create(study=study, rater=physician)
    case = CaseFactory(study=study)
    data_import = DataImportFactory(study=study, status=DataImport.Status.FAILED)
    arm = ArmFactory(study=study, label="SFT", kind=Arm.Kind.MODEL)
    GenerationSpec.objects.create(arm=arm, base_model_path="/models/sft")
    job = GenerationJob.objects.create(study=study, shard_size=8)
    response = ResponseFactory(case=case, arm=arm, review=Response.Review.HELD)
    rubric = a_rubric(study, case)
    analysis = PowerAnalysis.objects.create(study=study, inputs={"kind": "preference"})
    return {
        "study_id": study.pk,
        "case_id": case.pk,
        "import_id": data_import.pk,
        "arm_id": arm.pk,
        "job_id": job.pk,
        "response_id": response.pk,
        "rater_id": physician.pk,
        "name": "judgments.csv",
        "rubric_id": rubric.pk,
        "criterion_id": rubric.criteria.first().pk,
        "analysis_id": analysis.pk,
    }


def a_rubric(study: Study, case: Case) -> CaseRubric:
    # Written directly: the services refuse to add rubrics to an open study, and the physician
    # world is one.
    rubric = CaseRubric.objects.create(study=study, case=case, source=CaseRubric.Source.WRITTEN)
    RubricCriterion.objects.create(rubric=rubric, text="Orders AMH", points=3)
    RubricCriterion.objects.create(rubric=rubric, text="Invents a lab value", points=-2, position=1)
    return rubric


def fetch(client: Client, name: str, kwargs: dict[str, int]) -> int:
    """GET the route; an empty POST, or PUT, where the route accepts only that."""
    url = reverse(name, kwargs=kwargs)
    response = client.get(url)
    if response.status_code == 405:
        response = client.post(url, {})
    if response.status_code == 405:
        response = client.put(url, {}, content_type="application/json")
    return response.status_code


def every_method(client: Client, name: str, kwargs: dict[str, int]) -> list[int]:
    """Status of GET and of a POST with a plausible body, so writes are probed too."""
    url = reverse(name, kwargs=kwargs)
    body = {"title": "x", "label": "x", "kind": "model", "to_status": "ready"}
    return [client.get(url).status_code, client.post(url, body).status_code]


def row_counts() -> tuple[int, ...]:
    models = (Study, Case, Arm, DataImport, User, GenerationSpec, GenerationJob)
    return (
        *(model.objects.count() for model in models),
        Response.objects.exclude(review=Response.Review.HELD).count(),
        GenerationJob.objects.exclude(status=GenerationJob.Status.QUEUED).count(),
    )


COORDINATOR_ROUTES = [name for name, rule in RULES.items() if rule == COORDINATOR]


@pytest.mark.parametrize("name", COORDINATOR_ROUTES)
def test_coordinator_routes_by_role(
    name: str,
    objects: dict[str, int],
    coordinator: User,
    other_coordinator: User,
    physician: User,
) -> None:
    route = next(r for r in all_routes() if r.name == name)
    kwargs = {key: objects[key] for key in route.kwargs}
    is_api = name.startswith("api:")
    before = row_counts()

    anonymous = fetch(Client(), name, kwargs)
    assert anonymous in ((401, 403) if is_api else (302,)), f"anonymous got {anonymous}"
    assert fetch(logged_in(physician), name, kwargs) == 403
    assert set(every_method(logged_in(physician), name, kwargs)) <= {403, 405}
    assert row_counts() == before, "a refused request changed data"

    outsider = fetch(logged_in(other_coordinator), name, kwargs)
    assert outsider == (404 if "study_id" in kwargs else 200), (
        "a coordinator of another study must not see this study's objects"
    )
    if "study_id" in kwargs:
        assert set(every_method(logged_in(other_coordinator), name, kwargs)) <= {404, 405}
    assert row_counts() == before, "a refused request changed data"
    # An API action the domain refuses (400: e.g. retrying a job with nothing failed) still
    # shows that the owner got through the access check.
    owner = fetch(logged_in(coordinator), name, kwargs)
    assert owner in ((200, 302, 400) if is_api else (200, 302)), f"the owner got {owner}"


def test_anonymous_coordinator_page_redirects_to_login_with_next(objects: dict) -> None:
    url = reverse("coordinator:study_detail", kwargs={"study_id": objects["study_id"]})
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_rater_home_is_for_physicians(coordinator: User, physician: User) -> None:
    url = reverse("rater:home")
    assert Client().get(url).status_code == 302
    assert logged_in(coordinator).get(url).status_code == 403
    assert logged_in(physician).get(url).status_code == 200


@pytest.mark.parametrize("name", ["api:schema", "api:docs"])
def test_api_docs_need_a_signed_in_user(name: str, physician: User) -> None:
    url = reverse(name)
    assert Client().get(url).status_code in (401, 403)
    assert logged_in(physician).get(url).status_code == 200


def test_the_admin_refuses_coordinators_and_physicians(coordinator: User, physician: User) -> None:
    for user in (coordinator, physician):
        response = logged_in(user).get(reverse("admin:clinic_eval_case_changelist"))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_a_disabled_coordinator_loses_access(coordinator: User, objects: dict) -> None:
    client = logged_in(coordinator)
    url = reverse("coordinator:study_detail", kwargs={"study_id": objects["study_id"]})
    assert client.get(url).status_code == 200
    User.objects.filter(pk=coordinator.pk).update(is_active=False)
    assert client.get(url).status_code == 302


# --- Physician routes: every role against a rater's own study and item ------------------------

PHYSICIAN_ROUTES = [name for name, rule in RULES.items() if rule == PHYSICIAN]
#  Expected status by role for a physician route that names the study or the item. A fellow
#  rater of the same study may open the study's routes (they get their own queue) but never
#  another rater's item; anyone else learns nothing, not even that the object exists.
OUTSIDER_NOT_FOUND = 404


@pytest.fixture
def rater_world(coordinator: User, physician: User, other_physician: User) -> dict:
    from tests.support.rating_study import open_study, physicians

    fellow = physicians(1, prefix="fellow")[0]
    built = open_study(coordinator=coordinator, raters=[physician, fellow], n_cases=4)
    item = services.assignment_next(rater=physician, study=built.study)
    assert item is not None
    rubric = a_rubric(built.study, built.cases[0])
    return {
        "study_id": built.study.public_id,
        "public_id": item.public_id,
        "rubric_id": rubric_selectors.rubric_public_id(rubric),
        "criterion_id": rubric_selectors.criterion_public_id(rubric.criteria.first()),
        "fellow": fellow,
        "outsider": other_physician,
    }


def rater_row_counts() -> tuple[int, ...]:
    return (
        Judgment.objects.count(),
        Assignment.objects.filter(status=Assignment.Status.DONE).count(),
        Assignment.objects.filter(first_shown_at__isnull=False).count(),
    )


def every_status(client: Client, url: str) -> set[int]:
    return {
        client.get(url).status_code,
        client.post(url, {}).status_code,
        client.put(url, {}, content_type="application/json").status_code,
    }


@pytest.mark.parametrize("name", PHYSICIAN_ROUTES)
def test_physician_routes_by_role(
    name: str,
    rater_world: dict,
    coordinator: User,
    other_coordinator: User,
    physician: User,
) -> None:
    route = next(r for r in all_routes() if r.name == name)
    url = reverse(name, kwargs={key: rater_world[key] for key in route.kwargs})
    is_api = name.startswith("api:")
    before = rater_row_counts()

    assert every_status(Client(), url) <= ({401, 403, 405} if is_api else {302, 405})
    for staff in (coordinator, other_coordinator):
        assert every_status(logged_in(staff), url) <= {403, 405}, "coordinators never rate"
    assert rater_row_counts() == before, "a refused request changed data"

    outsider = every_status(logged_in(rater_world["outsider"]), url)
    if route.kwargs:
        assert outsider <= {OUTSIDER_NOT_FOUND, 405}, "a physician not on the study sees nothing"
    assert rater_row_counts() == before, "a refused request changed data"
    if "public_id" in route.kwargs:
        fellow = every_status(logged_in(rater_world["fellow"]), url)
        assert fellow <= {OUTSIDER_NOT_FOUND, 405}, "another rater's item stays theirs"
        assert rater_row_counts() == before, "a refused request changed data"

    owner = fetch(logged_in(physician), name, {k: rater_world[k] for k in route.kwargs})
    # 400: an empty judgment, refused by validation after the access check let the rater in.
    assert owner in ((200, 400) if is_api else (200, 302)), f"the rater got {owner}"


# --- Adjudicator routes: only the physician an item was handed to -----------------------------

ADJUDICATOR_ROUTES = [name for name, rule in RULES.items() if rule == ADJUDICATOR]


@pytest.fixture
def adjudication_world(coordinator: User) -> dict:
    """An item two raters disagreed on, handed to the third physician of the study."""
    from clinic_eval.models import Adjudication
    from tests.adjudication.world import adjudicated_study, comparisons, pair, rate, seats
    from tests.support.rating_study import physicians

    trio = physicians(3, prefix="trio")
    study = adjudicated_study(coordinator=coordinator, raters=trio, n_cases=1).study
    comparison = comparisons(study)[0]
    first, second = pair(comparison)
    one, two = seats(comparison)
    rate(one, prefer=first)
    rate(two, prefer=second)
    adjudication = Adjudication.objects.get(comparison=comparison)
    return {
        "adjudication_id": adjudication.public_id,
        "adjudicator": adjudication.adjudicator,
        "raters": [one.rater, two.rater],
    }


@pytest.mark.parametrize("name", ADJUDICATOR_ROUTES)
def test_adjudicator_routes_by_role(
    name: str,
    adjudication_world: dict,
    coordinator: User,
    other_coordinator: User,
    other_physician: User,
) -> None:
    from clinic_eval.models import Adjudication

    route = next(r for r in all_routes() if r.name == name)
    kwargs = {key: adjudication_world[key] for key in route.kwargs}
    url = reverse(name, kwargs=kwargs)

    def recorded() -> int:
        return Adjudication.objects.filter(status=Adjudication.Status.DONE).count()

    assert every_status(Client(), url) <= {302, 405}
    for staff in (coordinator, other_coordinator):
        assert every_status(logged_in(staff), url) <= {403, 405}, "coordinators never adjudicate"
    for rater in (*adjudication_world["raters"], other_physician):
        assert every_status(logged_in(rater), url) <= {OUTSIDER_NOT_FOUND, 405}, (
            "the item's raters and other physicians learn nothing of it"
        )
    assert recorded() == 0, "a refused request changed data"
    assert fetch(logged_in(adjudication_world["adjudicator"]), name, kwargs) == 200
