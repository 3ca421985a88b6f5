"""Criterion rubrics: HealthBench JSONL in and out, physician edits, verification."""

from __future__ import annotations

import json

import pytest

from clinic_eval.errors import DomainError
from clinic_eval.models import CaseRubric, RubricChange, Study, StudyRater, User
from clinic_eval.rubrics import services
from clinic_eval.rubrics.selectors import rubric_is_usable
from clinic_eval.rubrics.services import CriterionInput
from tests.support.factories import CaseFactory

pytestmark = pytest.mark.django_db

LINE = {
    "case_id": "C-001",
    "rubrics": [
        {"criterion": "Recommends IVF given bilateral tubal block", "points": 5,
         "tags": ["axis:accuracy", "level:example"]},
        {"criterion": "Explains the plan in plain words", "points": 2,
         "tags": ["axis:communication_quality", "level:cluster", "source:physician"]},
        {"criterion": "Recommends IUI despite blocked tubes", "points": -6,
         "tags": ["axis:accuracy"]},
    ],
}  # fmt: skip


@pytest.fixture
def case(study: Study) -> object:
    return CaseFactory(study=study, external_id="C-001")


def test_healthbench_jsonl_round_trips(study: Study, case: object, coordinator: User) -> None:
    (rubric,) = services.rubrics_import(
        study=study, text=json.dumps(LINE) + "\n", imported_by=coordinator
    )
    criteria = list(rubric.criteria.all())
    assert [(c.points, c.axis, c.level) for c in criteria] == [
        (5, "accuracy", "example"),
        (2, "communication_quality", "cluster"),
        (-6, "accuracy", "example"),
    ]
    assert criteria[1].tags == ["source:physician"]
    exported = json.loads(next(services.rubrics_jsonl([rubric])))
    assert exported["case_id"] == "C-001"
    assert exported["rubrics"] == [
        LINE["rubrics"][0],
        LINE["rubrics"][1],
        {**LINE["rubrics"][2], "tags": ["axis:accuracy", "level:example"]},
    ]


def test_a_bad_file_imports_nothing_and_names_its_lines(
    study: Study, case: object, coordinator: User
) -> None:
    lines = [
        json.dumps(LINE),
        "{not json",
        json.dumps({"case_id": "C-404", "rubrics": LINE["rubrics"]}),
        json.dumps({"case_id": "C-001", "rubrics": [{"criterion": "x", "points": 0}]}),
        json.dumps({"stratum": "x", "case_id": "C-001", "rubrics": LINE["rubrics"]}),
        json.dumps({"case_id": "C-002", "rubrics": [{"criterion": "harm", "points": -3}]}),
    ]
    with pytest.raises(DomainError) as error:
        services.rubrics_import(study=study, text="\n".join(lines), imported_by=coordinator)
    message = str(error.value)
    for expected in (
        "line 2: not valid JSON",
        "line 4: criterion 1: points must be",
        "line 5: give either",
        "line 6: a rubric needs at least one criterion with positive points",
    ):
        assert expected in message
    assert not CaseRubric.objects.exists()
    with pytest.raises(DomainError, match="line 2: no case 'C-404'"):
        services.rubrics_import(
            study=study, text="\n".join(lines[::2][:2]), imported_by=coordinator
        )


def test_edits_bump_the_version_and_void_earlier_verifications(
    study: Study, case: object, physician: User, other_physician: User
) -> None:
    for rater in (physician, other_physician):
        StudyRater.objects.create(study=study, rater=rater)
    study.design = {**study.design, "rubric_verifiers": 2}
    study.save()
    rubric = services.rubric_store(
        study=study,
        case=case,
        source=CaseRubric.Source.DRAFTED,
        criteria=[CriterionInput("Orders AMH", 3), CriterionInput("Invents a lab value", -4)],
    )
    services.rubric_verify(rubric=rubric, physician=physician, version=rubric.version)
    assert not rubric_is_usable(rubric=rubric)

    first = rubric.criteria.first()
    services.criterion_edit(
        criterion=first, author=other_physician, data=CriterionInput("Orders AMH and AFC", 4)
    )
    services.criterion_add(
        rubric=rubric, author=other_physician, data=CriterionInput("Checks semen analysis", 2)
    )
    rubric.refresh_from_db()
    assert rubric.version == 3
    services.rubric_verify(rubric=rubric, physician=other_physician, version=3)
    assert not rubric_is_usable(rubric=rubric), "the first verification was of version 1"
    with pytest.raises(DomainError, match="changed this rubric"):
        services.rubric_verify(rubric=rubric, physician=physician, version=1)
    services.rubric_verify(rubric=rubric, physician=physician, version=3)
    assert rubric_is_usable(rubric=rubric)

    actions = list(rubric.changes.values_list("action", "author__username"))
    assert actions == [
        (RubricChange.Action.VERIFY, physician.username),
        (RubricChange.Action.EDIT, other_physician.username),
        (RubricChange.Action.ADD, other_physician.username),
        (RubricChange.Action.VERIFY, other_physician.username),
        (RubricChange.Action.VERIFY, physician.username),
    ]
    edit = rubric.changes.get(action=RubricChange.Action.EDIT)
    assert edit.before["points"] == 3 and edit.after["points"] == 4


def test_the_last_positive_criterion_cannot_go(
    study: Study, case: object, coordinator: User
) -> None:
    rubric = services.rubric_store(
        study=study,
        case=case,
        source=CaseRubric.Source.WRITTEN,
        criteria=[CriterionInput("Orders AMH", 3), CriterionInput("Invents a lab value", -4)],
    )
    positive = rubric.criteria.get(points=3)
    with pytest.raises(DomainError, match="positive points"):
        services.criterion_delete(criterion=positive, author=coordinator)
    with pytest.raises(DomainError, match="positive points"):
        services.criterion_edit(
            criterion=positive, author=coordinator, data=CriterionInput("Orders AMH", -3)
        )


def test_outsiders_cannot_edit(study: Study, case: object, physician: User) -> None:
    rubric = services.rubric_store(
        study=study, case=case, source=CaseRubric.Source.WRITTEN,
        criteria=[CriterionInput("Orders AMH", 3)],
    )  # fmt: skip
    with pytest.raises(DomainError, match="only the study's physicians"):
        services.criterion_add(rubric=rubric, author=physician, data=CriterionInput("x", 1))


def test_an_open_studys_rubrics_cannot_be_replaced(study: Study, case: object) -> None:
    Study.objects.filter(pk=study.pk).update(status=Study.Status.OPEN)
    study.refresh_from_db()
    with pytest.raises(DomainError, match="frozen"):
        services.rubric_store(
            study=study, case=case, source=CaseRubric.Source.WRITTEN,
            criteria=[CriterionInput("Orders AMH", 3)],
        )  # fmt: skip
