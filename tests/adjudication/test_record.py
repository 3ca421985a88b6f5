"""The final judgment: checked by the rating service's rules plus a required reason, stored
once on the adjudicator's letters with its responses resolved on the server, and never a
change to the raters' judgments."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clinic_eval.adjudication.services import AdjudicationOutcome, adjudication_record
from clinic_eval.design import services as design_services
from clinic_eval.errors import DomainError, JudgmentInvalid
from clinic_eval.models import (
    Adjudication,
    AuditEvent,
    Judgment,
    JudgmentEdit,
    ResponseRating,
    ResponseSpan,
    Study,
    User,
)
from clinic_eval.rating.inputs import JudgmentInput, RatingInput
from clinic_eval.rating.services import judgment_snapshot
from tests.adjudication.world import (
    ERROR,
    adjudicated_study,
    adjudication_of,
    comparisons,
    final_post,
    pair,
    rate,
    seats,
)
from tests.conftest import logged_in
from tests.support.rating_study import physicians

pytestmark = pytest.mark.django_db


@pytest.fixture
def opened(coordinator: User) -> Adjudication:
    """An item two raters disagreed on (with spans), handed to the third physician."""
    raters = physicians(3, prefix="trio")
    study = adjudicated_study(coordinator=coordinator, raters=raters, n_cases=1, spans=True).study
    comparison = comparisons(study)[0]
    first, second = pair(comparison)
    one, two = seats(comparison)
    rate(one, prefer=first, spans=[(second, ERROR, "factual_error", "severe")], rationale="R1 why")
    rate(two, prefer=second, rationale="R2 why")
    adjudication = adjudication_of(comparison)
    assert adjudication is not None and adjudication.adjudicator is not None
    return Adjudication.objects.select_related("study", "adjudicator").get(pk=adjudication.pk)


def final(preference: str = "A", severity: str = "major") -> JudgmentInput:
    return JudgmentInput(
        preference=preference,
        ratings=tuple(
            RatingInput(
                position=p,
                scores={"reasoning_clarity": 3, "treatment_feasibility": 2},
                hallucination="factual" if p == 0 else "none",
                severity=severity if p == 0 else "",
            )
            for p in range(2)
        ),
    )


def raw_judgments(study: Study) -> list[object]:
    """Everything about the raters' judgments, to compare before and after."""
    judgments = Judgment.objects.filter(study=study).order_by("pk")
    return [
        [(j.pk, j.revision, j.updated_at, judgment_snapshot(j)) for j in judgments],
        list(ResponseRating.objects.filter(judgment__study=study).order_by("pk").values()),
        list(ResponseSpan.objects.filter(judgment__study=study).order_by("pk").values()),
        JudgmentEdit.objects.count(),
    ]


def test_a_final_judgment_is_stored_on_the_adjudicators_letters(opened: Adjudication) -> None:
    before = raw_judgments(opened.study)
    stored, outcome = adjudication_record(
        adjudication=opened, adjudicator=opened.adjudicator, data=final("B"), reason=" Dose. "
    )
    assert outcome == AdjudicationOutcome.RECORDED
    stored.refresh_from_db()
    order = opened.shown_order
    assert stored.status == Adjudication.Status.DONE and stored.done_at is not None
    assert stored.preference == "B" and stored.preferred_response_id == order[1]
    assert stored.reason == "Dose."
    assert [(r["position"], r["response"]) for r in stored.ratings] == [
        (0, order[0]),
        (1, order[1]),
    ]
    assert stored.ratings[0]["hallucination"] == "factual"
    assert stored.ratings[0]["severity"] == "major"
    assert stored.ratings[1]["scores"] == {"reasoning_clarity": 3, "treatment_feasibility": 2}
    event = AuditEvent.objects.get(action=AuditEvent.Action.ADJUDICATION_DONE)
    assert event.actor == opened.adjudicator and event.target == f"adjudication:{opened.pk}"
    assert raw_judgments(opened.study) == before, "the raters' judgments changed"


def test_the_reason_is_required_with_a_field_error(opened: Adjudication) -> None:
    with pytest.raises(JudgmentInvalid) as refused:
        adjudication_record(
            adjudication=opened, adjudicator=opened.adjudicator, data=final(), reason="  "
        )
    assert set(refused.value.errors) == {"reason"}
    assert Adjudication.objects.get(pk=opened.pk).status == Adjudication.Status.PENDING

    url = reverse("rater:adjudication_item", args=[opened.public_id])
    page = logged_in(opened.adjudicator).post(url, final_post(reason=""))
    assert page.status_code == 422
    html = page.content.decode()
    reason_field = html.split('name="reason"', 1)[1]
    assert "Give the reason for your final judgment." in reason_field.split("</p>", 1)[0]
    assert Adjudication.objects.get(pk=opened.pk).status == Adjudication.Status.PENDING


def test_the_rating_rules_apply_with_their_field_errors(opened: Adjudication) -> None:
    url = reverse("rater:adjudication_item", args=[opened.public_id])
    body = final_post()
    del body["B-treatment_feasibility"]
    body["A-severity"] = ""
    page = logged_in(opened.adjudicator).post(url, body)
    assert page.status_code == 422
    html = page.content.decode()
    assert "Rate treatment feasibility from 1 to 5." in html
    assert "Choose how severe the hallucination is." in html
    assert 'value="Rater 2 missed the dose error."' not in html  # a textarea keeps it as text
    assert "Rater 2 missed the dose error.</textarea>" in html
    assert Adjudication.objects.get(pk=opened.pk).status == Adjudication.Status.PENDING


def test_submitted_twice_stores_one_and_a_different_answer_is_refused(
    opened: Adjudication,
) -> None:
    who = opened.adjudicator
    adjudication_record(adjudication=opened, adjudicator=who, data=final(), reason="Dose.")
    first = Adjudication.objects.get(pk=opened.pk)

    again, outcome = adjudication_record(
        adjudication=opened, adjudicator=who, data=final(), reason="Dose."
    )
    assert outcome == AdjudicationOutcome.UNCHANGED
    with pytest.raises(DomainError, match="already adjudicated with a different answer"):
        adjudication_record(
            adjudication=opened, adjudicator=who, data=final("B", "minor"), reason="Other."
        )
    after = Adjudication.objects.get(pk=opened.pk)
    assert (after.preference, after.ratings, after.reason, after.done_at) == (
        first.preference,
        first.ratings,
        first.reason,
        first.done_at,
    )
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ADJUDICATION_DONE).count() == 1

    # Through the page: the same POST again is a no-op, a different one a clear refusal.
    client = logged_in(who)
    url = reverse("rater:adjudication_item", args=[opened.public_id])
    same = client.post(url, final_post(reason="Dose."), follow=True)
    assert "already recorded; nothing changed" in same.content.decode()
    other = client.post(url, final_post(preference="B", reason="Other."))
    assert other.status_code == 409
    assert "A final judgment is recorded once" in other.content.decode()
    assert Adjudication.objects.get(pk=opened.pk).reason == "Dose."


def test_the_page_posts_with_and_without_htmx(opened: Adjudication) -> None:
    client = logged_in(opened.adjudicator)
    url = reverse("rater:adjudication_item", args=[opened.public_id])
    invalid = client.post(url, final_post(reason=""), HTTP_HX_REQUEST="true")
    assert invalid.status_code == 200 and "<html" not in invalid.content.decode()
    assert 'id="adjudication-item"' in invalid.content.decode()

    done = client.post(url, final_post(), HTTP_HX_REQUEST="true")
    html = done.content.decode()
    assert done.status_code == 200 and "<html" not in html
    assert done["HX-Push-Url"] == url
    assert "Your final judgment was recorded." in html and "Your final judgment</h2>" in html
    assert 'name="reason"' not in html, "a recorded item shows no form"

    page = client.get(url).content.decode()
    assert "<html" in page and 'class="final"' in page


def test_a_closed_study_records_nothing(opened: Adjudication) -> None:
    design_services.study_transition(study=opened.study, to_status=Study.Status.CLOSED)
    opened.refresh_from_db()
    with pytest.raises(DomainError, match="no longer open"):
        adjudication_record(
            adjudication=opened, adjudicator=opened.adjudicator, data=final(), reason="Dose."
        )
    client = logged_in(opened.adjudicator)
    url = reverse("rater:adjudication_item", args=[opened.public_id])
    page = client.get(url).content.decode()
    assert "This study is closed" in page and 'name="reason"' not in page
    queue = client.get(reverse("rater:adjudication_queue")).content.decode()
    assert "Not adjudicated before the study closed" in queue
