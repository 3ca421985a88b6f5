"""Rubric-mode rating (issue 7): the design, the physician's grading page and API, storing,
edits, blinding and concurrent submits."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.db import connection
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer
from rest_framework.test import APIClient

from clinic_eval.config import default_analysis_plan, default_design, default_rubric
from clinic_eval.design import planner as design_lib
from clinic_eval.design import selectors as design_selectors
from clinic_eval.design import services as design_services
from clinic_eval.design.services import design_hash_of
from clinic_eval.errors import DomainError, JudgmentInvalid
from clinic_eval.models import (
    Assignment,
    AuditEvent,
    Case,
    CaseRubric,
    Comparison,
    CriterionGrade,
    Judgment,
    JudgmentEdit,
    ResponseRating,
    RubricCriterion,
    Study,
    User,
)
from clinic_eval.rating import services as rating_services
from clinic_eval.rating.services import GradeInput
from clinic_eval.rubrics import selectors as rubrics_selectors
from clinic_eval.studies import services
from tests.conftest import PASSWORD, logged_in
from tests.rating.test_blinding import Transcript, forbidden, model_arm_with_secrets
from tests.rating.test_rating_concurrency import at_once
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in
from tests.support.factories import UserFactory
from tests.support.rating_study import (
    ARM_LABELS,
    CASE_CRITERIA,
    STRATUM_CRITERIA,
    OpenStudy,
    full_grades,
    open_rubric_study,
    physicians,
)

SFT, GRPO, DPO = ARM_LABELS


def side_by_side(coordinator: User, raters: list[User], **kwargs: object) -> OpenStudy:
    """Two responses per item (SFT and GRPO shown together), every case with its own rubric."""
    return open_rubric_study(
        coordinator=coordinator, raters=raters, arm_sets=[[SFT, GRPO]], **kwargs
    )


def first_item(client: object, study: Study) -> str:
    return client.post(reverse("rater:next", args=[study.public_id]))["Location"]  # type: ignore[attr-defined]


def seat_of(url: str) -> Assignment:
    return Assignment.objects.get(public_id=url.rstrip("/").rsplit("/", 1)[-1])


# --- Design and freeze ------------------------------------------------------------------------


@pytest.mark.django_db
def test_freeze_takes_only_cases_with_a_verified_rubric_own_or_their_strata(
    coordinator: User, physician: User
) -> None:
    # 0: own rubric, verified. 1: own rubric, unverified. 2, 3: none of their own, the
    # Confusion stratum's verified one. 4: own unverified rubric in Confusion: a case uses its
    # own rubric, so the stratum's does not rescue it. 5: no rubric anywhere.
    built = open_rubric_study(
        coordinator=coordinator,
        raters=[physician],
        n_cases=6,
        strata=["General", "General", "Confusion", "Confusion", "Confusion", "Human Enhancement"],
        case_rubrics=[0],
        unverified_case_rubrics=[1, 4],
        stratum_rubrics=["Confusion"],
    )
    study = built.study
    graded = {built.cases[i].pk for i in (0, 2, 3)}
    assert set(study.comparisons.values_list("case_id", flat=True)) == graded
    assert Counter(study.comparisons.values_list("arm_set", flat=True)) == {SFT: 3, GRPO: 3}
    assert study.assignments.count() == 6  # one rater per item
    assert all(len(seat.shown_order) == 1 for seat in study.assignments.all())

    preview = design_selectors.design_preview(study=study)
    assert preview.skipped == {design_lib.SKIP_NO_RUBRIC: 3 * 2}
    client = logged_in(coordinator)
    page = client.get(
        reverse("coordinator:study_design_preview", args=[study.pk]), HTTP_HX_REQUEST="true"
    )
    assert "Left out: 6 (no verified rubric)." in page.content.decode()

    # The case falls back to its stratum's criteria; a case with its own uses those.
    assert [c.text for c in rubrics_selectors.case_criteria(case=built.cases[2])] == [
        text for text, _ in STRATUM_CRITERIA
    ]
    assert [c.text for c in rubrics_selectors.case_criteria(case=built.cases[0])] == [
        text for text, _ in CASE_CRITERIA
    ]


@pytest.mark.django_db
def test_the_design_hash_covers_the_rubrics_graded_on(coordinator: User, physician: User) -> None:
    built = open_rubric_study(
        coordinator=coordinator,
        raters=[physician],
        strata=["General", "General", "Confusion", "Confusion"],
        case_rubrics=[0, 1],
        stratum_rubrics=["Confusion"],
    )
    study = built.study
    inputs = design_selectors.design_inputs(study=study)
    plan = design_selectors.design_plan(study=study, inputs=inputs)
    assert design_hash_of(study, plan, inputs.raters, inputs.rubrics) == study.design_hash

    case_pk = built.cases[0].external_id
    scope, version, criteria = inputs.rubrics[case_pk]
    assert (scope, version) == ("case", 1) and len(criteria) == len(CASE_CRITERIA)
    bumped = inputs.rubrics | {case_pk: [scope, version + 1, criteria]}
    assert design_hash_of(study, plan, inputs.raters, bumped) != study.design_hash
    reworded = [["Another text", *criteria[0][1:]], *criteria[1:]]
    changed = inputs.rubrics | {case_pk: [scope, version, reworded]}
    assert design_hash_of(study, plan, inputs.raters, changed) != study.design_hash
    stratum_pk = built.cases[2].external_id
    assert inputs.rubrics[stratum_pk][0] == "stratum:Confusion"


@pytest.mark.django_db
def test_rubric_arm_sets_must_be_equal_sized_and_disjoint(coordinator: User) -> None:
    study = services.study_create(title="Sets", created_by=coordinator)
    for label in ARM_LABELS:
        services.arm_create(study=study, label=label, kind="imported")

    def save(arm_sets: list[list[str]]) -> None:
        design_services.study_design_update(
            study=study,
            design=default_design() | {"mode": "rubric", "arm_sets": arm_sets},
            rubric=default_rubric(),
            analysis_plan=default_analysis_plan(),
            rater_ids=[],
        )

    with pytest.raises(DomainError, match="same number of arms"):
        save([[SFT], [GRPO, DPO]])
    with pytest.raises(DomainError, match="only one arm set.*" + re.escape(SFT)):
        save([[SFT, GRPO], [SFT, DPO]])
    save([[SFT], [GRPO], [DPO]])
    save([[SFT, GRPO, DPO]])
    with pytest.raises(design_lib.DesignError, match="two or more"):
        design_lib.check_arm_sets([[SFT]], mode="pairwise")


def test_single_and_multi_arm_rubric_sets_are_position_balanced() -> None:
    cases = {f"c{i}": {"a", "b", "c"} for i in range(12)}
    raters = [f"r{i}" for i in range(4)]
    single = design_lib.plan_design(
        case_arms=cases,
        arm_sets=[["a"], ["b"], ["c"]],
        raters=raters,
        raters_per_item=2,
        seed=3,
        mode="rubric",
        graded_cases=set(cases) - {"c0"},
    )
    assert single.skipped == {design_lib.SKIP_NO_RUBRIC: 3}
    assert len(single.design.comparisons) == 33
    assert all(len(a.shown) == 1 for a in single.design.assignments)
    trio = design_lib.plan_design(
        case_arms=cases,
        arm_sets=[["a", "b", "c"]],
        raters=raters,
        raters_per_item=2,
        seed=3,
        mode="rubric",
        graded_cases=set(cases),
    )
    for arm in "abc":
        per_position = Counter(a.shown.index(arm) for a in trio.design.assignments if not a.repeat)
        assert max(per_position.values()) - min(per_position.values()) <= 1
    with pytest.raises(design_lib.DesignError, match="no comparison can be built"):
        design_lib.plan_design(
            case_arms=cases, arm_sets=[["a"]], raters=raters, raters_per_item=1, seed=1,
            mode="rubric", graded_cases=set(),
        )  # fmt: skip


# --- The physician's page ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_grading_page_asks_every_criterion_for_every_response(
    coordinator: User, physician: User
) -> None:
    built = side_by_side(coordinator, [physician])
    client = logged_in(physician)
    url = first_item(client, built.study)
    html = client.get(url).content.decode()
    assert "Response A" in html and "Response B" in html
    for text, _ in CASE_CRITERIA:
        assert html.count(text) == 2  # under each response
    for letter in "AB":
        for number in (1, 2, 3):
            assert f'name="{letter}-c{number}"' in html
            assert f'name="{letter}-c{number}-note"' in html
    assert html.count(">+5 points<") == 2 and "-4 points: undesirable; did it occur?" in html
    assert html.count("Occurred") == 2 and html.count("Did not occur") == 2
    assert html.count("Not met") == 4
    # No Likert questions, hallucination flag or preference in rubric mode.
    assert 'name="preference"' not in html and "Reasoning clarity" not in html
    assert "-hallucination" not in html


@pytest.mark.django_db
def test_grading_stores_one_grade_per_criterion_and_response(
    coordinator: User, physician: User
) -> None:
    built = side_by_side(coordinator, [physician])
    client = logged_in(physician)
    url = first_item(client, built.study)
    seat = seat_of(url)
    answer = full_grades(positions=2) | {
        "B-c1": "not",
        "B-c3": "met",
        "A-c3": "not",
        "A-c2-note": "  Could be plainer.  ",
        "rationale": "A is safer.",
    }
    response = client.post(url, answer)
    assert response.status_code == 302
    judgment = Judgment.objects.get(assignment=seat)
    assert judgment.preference == "none" and judgment.preferred_response_id is None
    assert judgment.rationale == "A is safer."
    assert not ResponseRating.objects.filter(judgment=judgment).exists()
    criteria = list(RubricCriterion.objects.filter(rubric__case=seat.comparison.case))
    grades = {
        (g.position, criteria.index(g.criterion) + 1): g
        for g in CriterionGrade.objects.filter(judgment=judgment)
    }
    assert len(grades) == 6
    assert grades[("A", 1)].response_id == seat.shown_order[0]
    assert grades[("B", 1)].response_id == seat.shown_order[1]
    assert [grades[("A", n)].met for n in (1, 2, 3)] == [True, True, False]
    assert [grades[("B", n)].met for n in (1, 2, 3)] == [False, True, True]
    assert grades[("A", 2)].note == "Could be plainer."
    seat.refresh_from_db()
    assert seat.status == Assignment.Status.DONE

    # The edit form shows what was stored.
    html = client.get(url).content.decode()
    assert re.search(r'name="B-c1" value="not"[^>]*checked', html)
    assert 'value="Could be plainer."' in html


@pytest.mark.django_db
def test_a_missing_verdict_is_refused_with_a_clear_message(
    coordinator: User, physician: User
) -> None:
    built = side_by_side(coordinator, [physician])
    client = logged_in(physician)
    url = first_item(client, built.study)
    answer = full_grades(positions=2)
    del answer["B-c2"], answer["A-c3"]
    response = client.post(url, answer)
    assert response.status_code == 422
    html = response.content.decode()
    assert "Say whether this criterion is met." in html
    assert "Say whether this occurred." in html  # the undesirable criterion
    assert re.search(r'name="B-c1" value="met"[^>]*checked', html), "answers are kept"
    assert not Judgment.objects.exists() and not CriterionGrade.objects.exists()

    partial = client.post(url, answer, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "<html" not in partial.content.decode()
    assert "Say whether this occurred." in partial.content.decode()

    with pytest.raises(JudgmentInvalid) as refused:
        rating_services.judgment_record(
            assignment=seat_of(url),
            rater=physician,
            data=rating_services.JudgmentInput(
                preference="",
                ratings=(),
                grades=(GradeInput(0, 1, True), GradeInput(0, 9, True), GradeInput(0, 1, False)),
            ),
        )
    assert refused.value.errors["grades"]
    assert {"A.c2", "A.c3", "B.c1", "B.c2", "B.c3"} <= set(refused.value.errors)


@pytest.mark.django_db
def test_a_double_submit_stores_one_judgment_and_htmx_moves_on(
    coordinator: User, physician: User
) -> None:
    built = side_by_side(coordinator, [physician])
    client = logged_in(physician)
    url = first_item(client, built.study)
    seat = seat_of(url)
    first = client.post(url, full_grades(positions=2), HTTP_HX_REQUEST="true")
    assert first.status_code == 200
    assert first["HX-Push-Url"] != url and 'id="rating-item"' in first.content.decode()
    again = client.post(url, full_grades(positions=2), HTTP_HX_REQUEST="true")
    assert again.status_code == 200
    assert Judgment.objects.filter(assignment=seat).count() == 1
    assert CriterionGrade.objects.filter(judgment__assignment=seat).count() == 6
    assert not JudgmentEdit.objects.exists()
    assert Judgment.objects.get(assignment=seat).revision == 1


@pytest.mark.django_db
def test_an_edit_is_audited_with_old_and_new_grades_and_a_stale_form_is_refused(
    coordinator: User, physician: User
) -> None:
    built = side_by_side(coordinator, [physician])
    client = logged_in(physician)
    url = first_item(client, built.study)
    seat = seat_of(url)
    client.post(url, full_grades(positions=2))

    stale = client.post(url, full_grades(positions=2) | {"A-c1": "not"})
    assert stale.status_code == 409
    stored = CriterionGrade.objects.filter(judgment__assignment=seat, position="A")
    assert set(stored.values_list("met", flat=True)) == {True}

    edit = full_grades(positions=2) | {
        "A-c1": "not",
        "A-c1-note": "Missed the tubes.",
        "revision": "1",
        "reason": "Misread A.",
    }
    assert client.post(url, edit).status_code == 302
    judgment = Judgment.objects.get(assignment=seat)
    assert judgment.revision == 2
    assert CriterionGrade.objects.filter(judgment=judgment).count() == 6
    changed = CriterionGrade.objects.get(judgment=judgment, position="A", met=False)
    assert changed.note == "Missed the tubes."

    (audit_edit,) = JudgmentEdit.objects.filter(judgment=judgment)
    assert audit_edit.reason == "Misread A." and audit_edit.editor == physician
    assert "ratings" not in audit_edit.before
    before_a1 = audit_edit.before["grades"][0]
    after_a1 = audit_edit.after["grades"][0]
    assert before_a1 == {"position": 0, "criterion": 1, "met": True, "note": ""}
    assert after_a1 == {"position": 0, "criterion": 1, "met": False, "note": "Missed the tubes."}
    event = AuditEvent.objects.get(action=AuditEvent.Action.JUDGMENT_EDITED)
    assert event.actor == physician and event.target == f"judgment:{judgment.pk}"
    assert set(event.before) == set(event.after) == {"grades"}
    assert event.before["grades"][0]["met"] is True and event.after["grades"][0]["met"] is False

    # Saving the same edit again changes nothing.
    assert client.post(url, edit | {"revision": "2"}).status_code == 302
    assert JudgmentEdit.objects.count() == 1


# --- The rater API ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_serves_criteria_and_takes_grades(coordinator: User, physician: User) -> None:
    built = side_by_side(coordinator, [physician], n_cases=2)
    api = APIClient()
    api.force_login(physician)
    item = api.post(reverse("api:rate_next", args=[built.study.public_id])).json()
    assert item["mode"] == "rubric" and item["choices"] == []
    assert [r["position"] for r in item["responses"]] == ["A", "B"]
    assert item["criteria"] == [
        {"number": n, "text": text, "points": points, "undesirable": points < 0}
        for n, (text, points) in enumerate(CASE_CRITERIA, 1)
    ]
    url = reverse("api:rate_judgment", args=[item["public_id"]])
    grades = [
        {"position": letter, "criterion": n, "met": letter == "A", "note": ""}
        for letter in "AB"
        for n in (1, 2, 3)
    ]

    missing = api.put(url, {"grades": grades[:-1]}, format="json")
    assert missing.status_code == 400
    assert missing.json()["errors"] == {"B.c3": "Say whether this occurred."}
    unanswered = [g | {"met": None} if g["criterion"] == 1 else g for g in grades]
    refused = api.put(url, {"grades": unanswered}, format="json")
    assert set(refused.json()["errors"]) == {"A.c1", "B.c1"}

    created = api.put(url, {"grades": grades}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["outcome"] == "created" and created.json()["next_item"]
    again = api.put(url, {"grades": grades, "preference": ""}, format="json")
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    assert Judgment.objects.count() == 1 and CriterionGrade.objects.count() == 6

    grades[0] = grades[0] | {"met": False, "note": "On reflection, no."}
    body = {"grades": grades, "revision": 1, "reason": "Second look."}
    edited = api.put(url, body, format="json")
    assert edited.status_code == 200 and edited.json()["outcome"] == "updated"
    stored = api.get(reverse("api:rate_item", args=[item["public_id"]])).json()["judgment"]
    assert stored["preference"] == "none" and stored["revision"] == 2
    assert stored["ratings"] == [] and stored["grades"][0] == grades[0]
    assert len(stored["grades"]) == 6
    assert JudgmentEdit.objects.get().reason == "Second look."

    stale = api.put(url, {"grades": grades[1:] + [grades[0] | {"met": True}]}, format="json")
    assert stale.status_code == 409


# --- Blinding ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_whole_rubric_queue_reveals_no_arm_spec_or_internal_id(
    coordinator: User, physician: User
) -> None:
    # Ids far from any number a page prints for another reason, so the scan can find them.
    models = (Case, Comparison, Assignment, Judgment, CaseRubric, RubricCriterion)
    for offset, model in enumerate(models):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                [model._meta.db_table, 8_110_000 + offset * 100_000],
            )
    other = physicians(1)[0]
    built = open_rubric_study(
        coordinator=coordinator,
        raters=[physician, other],
        n_cases=3,
        labels=ARM_LABELS,
        arm_sets=[[SFT, GRPO, DPO]],
        raters_per_item=2,
    )
    model_arm_with_secrets(built)
    study = built.study
    transcript = Transcript()
    client = logged_in(physician)
    transcript.add("home", client.get(reverse("rater:home")))
    url = first_item(client, study)
    first = url
    while url.startswith("/rate/items/"):
        transcript.add(f"item {url}", client.get(url))
        incomplete = full_grades(positions=3)
        del incomplete["C-c3"]
        transcript.add("invalid", client.post(url, incomplete, HTTP_HX_REQUEST="true"))
        submitted = client.post(url, full_grades(positions=3), HTTP_HX_REQUEST="true")
        transcript.add(f"submit {url}", submitted)
        url = submitted["HX-Push-Url"]
    transcript.add("rated", client.get(url))
    transcript.add("edit form", client.get(first))
    edit = full_grades(positions=3, met="not", revision=1, reason="Second look")
    transcript.add("edit", client.post(first, edit))
    assert Judgment.objects.filter(rater=physician).count() == 3

    api = APIClient()
    api.force_authenticate(other)
    transcript.add("api studies", api.get(reverse("api:rate_study_list")))
    next_url = reverse("api:rate_next", args=[study.public_id])
    while (item := api.post(next_url)).status_code == 200:
        transcript.add("api next", item)
        public_id = item.json()["public_id"]
        transcript.add("api item", api.get(reverse("api:rate_item", args=[public_id])))
        grades = [
            {"position": letter, "criterion": n, "met": True} for letter in "ABC" for n in (1, 2, 3)
        ]
        judgment_url = reverse("api:rate_judgment", args=[public_id])
        transcript.add("api invalid", api.put(judgment_url, {"grades": grades[1:]}, format="json"))
        transcript.add("api submit", api.put(judgment_url, {"grades": grades}, format="json"))
        transcript.add("api item done", api.get(reverse("api:rate_item", args=[public_id])))
    assert Judgment.objects.filter(rater=other).count() == 3

    patterns = forbidden(built)
    criterion_pks = RubricCriterion.objects.filter(rubric__study=study).values_list("pk", flat=True)
    rubric_pks = CaseRubric.objects.filter(study=study).values_list("pk", flat=True)
    patterns += [
        (f"rubric or criterion pk {pk}", re.compile(rf"(?<![\w-]){pk}(?![\w-])"))
        for pk in [*criterion_pks, *rubric_pks]
    ]
    leaks = [
        (what, label)
        for label, pattern in patterns
        for what, text in transcript.pages
        if pattern.search(text)
    ]
    assert leaks == []
    assert len(transcript.pages) > 3 * 3 * 2


# --- Concurrency ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ten_identical_grading_posts_store_one_judgment_and_one_set_of_grades(
    coordinator: User,
) -> None:
    assert connection.vendor == "postgresql"
    rater = physicians(1)[0]
    study = side_by_side(coordinator, [rater], n_cases=1).study
    seat = rating_services.assignment_next(rater=rater, study=study)
    url = reverse("rater:item", args=[seat.public_id])
    answer = full_grades(positions=2)

    statuses = at_once(10, lambda _: logged_in(rater).post(url, answer).status_code)

    assert all(status < 500 for status in statuses), statuses
    assert set(statuses) == {302}
    assert Judgment.objects.filter(assignment=seat).count() == 1
    assert CriterionGrade.objects.filter(judgment__assignment=seat).count() == 2 * 3
    assert not JudgmentEdit.objects.exists()


# --- In a real browser ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_grading_by_keyboard_in_a_real_browser(live_server: LiveServer, coordinator: User) -> None:
    rater = UserFactory(username="dr-keys", role=User.Role.PHYSICIAN, password=PASSWORD)
    study = side_by_side(coordinator, [rater], n_cases=2).study
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        sign_in(page, live_server.url, rater.username, PASSWORD)
        page.click("text=Start rating")
        page.wait_for_selector("#rating-item")
        for keys in ("yyn", "nyy"):
            before = page.get_attribute("#rating-item", "data-item")
            page.keyboard.type(keys + keys[::-1])  # Response A, then Response B
            page.keyboard.press("Enter")
            page.locator(f'#rating-item:not([data-item="{before}"])').wait_for()
    graded = {
        seat.queue_position: [
            g.met
            for g in CriterionGrade.objects.filter(judgment__assignment=seat).order_by(
                "position", "criterion__position"
            )
        ]
        for seat in Assignment.objects.filter(study=study, rater=rater)
    }
    first, second = (graded[p] for p in sorted(graded))
    assert first == [True, True, False, False, True, True]
    assert second == [False, True, True, True, True, False]
    assert console.problems == []


def test_the_design_form_sets_up_rubric_grading(coordinator: User, physician: User) -> None:
    import json

    study = services.study_create(title="Rubric by form", created_by=coordinator)
    for label in ("SFT", "GRPO"):
        services.arm_create(study=study, label=label, kind="imported")
    client = logged_in(coordinator)
    url = reverse("coordinator:study_design", args=[study.pk])
    body = {
        "mode": "rubric",
        "rubric_arms": ["SFT", "GRPO"],
        "rubric_verifiers": "2",
        "raters_per_item": "1",
        "repeat_percent": "0",
        "idle_timeout_minutes": "30",
        "raters": [str(physician.pk)],
        "rubric": json.dumps(default_rubric()),
        "primary_kind": "preference",
        "alpha": "0.05",
        "correction": "holm",
    }
    assert client.post(url, body).status_code == 302
    study.refresh_from_db()
    assert study.design["mode"] == "rubric"
    assert study.design["arm_sets"] == [["GRPO"], ["SFT"]]
    assert study.design["rubric_verifiers"] == 2
    assert client.post(url, body | {"rubric_side_by_side": "on"}).status_code == 302
    study.refresh_from_db()
    assert study.design["arm_sets"] == [["GRPO", "SFT"]]
    page = client.get(url).content.decode()
    # The saved design comes back on the page (it used to show the defaults).
    assert '<option value="rubric" selected>' in page
    assert re.search(r'name="rubric_side_by_side"[^>]* checked', page)
