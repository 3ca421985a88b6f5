"""An open pairwise study for the load benchmark (benchmarks/load.py), with one API token per rater.

The study is built through the services a coordinator's pages use: arms, case and response
imports, the design, then ready and open (which freezes the design and builds every seat).
Only the accounts are bulk-inserted: ``user_create`` hashes a password with PBKDF2, which for
50 raters would cost more than everything else, and the load signs in with tokens anyway.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from clinic_eval import synthetic
from clinic_eval.config import default_analysis_plan, default_design, default_rubric
from clinic_eval.design import services as design_services
from clinic_eval.imports import services as imports_services
from clinic_eval.models import Arm, Assignment, DataImport, Study, User
from clinic_eval.studies import services as studies_services

COORDINATOR = "load-coordinator"
RATER_PREFIX = "load-dr"
MODEL_ARMS = ("SFT-sim", "GRPO-sim")
ORIGINAL_ARM = "Physician"
# Three pairs from three arms: three comparisons per case, so a third of the cases suffice.
ARM_SETS = [["GRPO-sim", "SFT-sim"], ["Physician", "SFT-sim"], ["GRPO-sim", "Physician"]]


def cases_for(*, raters: int, items_per_rater: int, raters_per_item: int) -> int:
    """How many cases give every rater at least ``items_per_rater`` items."""
    return math.ceil(items_per_rater * raters / (len(ARM_SETS) * raters_per_item))


class Command(BaseCommand):
    help = (
        "Create an open pairwise study with N load-test physicians and write their API tokens "
        "and the study's public id to a JSON file (for benchmarks/load.py; never in production)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--raters", type=int, default=50)
        parser.add_argument(
            "--cases",
            type=int,
            default=None,
            help="Cases to import (3 comparisons each); default: enough for --items-per-rater",
        )
        parser.add_argument(
            "--items-per-rater",
            type=int,
            default=200,
            help="Used when --cases is not given: the least each rater's queue should hold",
        )
        parser.add_argument("--raters-per-item", type=int, default=2)
        parser.add_argument("--tokens-file", type=Path, required=True)
        parser.add_argument("--title", default="Load benchmark: synthetic cases")
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        n_raters: int = options["raters"]
        per_item: int = options["raters_per_item"]
        if n_raters < 1:
            raise CommandError("--raters must be at least 1")
        if not 1 <= per_item <= n_raters:
            raise CommandError("--raters-per-item must be between 1 and --raters")
        n_cases = options["cases"] or cases_for(
            raters=n_raters, items_per_rater=options["items_per_rater"], raters_per_item=per_item
        )
        if n_cases < 1:
            raise CommandError("--cases must be at least 1")
        started = time.perf_counter()
        study, tokens = seed_load_study(
            n_raters=n_raters,
            n_cases=n_cases,
            raters_per_item=per_item,
            title=options["title"],
            seed=options["seed"],
        )
        seats = Assignment.objects.filter(study=study).count()
        payload = {
            "study": study.public_id,
            "study_pk": study.pk,
            "cases": n_cases,
            "seats": seats,
            "tokens": tokens,
        }
        options["tokens_file"].write_text(json.dumps(payload, indent=2), encoding="utf-8")
        self.stdout.write(
            f"Opened study {study.pk} ({study.public_id}): {n_raters} raters, {n_cases} cases, "
            f"{seats} items (about {seats // n_raters} per rater) in "
            f"{time.perf_counter() - started:.1f} s; tokens in {options['tokens_file']}"
        )


def _import(study: Study, coordinator: User, kind: str, rows: list[dict], name: str) -> None:
    data_import = imports_services.data_import_create(
        study=study,
        kind=kind,
        filename=name,
        content=synthetic.dumps_jsonl(rows).encode("utf-8"),
        created_by=coordinator,
    )
    data_import = imports_services.data_import_run(import_id=data_import.pk)
    if data_import.status != DataImport.Status.SUCCEEDED:
        raise CommandError(f"the {kind} import failed: {data_import.errors[:3]}")


@transaction.atomic
def seed_load_study(
    *, n_raters: int, n_cases: int, raters_per_item: int, title: str, seed: int
) -> tuple[Study, dict[str, str]]:
    usernames = [f"{RATER_PREFIX}-{i:03d}" for i in range(n_raters)]
    taken = User.objects.filter(username__in=[COORDINATOR, *usernames]).exists()
    if taken:
        raise CommandError("load-test accounts already exist here; seed into a fresh database")
    accounts = [User(username=COORDINATOR, role=User.Role.COORDINATOR)] + [
        User(username=name, role=User.Role.PHYSICIAN) for name in usernames
    ]
    for account in accounts:
        account.set_unusable_password()
    User.objects.bulk_create(accounts)
    coordinator = User.objects.get(username=COORDINATOR)
    raters = list(User.objects.filter(username__in=usernames).order_by("username"))
    tokens = Token.objects.bulk_create(
        [Token(key=Token.generate_key(), user=rater) for rater in raters]
    )

    study = studies_services.study_create(title=title, created_by=coordinator)
    for label in MODEL_ARMS:
        studies_services.arm_create(study=study, label=label, kind=Arm.Kind.IMPORTED)
    studies_services.arm_create(study=study, label=ORIGINAL_ARM, kind=Arm.Kind.PHYSICIAN_ORIGINAL)
    cases = synthetic.generate_cases(n=n_cases, seed=seed)
    responses = [
        row
        for row in synthetic.generate_simulated_responses(cases, seed=seed)
        if row["arm"] in MODEL_ARMS
    ]
    _import(study, coordinator, DataImport.Kind.CASES, cases, "load-cases.jsonl")
    _import(study, coordinator, DataImport.Kind.RESPONSES, responses, "load-responses.jsonl")
    design_services.study_design_update(
        study=study,
        design=default_design() | {"arm_sets": ARM_SETS, "raters_per_item": raters_per_item},
        rubric=default_rubric(),
        analysis_plan=default_analysis_plan(),
        rater_ids=[rater.pk for rater in raters],
    )
    design_services.study_transition(study=study, to_status=Study.Status.READY)
    study = design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    by_user = {token.user_id: token.key for token in tokens}
    return study, {rater.username: by_user[rater.pk] for rater in raters}
