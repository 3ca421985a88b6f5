"""Rubric grades and grader verdicts through the export files, the report and the results page.

The grading flow is covered elsewhere; here the rows are written directly so the expected scores
can be worked out by hand.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.urls import reverse

from clinic_eval.models import (
    Arm,
    Assignment,
    CaseRubric,
    Comparison,
    CriterionGrade,
    GraderVerdict,
    Judgment,
    Response,
    RubricVerification,
    Study,
    User,
)
from clinic_eval.results import exports, reporting
from clinic_eval.results.exports import ExportFilters, RowCounter
from clinic_eval.rubrics import services as rubrics_services
from clinic_eval.rubrics.services import CriterionInput
from clinic_eval.statistics.report import report_json
from clinic_eval.studies import services
from tests.conftest import logged_in
from tests.support.factories import CaseFactory
from tests.support.rating_study import physicians

pytestmark = pytest.mark.django_db

# Case C1: +5 accuracy, +3 communication, -4 accuracy (harm). Case C2: +2 accuracy, -2 completeness.
RUBRICS = {
    "C1": [
        CriterionInput("Recommends IVF", 5, "accuracy"),
        CriterionInput("Explains plainly", 3, "communication_quality"),
        CriterionInput("Suggests IUI despite blocked tubes", -4, "accuracy"),
    ],
    "C2": [
        CriterionInput("Orders semen analysis", 2, "accuracy"),
        CriterionInput("Skips the ovarian reserve", -2, "completeness"),
    ],
}
# Verdicts per (case, arm), in criterion order, identical for both physicians:
#   C1 SFT  : met, met, not      -> (5 + 3) / 8        =  1.0
#   C1 GRPO : met, not, met      -> (5 - 4) / 8        =  0.125
#   C2 SFT  : met, not           ->  2 / 2             =  1.0
#   C2 GRPO : not, met           -> -2 / 2             = -1.0
# SFT mean 1.0 -> 1.0; GRPO mean (0.125 - 1.0) / 2 = -0.4375 -> clipped to 0.0.
VERDICTS = {
    ("C1", "SFT-r"): [True, True, False],
    ("C1", "GRPO-r"): [True, False, True],
    ("C2", "SFT-r"): [True, False],
    ("C2", "GRPO-r"): [False, True],
}
# The grader agrees on all 10 criteria-responses but one: it calls C1 SFT's "Explains plainly"
# not met. 2x2 against the majority: both met 5, both not 4, model not / physicians met 1.
# po = 9/10; p(model met) = 5/10, p(physician met) = 6/10; pe = .5*.6 + .5*.4 = .5
# kappa = (.9 - .5) / (1 - .5) = 0.8.
GRADER_FLIPS = {("C1", "SFT-r", 1)}


@pytest.fixture
def graded(coordinator: User) -> Study:
    study = services.study_create(title="Rubric report", created_by=coordinator)
    study.design = {**study.design, "mode": "rubric", "arm_sets": [["SFT-r"], ["GRPO-r"]]}
    study.save()
    raters = physicians(2)
    arms = {
        label: Arm.objects.create(study=study, label=label, kind=Arm.Kind.IMPORTED)
        for label in ("SFT-r", "GRPO-r", "Judge-r")
    }
    for case_id, criteria in RUBRICS.items():
        case = CaseFactory(study=study, external_id=case_id)
        rubric = rubrics_services.rubric_store(
            study=study, case=case, criteria=criteria, source=CaseRubric.Source.IMPORTED
        )
        RubricVerification.objects.create(rubric=rubric, physician=raters[0], version=1)
        criterion_rows = list(rubric.criteria.all())
        for label in ("SFT-r", "GRPO-r"):
            response = Response.objects.create(
                case=case, arm=arms[label], raw_text="plan", display_text="plan"
            )
            comparison = Comparison.objects.create(study=study, case=case, arm_set=label)
            comparison.responses.add(response)
            verdicts = VERDICTS[(case_id, label)]
            for position, rater in enumerate(raters):
                seat = Assignment.objects.create(
                    study=study,
                    comparison=comparison,
                    rater=rater,
                    shown_order=[response.pk],
                    queue_position=position,
                    status=Assignment.Status.DONE,
                )
                judgment = Judgment.objects.create(
                    assignment=seat, study=study, rater=rater, preference="none"
                )
                CriterionGrade.objects.bulk_create(
                    CriterionGrade(
                        judgment=judgment, response=response, position="A", criterion=c, met=met
                    )
                    for c, met in zip(criterion_rows, verdicts, strict=True)
                )
            GraderVerdict.objects.bulk_create(
                GraderVerdict(
                    grader=arms["Judge-r"],
                    response=response,
                    criterion=c,
                    met=met != ((case_id, label, n) in GRADER_FLIPS),
                    attempts=1,
                    provenance={"method": "test"},
                )
                for n, (c, met) in enumerate(zip(criterion_rows, verdicts, strict=True))
            )
    return study


def by_arm(rows: list[dict]) -> dict[str, dict]:
    return {row["arm"]: row for row in rows if row["stratum"] == "all"}


def test_the_report_scores_arms_as_worked_out_by_hand(graded: Study) -> None:
    rubric = exports.study_report(graded)["rubric"]
    assert rubric["criteria"] == 5
    assert rubric["physician_verdicts"] == 2 * 10 and rubric["model_verdicts"] == 10
    consensus = by_arm(rubric["arm_scores"])
    assert consensus["SFT-r"]["score"] == pytest.approx(1.0)
    assert consensus["GRPO-r"]["mean_unclipped"] == pytest.approx(-0.4375)
    assert consensus["GRPO-r"]["score"] == 0.0
    grader = by_arm(rubric["graders"]["Judge-r"]["arm_scores"])
    # C1 SFT by the grader: 5 / 8 = 0.625; C2 SFT 1.0; mean 0.8125.
    assert grader["SFT-r"]["score"] == pytest.approx(0.8125)
    overall = next(row for row in rubric["grader_agreement"] if row["scope"] == "all")
    assert overall["n"] == 10
    assert overall["kappa"] == pytest.approx(0.8)
    assert overall["agreement"] == pytest.approx(0.9)
    (paired,) = rubric["paired"]
    # Per-case differences GRPO - SFT (sorted pair): -0.875 and -2.0; mean -1.4375.
    assert paired["arm_a"] == "GRPO-r" and paired["mean_difference"] == pytest.approx(-1.4375)


def test_unverified_rubrics_are_left_out(graded: Study) -> None:
    RubricVerification.objects.filter(rubric__case__external_id="C2").delete()
    rubric = exports.study_report(graded)["rubric"]
    assert rubric["criteria"] == 3
    assert by_arm(rubric["arm_scores"])["GRPO-r"]["mean_unclipped"] == pytest.approx(0.125)


def test_the_export_carries_the_rubric_files_and_reproduces_the_report(
    graded: Study, tmp_path: Path
) -> None:
    counter = RowCounter()
    archive = tmp_path / "export.zip"
    archive.write_bytes(
        b"".join(
            exports.stream_zip(
                graded,
                ExportFilters(),
                counter,
                lambda: reporting.summary_files(exports.study_report(graded)),
            )
        )
    )
    names = zipfile.ZipFile(archive).namelist()
    for name in ("rubric_criteria.csv", "rubric_grades.csv", "grader_verdicts.csv"):
        assert name in names
    grades = zipfile.ZipFile(archive).read("rubric_grades.csv").decode()
    assert len(grades.strip().splitlines()) == 1 + 20
    from_db = report_json(exports.study_report(graded))
    from_zip = report_json(reporting.report_from_frames(*reporting.read_export(archive)))
    assert from_db == from_zip


def test_an_export_from_before_rubrics_still_reads(graded: Study, tmp_path: Path) -> None:
    buffer = io.BytesIO(
        b"".join(exports.stream_zip(graded, ExportFilters(), RowCounter(), lambda: {}))
    )
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(old, "w") as target:
        for name in source.namelist():
            if name not in reporting.RUBRIC_FILES:
                target.writestr(name, source.read(name))
    frames, _ = reporting.read_export(old)
    assert frames["rubric_grades.csv"].empty


def test_the_results_page_and_the_text_report_show_scores_and_agreement(
    graded: Study, coordinator: User
) -> None:
    page = logged_in(coordinator).get(reverse("coordinator:study_results", args=[graded.pk]))
    text = page.content.decode()
    assert 'id="rubric"' in text
    assert "Grader Judge-r" in text and "Cohen's kappa" in text
    assert "100.0%" in text and "0.80" in text
    summary = reporting.report_text(exports.study_report(graded))
    assert "Rubric scores" in summary and "kappa 0.800" in summary
    assert "verified criteria 5, physician verdicts 20, grader-model verdicts 10" in summary


def test_a_rubric_only_study_leads_with_the_rubric_not_empty_preference_panels(
    graded: Study, coordinator: User
) -> None:
    page = logged_in(coordinator).get(reverse("coordinator:study_results", args=[graded.pk]))
    text = page.content.decode()
    assert 'id="rubric"' in text and "Verified criteria" in text
    for absent in ('id="plots"', 'id="position-bias"', 'id="agreement"', "Not available"):
        assert absent not in text, absent
