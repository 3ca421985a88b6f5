"""Schemathesis against the API's own OpenAPI schema, as a coordinator and as a physician.

Every operation is fuzzed for each role with positive and negative data. A response must not be
a 5xx, must use a documented status code and content type, and its body must match the schema;
a physician must never get a 2xx from a coordinator operation. Half the generated cases carry
the ids of real rows (the role's own study, case, arm, import, job, item), so the fuzzer gets
past the 404s and into the handlers.

This is the short form for CI (``FUZZ_EXAMPLES`` cases per operation and role);
``benchmarks/fuzz.py`` runs the same tests with many more.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from alignment_jobs.models import GenerationJob, GenerationSpec
from clinic_eval.models import Arm, Assignment, DataImport, Study, User
from clinic_eval.wsgi import application
from tests.support.factories import ArmFactory, CaseFactory, DataImportFactory, UserFactory
from tests.support.rating_study import open_study

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

# Cases per operation and role; the benchmark raises it.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
# CI runs the same derandomized cases every time; the benchmark may ask for another seed.
FUZZ_SEED = os.environ.get("FUZZ_SEED")
# Where each test appends a line of counts (the benchmark's summary reads it).
STATS_FILE = os.environ.get("FUZZ_STATS_FILE", "")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# Physicians may use these; everything else under /api/ is for coordinators.
PUBLIC_PATHS = ("/api/auth/token/",)
RATER_PREFIX = "/api/rate/"


def _schema_document() -> dict:
    """The document /api/schema/ serves, built without a request (that view needs a user)."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document))


SCHEMA = schemathesis.openapi.from_dict(_schema_document())
SCHEMA.app = application
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


def is_coordinator_operation(path: str) -> bool:
    return not path.startswith(RATER_PREFIX) and path not in PUBLIC_PATHS


@dataclass(frozen=True)
class World:
    """Tokens and the real ids each role should reach, by path parameter name."""

    tokens: dict[str, str]
    coordinator_ids: dict[str, object]
    rater_ids: dict[str, object]


@pytest.fixture
def world(db: None) -> World:
    coordinator = UserFactory(username="fz-coord", role=User.Role.COORDINATOR)
    physician = UserFactory(username="fz-dr", role=User.Role.PHYSICIAN)
    opened = open_study(coordinator=coordinator, raters=[physician], n_cases=3, raters_per_item=1)
    # A draft study with one of everything a coordinator endpoint can name.
    study = Study.objects.create(title="Fuzz workbench", created_by=coordinator)
    study.coordinators.add(coordinator)
    case = CaseFactory(study=study)
    arm = ArmFactory(study=study, label="SFT", kind=Arm.Kind.MODEL)
    GenerationSpec.objects.create(arm=arm, base_model_path="/models/sft")
    job = GenerationJob.objects.create(study=study, shard_size=8)
    data_import = DataImportFactory(study=study, status=DataImport.Status.FAILED)
    assignment = Assignment.objects.filter(rater=physician).order_by("pk").first()
    assert assignment is not None
    return World(
        tokens={
            "coordinator": Token.objects.create(user=coordinator).key,
            "physician": Token.objects.create(user=physician).key,
        },
        coordinator_ids={
            "study_id": study.pk,
            "case_id": case.pk,
            "arm_id": arm.pk,
            "job_id": job.pk,
            "import_id": data_import.pk,
            "name": "judgments.csv",
        },
        rater_ids={"study_id": opened.study.public_id, "public_id": assignment.public_id},
    )


@pytest.fixture
def in_test_transaction() -> Iterator[None]:
    """Calls go through the real WSGI handler, which closes a connection that is not in
    autocommit mode at each request; inside the test's transaction that would abort it.
    Django's own test client disconnects the same receiver for the same reason."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def case_strategy(
    operation: schemathesis.APIOperation, real_ids: dict[str, object]
) -> st.SearchStrategy:
    names = [parameter.name for parameter in operation.path_parameters]
    strategies = [
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    if names and all(name in real_ids for name in names):
        # The same generators with the path pinned to real rows, so bodies and queries reach
        # the handler instead of stopping at a 404.
        real = {name: real_ids[name] for name in names}
        strategies += [
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=real),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE, path_parameters=real),
        ]
    return st.one_of(strategies)


def fuzz(label: str, role: str, world: World) -> None:
    operation = OPERATIONS[label]
    real_ids = world.rater_ids if operation.path.startswith(RATER_PREFIX) else world.coordinator_ids
    headers = {"Authorization": f"Token {world.tokens[role]}"}
    refused = role == "physician" and is_coordinator_operation(operation.path)
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=FUZZ_SEED is None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=case_strategy(operation, real_ids))
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        if refused:
            assert not 200 <= response.status_code < 300, (
                f"a physician got {response.status_code} from {label}: {case.as_curl_command()}"
            )
        # Even a path no URL pattern matches (-1, "a/b") answers the documented JSON 404.
        case.validate_response(response, checks=CHECKS, headers=headers)

    if FUZZ_SEED is not None:
        run = seed(int(FUZZ_SEED))(run)
    try:
        run()
    finally:
        if STATS_FILE:
            line = {"role": role, "operation": label, "statuses": dict(statuses)}
            with Path(STATS_FILE).open("a") as stats:
                stats.write(json.dumps(line) + "\n")


@pytest.mark.usefixtures("in_test_transaction")
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_as_coordinator(label: str, world: World) -> None:
    fuzz(label, "coordinator", world)


@pytest.mark.usefixtures("in_test_transaction")
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_as_physician(label: str, world: World) -> None:
    fuzz(label, "physician", world)


def test_every_operation_is_fuzzed() -> None:
    """The schema lists every /api/ route except the schema and its docs page."""
    assert len(OPERATIONS) >= 26
    assert all(label.split(" ", 1)[1].startswith("/api/") for label in OPERATIONS)
