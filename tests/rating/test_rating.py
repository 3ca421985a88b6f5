"""The rating flow through services and pages: design frozen on opening, queue, judgments."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from clinic_eval.config import default_analysis_plan, default_rubric
from clinic_eval.design import selectors as design_selectors
from clinic_eval.design import services as design_services
from clinic_eval.errors import DomainError, JudgmentInvalid, StaleJudgment
from clinic_eval.models import (
    Assignment,
    Comparison,
    Judgment,
    JudgmentEdit,
    Response,
    Study,
    User,
)
from clinic_eval.monitoring import services as monitoring_services
from clinic_eval.rating import selectors
from clinic_eval.rating import services as rating_services
from clinic_eval.studies import services as studies_services
from tests.conftest import logged_in
from tests.support.rating_study import (
    ARM_LABELS,
    full_answer,
    judgment_input,
    open_study,
    physicians,
    take_and_rate,
)

pytestmark = pytest.mark.django_db


# --- Opening freezes the design -------------------------------------------------------------


def test_opening_builds_exact_raters_per_item_never_an_author_and_freezes_a_hash(
    coordinator: User,
) -> None:
    raters = physicians(4)
    authors = {0: raters[0], 1: raters[1], 2: raters[0]}
    built = open_study(coordinator=coordinator, raters=raters, n_cases=8, authors=authors)
    study = built.study
    assert len(study.design_hash) == 64 and study.opened_at is not None
    assert study.comparisons.count() == 8 * 3
    seats = Assignment.objects.filter(study=study, is_repeat=False).select_related(
        "comparison__case"
    )
    per_comparison = Counter(seat.comparison_id for seat in seats)
    assert set(per_comparison.values()) == {2}
    for seat in seats:
        assert seat.comparison.case.original_author_id != seat.rater_id
        shown_arms = sorted(Response.objects.get(pk=pk).arm.label for pk in seat.shown_order)
        assert " | ".join(shown_arms) == seat.comparison.arm_set

    page = logged_in(coordinator).get(reverse("coordinator:study_detail", args=[study.pk]))
    assert study.design_hash in page.content.decode()
    with pytest.raises(DomainError, match="frozen when the study opened"):
        design_services.study_design_update(
            study=study,
            design=study.design,
            rubric=default_rubric(),
            analysis_plan=default_analysis_plan(),
            rater_ids=[r.pk for r in raters],
        )


def test_positions_are_balanced_within_one_per_arm_pair_in_the_stored_design(
    coordinator: User,
) -> None:
    study = open_study(coordinator=coordinator, raters=physicians(5), n_cases=11).study
    orders: dict[str, Counter[str]] = defaultdict(Counter)
    seats = list(design_selectors.design_seats(study=study).filter(is_repeat=False))
    shown = design_selectors.seat_arm_order(seats)
    for seat in seats:
        orders[seat.comparison.arm_set][shown[seat.pk]] += 1
    assert len(orders) == 3
    for counts in orders.values():
        assert len(counts) == 2 and abs(max(counts.values()) - min(counts.values())) <= 1


def test_the_preview_is_the_design_that_opening_freezes(coordinator: User) -> None:
    raters = physicians(3)
    study = studies_services.study_create(title="Preview", created_by=coordinator)
    built = open_study(coordinator=coordinator, raters=raters, n_cases=5)
    # Rebuild the same study's plan from the database: same seed and inputs, same design.
    preview = design_selectors.design_plan(study=built.study)
    frozen = design_selectors.design_summary(study=built.study)
    assert preview.design.assignments and study.pk
    stored = sorted(
        (seat.rater.username, seat.comparison.arm_set, seat.queue_position, seat.is_repeat)
        for seat in design_selectors.design_seats(study=built.study)
    )
    assert {a.rater for a in preview.design.assignments} <= {r.username for r in raters}
    planned = sorted(
        (
            a.rater,
            " | ".join(preview.design.comparisons[a.comparison].arms),
            a.queue_position,
            a.repeat,
        )
        for a in preview.design.assignments
    )
    assert stored == planned
    assert frozen.seats == len(stored)


def test_items_per_rater_caps_the_load_and_repeats_come_back(coordinator: User) -> None:
    raters = physicians(3)
    built = open_study(
        coordinator=coordinator,
        raters=raters,
        n_cases=20,
        cases_per_rater=6,
        repeat_fraction=0.34,
    )
    for rater in raters:
        mine = Assignment.objects.filter(study=built.study, rater=rater)
        assert mine.filter(is_repeat=False).count() <= 6
        assert mine.filter(is_repeat=True).count() == 2
    assert built.study.comparisons.count() == (6 * 3) // 2 // 3 * 3


def test_opening_without_a_buildable_design_is_refused_and_nothing_is_stored(
    coordinator: User,
) -> None:
    study = studies_services.study_create(title="Empty", created_by=coordinator)
    from tests.support.factories import CaseFactory

    CaseFactory(study=study)
    design_services.study_transition(study=study, to_status=Study.Status.READY)
    with pytest.raises(DomainError, match="assign at least one physician"):
        design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    study.refresh_from_db()
    assert study.status == Study.Status.READY and not study.design_hash
    assert not Comparison.objects.filter(study=study).exists()


# --- Queue and judgments --------------------------------------------------------------------


def test_the_queue_resumes_the_leased_item_and_moves_on_after_a_judgment(
    coordinator: User,
) -> None:
    raters = physicians(2)
    study = open_study(coordinator=coordinator, raters=raters, n_cases=2).study
    rater = raters[0]
    first = rating_services.assignment_next(rater=rater, study=study)
    again = rating_services.assignment_next(rater=rater, study=study)
    assert first is not None and again is not None and first.pk == again.pk
    assert first.first_shown_at is not None and first.leased_until > timezone.now()
    rating_services.judgment_record(assignment=first, rater=rater, data=judgment_input())
    second = rating_services.assignment_next(rater=rater, study=study)
    assert second is not None and second.pk != first.pk
    assert second.queue_position > first.queue_position
    progress = selectors.rater_progress(rater=rater, study=study)
    assert (progress.done, progress.total) == (1, 6)


def test_a_resubmission_is_a_no_op_a_stale_form_is_refused_and_an_edit_is_audited(
    coordinator: User,
) -> None:
    raters = physicians(2)
    study = open_study(coordinator=coordinator, raters=raters, n_cases=1).study
    rater = raters[0]
    seat = rating_services.assignment_next(rater=rater, study=study)
    judgment, outcome = rating_services.judgment_record(
        assignment=seat, rater=rater, data=judgment_input()
    )
    assert outcome == "created" and judgment.revision == 1
    _, outcome = rating_services.judgment_record(
        assignment=seat, rater=rater, data=judgment_input()
    )
    assert outcome == "unchanged"
    with pytest.raises(StaleJudgment, match="out of date"):
        rating_services.judgment_record(
            assignment=seat, rater=rater, data=judgment_input(preference="B"), revision=0
        )
    edited, outcome = rating_services.judgment_record(
        assignment=seat,
        rater=rater,
        data=judgment_input(preference="B"),
        revision=1,
        reason="misread the dose",
    )
    assert outcome == "updated" and edited.revision == 2 and edited.preference == "B"
    assert Judgment.objects.filter(assignment=seat).count() == 1
    audit = JudgmentEdit.objects.get(judgment=edited)
    assert audit.editor == rater and audit.reason == "misread the dose"
    assert audit.before["preference"] == "A" and audit.after["preference"] == "B"
    assert edited.preferred_response_id == seat.shown_order[1]


def test_the_stored_preference_follows_the_response_whatever_side_it_was_on(
    coordinator: User,
) -> None:
    raters = physicians(2)
    study = open_study(
        coordinator=coordinator, raters=raters, n_cases=1, labels=ARM_LABELS[:2]
    ).study
    seats = list(Assignment.objects.filter(study=study))
    assert len(seats) == 2 and seats[0].shown_order == seats[1].shown_order[::-1]
    chosen = Response.objects.get(pk=seats[0].shown_order[0])
    for seat in seats:
        letter = "AB"[seat.shown_order.index(chosen.pk)]
        rating_services.assignment_next(rater=seat.rater, study=study)
        rating_services.judgment_record(
            assignment=seat, rater=seat.rater, data=judgment_input(preference=letter)
        )
    preferred = {j.preferred_response.arm.label for j in Judgment.objects.filter(study=study)}
    assert preferred == {chosen.arm.label}


def test_judgments_that_do_not_fit_the_rubric_are_refused_field_by_field(
    coordinator: User,
) -> None:
    raters = physicians(2)
    study = open_study(
        coordinator=coordinator, raters=raters, n_cases=1, rationale_required=True
    ).study
    seat = rating_services.assignment_next(rater=raters[0], study=study)
    bad = rating_services.JudgmentInput(
        preference="C",
        rationale=" ",
        ratings=(
            rating_services.RatingInput(
                position=0,
                scores={"reasoning_clarity": 6, "treatment_feasibility": 3},
                hallucination="factual",
            ),
            rating_services.RatingInput(
                position=1, scores={"reasoning_clarity": 2}, hallucination="?"
            ),
        ),
    )
    with pytest.raises(JudgmentInvalid) as refused:
        rating_services.judgment_record(assignment=seat, rater=raters[0], data=bad)
    assert set(refused.value.errors) == {
        "preference",
        "rationale",
        "A.reasoning_clarity",
        "A.severity",
        "B.treatment_feasibility",
        "B.hallucination",
    }
    assert not Judgment.objects.exists()


def test_best_of_n_offers_positions_and_no_tie(coordinator: User, physician: User) -> None:
    raters = [physician, *physicians(1)]
    study = open_study(
        coordinator=coordinator,
        raters=raters,
        n_cases=2,
        mode="best_of_n",
        raters_per_item=1,
    ).study
    seat = rating_services.assignment_next(rater=physician, study=study)
    assert len(seat.shown_order) == 3
    with pytest.raises(JudgmentInvalid):
        rating_services.judgment_record(
            assignment=seat, rater=physician, data=judgment_input(3, preference="tie")
        )
    page = logged_in(physician).get(reverse("rater:item", args=[seat.public_id]))
    html = page.content.decode()
    assert "Response C" in html and 'value="tie"' not in html and "None acceptable" in html
    rating_services.judgment_record(assignment=seat, rater=physician, data=judgment_input(3, "C"))
    assert Judgment.objects.get().preferred_response_id == seat.shown_order[2]


def test_a_closed_study_takes_no_more_judgments(coordinator: User) -> None:
    raters = physicians(2)
    study = open_study(coordinator=coordinator, raters=raters, n_cases=1).study
    seat = rating_services.assignment_next(rater=raters[0], study=study)
    design_services.study_transition(study=study, to_status=Study.Status.CLOSED)
    seat.refresh_from_db()
    with pytest.raises(DomainError, match="no longer open"):
        rating_services.judgment_record(assignment=seat, rater=raters[0], data=judgment_input())
    assert rating_services.assignment_next(rater=raters[0], study=study) is None


# --- Reassignment and the pool --------------------------------------------------------------


def test_reassigning_moves_pending_items_but_not_the_one_being_rated(coordinator: User) -> None:
    raters = physicians(3)
    study = open_study(coordinator=coordinator, raters=raters, n_cases=3).study
    leaving, taking = raters[0], raters[1]
    take_and_rate(leaving, study)
    current = rating_services.assignment_next(rater=leaving, study=study)
    pending_before = Assignment.objects.filter(
        study=study, rater=leaving, status=Assignment.Status.PENDING
    ).count()
    result = monitoring_services.assignments_reassign(
        study=study, from_rater=leaving, to_rater=taking
    )
    assert result.moved + result.kept == pending_before
    assert Assignment.objects.get(pk=current.pk).rater == leaving
    taken = Counter(
        Assignment.objects.filter(study=study, rater=taking).values_list("comparison_id", flat=True)
    )
    assert max(taken.values()) == 1, "a rater never gets one comparison twice"


def test_released_items_go_to_raters_whose_queue_is_done(coordinator: User) -> None:
    raters = physicians(3)
    study = open_study(coordinator=coordinator, raters=raters, n_cases=2, raters_per_item=1).study
    leaving, finisher = raters[0], raters[1]
    released = Assignment.objects.filter(study=study, rater=leaving).count()
    result = monitoring_services.assignments_reassign(
        study=study, from_rater=leaving, to_rater=None
    )
    assert result.moved == released
    while rating_services.assignment_next(rater=finisher, study=study) is not None:
        take_and_rate(finisher, study)
    assert (
        not Assignment.objects.filter(study=study, rater__isnull=True)
        .exclude(comparison__assignments__rater=finisher)
        .exists()
    )


# --- Pages ----------------------------------------------------------------------------------


def start(client: Client, study: Study) -> str:
    response = client.post(reverse("rater:next", args=[study.public_id]))
    assert response.status_code == 302
    return response["Location"]


def test_without_javascript_a_submit_redirects_to_the_next_item(
    rating: Study, physician: User
) -> None:
    client = logged_in(physician)
    home = client.get(reverse("rater:home")).content.decode()
    assert rating.title in home and "<strong>0</strong> of 18" in home
    first = start(client, rating)
    response = client.post(first, full_answer())
    assert response.status_code == 302 and response["Location"] != first
    assert Judgment.objects.filter(rater=physician).count() == 1
    again = client.post(first, full_answer())
    assert again.status_code == 302
    assert Judgment.objects.filter(rater=physician).count() == 1


def test_htmx_gets_the_next_item_as_a_partial_and_pushes_its_url(
    rating: Study, physician: User
) -> None:
    client = logged_in(physician)
    first = start(client, rating)
    response = client.post(first, full_answer(), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="rating-item"' in html
    pushed = response["HX-Push-Url"]
    assert pushed.startswith("/rate/items/") and pushed != first
    assert "Item 2 of 18" in html


def test_errors_come_back_in_the_form_with_the_answers_kept(rating: Study, physician: User) -> None:
    client = logged_in(physician)
    first = start(client, rating)
    answer = full_answer()
    del answer["B-treatment_feasibility"]
    response = client.post(first, answer)
    html = response.content.decode()
    assert response.status_code == 422
    assert "Rate treatment feasibility from 1 to 5." in html
    assert 'name="A-reasoning_clarity" value="4" data-key="4" checked' in html
    partial = client.post(first, answer, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "<html" not in partial.content.decode()
    assert not Judgment.objects.exists()


def test_a_second_tab_with_other_answers_gets_a_clear_message_not_a_500(
    rating: Study, physician: User
) -> None:
    client = logged_in(physician)
    first = start(client, rating)
    client.post(first, full_answer(preference="A"))
    response = client.post(first, full_answer(preference="B"))
    assert response.status_code == 409
    assert "already rated this item" in response.content.decode()
    assert Judgment.objects.get().preference == "A"


def test_editing_from_the_rated_list_is_audited(rating: Study, physician: User) -> None:
    client = logged_in(physician)
    first = start(client, rating)
    client.post(first, full_answer())
    rated = client.get(reverse("rater:rated", args=[rating.public_id])).content.decode()
    assert first in rated
    form = client.get(first).content.decode()
    assert 'name="revision" value="1"' in form and "Save changes" in form
    client.post(first, full_answer(preference="tie", revision=1, reason="second look"))
    judgment = Judgment.objects.get()
    assert judgment.preference == "tie" and judgment.preferred_response is None
    assert JudgmentEdit.objects.get().reason == "second look"


def test_physicians_reach_only_their_own_items_and_studies(
    rating: Study, physician: User, other_physician: User, coordinator: User
) -> None:
    mine = start(logged_in(physician), rating)
    theirs = start(logged_in(other_physician), rating)
    client = logged_in(physician)
    assert client.get(theirs).status_code == 404
    assert client.post(theirs, full_answer()).status_code == 404
    outsider = physicians(1, prefix="outsider")[0]
    assert logged_in(outsider).get(mine).status_code == 404
    assert (
        logged_in(outsider).post(reverse("rater:next", args=[rating.public_id])).status_code == 404
    )
    assert logged_in(coordinator).get(mine).status_code == 403
    assert client.get(reverse("coordinator:study_monitor", args=[rating.pk])).status_code == 403
    assert not Judgment.objects.exists()


def test_the_last_item_leads_to_the_rated_list(coordinator: User, physician: User) -> None:
    study = open_study(
        coordinator=coordinator, raters=[physician], n_cases=1, raters_per_item=1
    ).study
    client = logged_in(physician)
    url = start(client, study)
    for _ in range(3):
        response = client.post(url, full_answer())
        url = response["Location"]
    assert url == reverse("rater:rated", args=[study.public_id])
    assert "All your items are rated" in client.get(url).content.decode()


def test_the_session_ends_after_the_studys_idle_timeout(coordinator: User, physician: User) -> None:
    open_study(coordinator=coordinator, raters=[physician], raters_per_item=1,
               idle_timeout_minutes=7)  # fmt: skip
    client = logged_in(physician)
    client.get(reverse("rater:home"))
    assert client.session.get_expiry_age() == 7 * 60


def test_rater_requests_run_a_bounded_number_of_queries_whatever_the_queue(
    coordinator: User, physician: User
) -> None:
    """No N+1: the item page, a submit and the home page cost the same for 6 or 36 items."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for n_cases in (2, 12):
        rater = physicians(1, prefix=f"q{n_cases}")[0]
        study = open_study(
            coordinator=coordinator, raters=[rater], raters_per_item=1, n_cases=n_cases
        ).study
        client = logged_in(rater)
        url = client.post(reverse("rater:next", args=[study.public_id]))["Location"]
        sizes = []
        requests = (
            ("get", url, {}),
            ("post", url, {"data": full_answer(), "HTTP_HX_REQUEST": "true"}),
            ("get", reverse("rater:home"), {}),
        )
        for method, path, extra in requests:
            with CaptureQueriesContext(connection) as queries:
                assert getattr(client, method)(path, **extra).status_code == 200
            sizes.append(len(queries))
        counts.append(sizes)
    assert counts[0] == counts[1]
    item, submit, home = counts[0]
    assert item <= 5 and submit <= 11 and home <= 4, counts[0]


def test_shortcut_keys_never_clash_with_each_other_or_the_preference(
    rating: Study, physician: User
) -> None:
    import re

    client = logged_in(physician)
    html = client.get(start(client, rating)).content.decode()
    for fieldset in re.findall(r"<fieldset.*?</fieldset>", html, re.DOTALL):
        keys = re.findall(r'data-key="([^"]+)"', fieldset)
        assert len(keys) == len(set(keys)), keys
    response_a = html.split('id="title-A"', 1)[1].split('id="title-B"', 1)[0]
    flag_keys = re.findall(
        r'name="A-(?:hallucination|severity)" value="[^"]+" data-key="(\w)"', response_a
    )
    assert flag_keys == ["n", "f", "r", "m", "j"]
    assert not {"a", "b", "t", "x"} & set(flag_keys)
