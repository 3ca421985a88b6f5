"""The coordinator's design and monitoring pages: the design form, progress, reminders and
reassignment, the design and balance CSVs."""

from __future__ import annotations

import csv
import io

import pytest
from django.core import mail
from django.urls import reverse

from clinic_eval.config import default_rubric
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Assignment,
    Study,
    StudyRater,
    User,
)
from clinic_eval.studies import services as studies_services
from tests.conftest import logged_in
from tests.support.rating_study import (
    ARM_LABELS,
    ORIGINAL_LABEL,
    open_study,
    physicians,
    take_and_rate,
)

pytestmark = pytest.mark.django_db


# --- Coordinator pages ----------------------------------------------------------------------


def test_the_design_form_saves_arms_raters_and_plan(
    coordinator: User, physician: User, study: Study
) -> None:
    for label in ("SFT", "GRPO", "Physician"):
        studies_services.arm_create(study=study, label=label, kind="imported")
    client = logged_in(coordinator)
    url = reverse("coordinator:study_design", args=[study.pk])
    page = client.get(url).content.decode()
    assert "GRPO | SFT" in page and physician.username in page
    import json

    body = {
        "mode": "pairwise",
        "pairs": ["GRPO | SFT", "Physician | SFT"],
        "allow_tie": "on",
        "raters_per_item": "1",
        "repeat_percent": "10",
        "idle_timeout_minutes": "20",
        "raters": [str(physician.pk)],
        "rubric": json.dumps(default_rubric()),
        "primary_kind": "preference",
        "primary_arm_a": "SFT",
        "primary_arm_b": "GRPO",
        "tests": ["sign", "bradley_terry"],
        "alpha": "0.05",
        "correction": "holm",
    }
    response = client.post(url, body)
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.design["arm_sets"] == [["GRPO", "SFT"], ["Physician", "SFT"]]
    assert study.design["repeat_fraction"] == 0.1 and not study.design["allow_both_unacceptable"]
    assert study.analysis_plan["primary"] == {
        "kind": "preference", "arm_a": "SFT", "arm_b": "GRPO", "dimension": "",
    }  # fmt: skip
    assert list(StudyRater.objects.filter(study=study).values_list("rater", flat=True)) == [
        physician.pk
    ]
    refused = client.post(url, body | {"primary_kind": "likert", "primary_dimension": "x"})
    assert "needs a rubric dimension" in refused.content.decode()

    # Span annotation: the checkbox and the flag's choice set rubric["spans"], over the JSON.
    assert not study.rubric["spans"]["enabled"]
    spans_on = body | {"spans_enabled": "on", "spans_flag": "derived"}
    assert client.post(url, spans_on).status_code == 302
    study.refresh_from_db()
    assert study.rubric_config.spans.enabled
    assert study.rubric_config.spans.hallucination_flag == "derived"
    assert study.rubric["dimensions"] == default_rubric()["dimensions"]
    said_in_json = default_rubric() | {"spans": {"enabled": True}}
    assert client.post(url, body | {"rubric": json.dumps(said_in_json)}).status_code == 302
    study.refresh_from_db()
    assert not study.rubric_config.spans.enabled, "the unchecked box wins over the JSON"


def test_monitoring_shows_progress_side_choice_and_sends_reminders(
    rating: Study, coordinator: User, physician: User, other_physician: User
) -> None:
    for preference in ("A", "A", "B"):
        take_and_rate(physician, rating, preference)
    client = logged_in(coordinator)
    page = client.get(reverse("coordinator:study_monitor", args=[rating.pk])).content.decode()
    assert physician.username in page and "67%" in page
    partial = client.get(
        reverse("coordinator:study_monitor", args=[rating.pk]), HTTP_HX_REQUEST="true"
    )
    assert "<html" not in partial.content.decode()

    remind = reverse("coordinator:rater_remind", args=[rating.pk, physician.pk])
    follow = client.post(remind, follow=True)
    assert "has no e-mail address" in follow.content.decode()
    User.objects.filter(pk=physician.pk).update(email="dr@example.org")
    client.post(remind)
    assert len(mail.outbox) == 1 and "3 of 18" in mail.outbox[0].body
    assert "SFT" not in mail.outbox[0].body
    assert StudyRater.objects.get(study=rating, rater=physician).reminder_count == 1

    reassign = reverse("coordinator:rater_reassign", args=[rating.pk, physician.pk])
    follow = client.post(reassign, {"to_rater": str(other_physician.pk)}, follow=True)
    assert "pending items to" in follow.content.decode()


def test_design_and_balance_export_as_csv_with_formulas_neutralised(
    coordinator: User,
) -> None:
    raters = [
        User.objects.create(username="=HYPERLINK(1)", role="physician"),
        *physicians(1),
    ]
    study = open_study(coordinator=coordinator, raters=raters, n_cases=2).study
    client = logged_in(coordinator)
    design = client.get(reverse("coordinator:study_design_csv", args=[study.pk]))
    rows = list(csv.DictReader(io.StringIO(design.content.decode())))
    assert len(rows) == Assignment.objects.filter(study=study).count()
    assert {row["design_hash"] for row in rows} == {study.design_hash}
    assert "'=HYPERLINK(1)" in {row["rater"] for row in rows}
    balance = client.get(reverse("coordinator:study_balance_csv", args=[study.pk]))
    counts = list(csv.DictReader(io.StringIO(balance.content.decode())))
    assert sum(int(row["count"]) for row in counts) == len(rows)
    assert {row["arm_set"] for row in counts} == {
        " | ".join(sorted(pair))
        for pair in [
            (ARM_LABELS[0], ARM_LABELS[1]),
            (ARM_LABELS[0], ORIGINAL_LABEL),
            (ARM_LABELS[1], ORIGINAL_LABEL),
        ]
    }


def test_a_mail_server_that_refuses_gives_a_message_not_a_500(
    rating: Study, coordinator: User, physician: User, settings: object
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # type: ignore[attr-defined]
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1  # type: ignore[attr-defined]
    User.objects.filter(pk=physician.pk).update(email="dr@example.org")
    remind = reverse("coordinator:rater_remind", args=[rating.pk, physician.pk])
    follow = logged_in(coordinator).post(remind, follow=True)
    assert follow.status_code == 200
    assert "the mail server did not take the reminder" in follow.content.decode()
    assert StudyRater.objects.get(study=rating, rater=physician).reminder_count == 0


def test_a_title_that_names_an_arm_cannot_be_opened(coordinator: User) -> None:
    raters = physicians(2)
    with pytest.raises(DomainError, match="the study title names the arm GRPO-arm-k3"):
        open_study(coordinator=coordinator, raters=raters, title="Does grpo-arm-k3 win?")


def test_the_design_page_and_csv_show_how_far_apart_each_queue_keeps_cases_and_repeats(
    coordinator: User,
) -> None:
    raters = physicians(3)
    built = open_study(coordinator=coordinator, raters=raters, n_cases=8, repeat_fraction=0.2)
    client = logged_in(coordinator)
    design = client.get(reverse("coordinator:study_design_csv", args=[built.study.pk]))
    rows = list(csv.DictReader(io.StringIO(design.content.decode())))
    by_rater: dict[str, list[dict]] = {}
    for row in rows:
        by_rater.setdefault(row["rater"], []).append(row)
    for queue in by_rater.values():
        queue.sort(key=lambda row: int(row["queue_position"]))
        for place, row in enumerate(queue):
            same_case = [p for p, other in enumerate(queue) if other["case_id"] == row["case_id"]]
            nearest = min((abs(p - place) for p in same_case if p != place), default=None)
            assert row["case_gap"] == ("" if nearest is None else str(nearest))
            if row["case_gap"]:
                assert int(row["case_gap"]) >= 2, "a case's items are never next to each other"
            if row["repeat"] == "yes":
                assert int(row["repeat_gap"]) >= max(5, len(queue) / 3)
            else:
                assert row["repeat_gap"] == ""
    page = client.get(reverse("coordinator:study_design", args=[built.study.pk])).content.decode()
    assert 'id="design-spacing"' in page and "spacing-shortfalls" not in page


def test_the_preview_says_which_queue_is_too_short_for_the_spacing_and_by_how_much(
    coordinator: User,
) -> None:
    # One case of three pairs for one rater: its items cannot be kept apart, nor its repeats
    # five places from their originals.
    built = open_study(
        coordinator=coordinator,
        raters=physicians(1),
        n_cases=1,
        raters_per_item=1,
        repeat_fraction=0.5,
        open_it=False,
    )
    client = logged_in(coordinator)
    page = client.get(
        reverse("coordinator:study_design_preview", args=[built.study.pk]),
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "Some queues are too short for the spacing" in page
    assert "items of one case only 1 apart (wanted 2, short by 1)" in page
    assert "after its original (wanted 5, short by" in page and "<html" not in page
