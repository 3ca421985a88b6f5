from __future__ import annotations

from typing import Any

import factory
from factory.django import DjangoModelFactory

from clinic_eval.models import Arm, Case, DataImport, Response, Study, User


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    role = User.Role.PHYSICIAN
    password = factory.django.Password("a-long-test-password-1")


class StudyFactory(DjangoModelFactory):
    class Meta:
        model = Study
        skip_postgeneration_save = True

    title = factory.Sequence(lambda n: f"Study {n}")
    created_by = factory.SubFactory(UserFactory, role=User.Role.COORDINATOR)

    @factory.post_generation
    def coordinators(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create and extracted:
            self.coordinators.add(*extracted)


class CaseFactory(DjangoModelFactory):
    class Meta:
        model = Case

    study = factory.SubFactory(StudyFactory)
    external_id = factory.Sequence(lambda n: f"CASE-{n:05d}")
    stratum = "General"
    narrative = (
        "34-year-old woman with 3 years of primary infertility and bilateral tubal occlusion."
    )
    fields = factory.LazyFunction(lambda: {"age": 34, "tubal_findings": "bilateral occlusion"})
    ground_truth = factory.LazyFunction(
        lambda: {"diagnosis": ["tubal_factor"], "art_strategy": "IVF"}
    )
    original_text = "Plan: IVF with a GnRH antagonist protocol."
    original_decision = factory.LazyFunction(lambda: {"art_strategy": "IVF"})


class ArmFactory(DjangoModelFactory):
    class Meta:
        model = Arm

    study = factory.SubFactory(StudyFactory)
    label = factory.Sequence(lambda n: f"ARM-{n}")
    kind = Arm.Kind.IMPORTED


class ResponseFactory(DjangoModelFactory):
    class Meta:
        model = Response

    case = factory.SubFactory(CaseFactory)
    arm = factory.SubFactory(ArmFactory)
    raw_text = "Plan: IVF."
    display_text = factory.SelfAttribute("raw_text")


class DataImportFactory(DjangoModelFactory):
    class Meta:
        model = DataImport

    study = factory.SubFactory(StudyFactory)
    kind = DataImport.Kind.CASES
    format = DataImport.Format.JSONL
    filename = "cases.jsonl"
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    size_bytes = 2
    content = b"{}"
