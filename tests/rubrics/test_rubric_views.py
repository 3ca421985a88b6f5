"""Rubric pages: the coordinator's overview, import, export and edits; the physician's blinded
verification queue with htmx edits and version-checked verification."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from alignment_jobs.models import GenerationSpec
from clinic_eval.models import (
    Arm,
    Case,
    CaseRubric,
    ExportLog,
    RubricChange,
    RubricCriterion,
    RubricVerification,
    Study,
    StudyRater,
    User,
)
from clinic_eval.rubrics import selectors as rubric_selectors
from clinic_eval.rubrics import services
from clinic_eval.rubrics.selectors import rubric_is_usable
from clinic_eval.rubrics.services import CriterionInput
from tests.conftest import logged_in
from tests.support.factories import ArmFactory, CaseFactory

pytestmark = pytest.mark.django_db

DRAFTER_LABEL = "Drafter-SFT-v7"
DRAFTER_PATH = "/models/secret-sft-7b"
DRAFTER_ADAPTER = "/models/adapters/dpo-r16"
HX = {"HTTP_HX_REQUEST": "true"}


@dataclass(frozen=True)
class World:
    study: Study
    case: Case
    arm: Arm
    rubric: CaseRubric

    @property
    def public_id(self) -> str:
        return rubric_selectors.rubric_public_id(self.rubric)

    def criterion(self, text_start: str) -> RubricCriterion:
        return self.rubric.criteria.get(text__startswith=text_start)

    def review_url(self) -> str:
        return reverse("rubrics:review", kwargs={"rubric_id": self.public_id})

    def physician_url(self, name: str, criterion: RubricCriterion | None = None) -> str:
        kwargs = {"rubric_id": self.public_id}
        if criterion is not None:
            kwargs["criterion_id"] = rubric_selectors.criterion_public_id(criterion)
        return reverse(f"rubrics:{name}", kwargs=kwargs)

    def coordinator_url(self, name: str, criterion: RubricCriterion | None = None) -> str:
        kwargs = {"study_id": self.study.pk, "rubric_id": self.rubric.pk}
        if criterion is not None:
            kwargs["criterion_id"] = criterion.pk
        return reverse(f"rubrics:{name}", kwargs=kwargs)


@pytest.fixture
def world(study: Study, physician: User) -> World:
    StudyRater.objects.create(study=study, rater=physician)
    case = CaseFactory(
        study=study,
        external_id="C-001",
        narrative="Bilateral **tubal** block. <script>window.__owned = 1</script>",
    )
    arm = ArmFactory(study=study, label=DRAFTER_LABEL, kind=Arm.Kind.MODEL)
    GenerationSpec.objects.create(
        arm=arm, base_model_path=DRAFTER_PATH, adapter_path=DRAFTER_ADAPTER
    )
    rubric = services.rubric_store(
        study=study,
        case=case,
        source=CaseRubric.Source.DRAFTED,
        drafted_by=arm,
        provenance={"arm": DRAFTER_LABEL, "model": DRAFTER_PATH, "adapter": DRAFTER_ADAPTER},
        criteria=[
            CriterionInput("Recommends IVF", 5, tags=[f"drafted_by:{DRAFTER_LABEL}"]),
            CriterionInput("Explains the plan", 2, axis="communication_quality"),
            CriterionInput("Recommends IUI despite blocked tubes", -6),
        ],
    )
    return World(study=study, case=case, arm=arm, rubric=rubric)


def criterion_post(prefix: str, text: str, points: int, axis: str = "accuracy") -> dict:
    return {
        f"{prefix}-text": text,
        f"{prefix}-points": points,
        f"{prefix}-axis": axis,
        f"{prefix}-level": "example",
    }


def edit_prefix(criterion: RubricCriterion) -> str:
    return f"c{rubric_selectors.criterion_public_id(criterion)}"


def version_of(rubric: CaseRubric) -> int:
    rubric.refresh_from_db()
    return rubric.version


# --- Access -----------------------------------------------------------------------------------


def test_coordinator_pages_by_role(
    world: World, coordinator: User, other_coordinator: User, physician: User
) -> None:
    urls = [
        reverse("rubrics:overview", kwargs={"study_id": world.study.pk}),
        reverse("rubrics:import", kwargs={"study_id": world.study.pk}),
        reverse("rubrics:export", kwargs={"study_id": world.study.pk}),
        world.coordinator_url("detail"),
    ]
    for url in urls:
        assert Client().get(url).status_code == 302
        assert logged_in(physician).get(url).status_code == 403
        assert logged_in(other_coordinator).get(url).status_code == 404
        assert logged_in(coordinator).get(url).status_code == 200

    criterion = world.criterion("Explains")
    for url in (
        world.coordinator_url("criterion_add"),
        world.coordinator_url("criterion_edit", criterion),
        world.coordinator_url("criterion_delete", criterion),
    ):
        body = {**criterion_post("new", "x", 1), **criterion_post(edit_prefix(criterion), "x", 1)}
        assert logged_in(physician).post(url, {**body, "confirm": "yes"}).status_code == 403
        response = logged_in(other_coordinator).post(url, {**body, "confirm": "yes"})
        assert response.status_code == 404
    assert not RubricChange.objects.exists()


def test_physician_pages_by_role(
    world: World, coordinator: User, physician: User, other_physician: User
) -> None:
    for url in (reverse("rubrics:queue"), world.review_url()):
        assert Client().get(url).status_code == 302
        assert logged_in(coordinator).get(url).status_code == 403
        assert logged_in(physician).get(url).status_code == 200
    # A physician who does not rate the study learns nothing, not even that the rubric exists.
    assert logged_in(other_physician).get(world.review_url()).status_code == 404
    queue = logged_in(other_physician).get(reverse("rubrics:queue")).content.decode()
    assert world.public_id not in queue

    criterion = world.criterion("Explains")
    body = {
        **criterion_post("new", "Sneaky", 1),
        **criterion_post(edit_prefix(criterion), "Sneaky", 1),
        "confirm": "yes",
        "version": world.rubric.version,
    }
    for name, target in (
        ("review_add", None),
        ("review_edit", criterion),
        ("review_delete", criterion),
        ("verify", None),
    ):
        url = world.physician_url(name, target)
        assert logged_in(other_physician).post(url, body).status_code == 404
        assert logged_in(coordinator).post(url, body).status_code == 403
    assert not RubricChange.objects.exists() and not RubricVerification.objects.exists()


@pytest.mark.parametrize("token", ["nope", "AAAAAAAAAAA", "x" * 40, "%2e%2e"])
def test_made_up_rubric_ids_are_not_found(world: World, physician: User, token: str) -> None:
    url = reverse("rubrics:review", kwargs={"rubric_id": token})
    assert logged_in(physician).get(url).status_code == 404


def test_public_ids_are_random_not_the_order(world: World) -> None:
    rubric = world.rubric
    ids = [rubric.public_id, *rubric.criteria.values_list("public_id", flat=True)]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 for i in ids)
    assert str(rubric.pk) not in ids


# --- Coordinator: overview, import, export ------------------------------------------------------


def test_overview_lists_cases_with_and_without_a_rubric(
    world: World, coordinator_client: Client
) -> None:
    CaseFactory(study=world.study, external_id="C-002", stratum="Male factor")
    url = reverse("rubrics:overview", kwargs={"study_id": world.study.pk})
    page = coordinator_client.get(url).content.decode()
    assert "1 of 2 cases have a rubric" in page
    assert DRAFTER_LABEL in page, "the coordinator sees which arm drafted"
    assert "<html" in page and 'id="rubric-actions"' in page

    partial = coordinator_client.get(url, {"state": "missing"}, **HX).content.decode()
    assert "<html" not in partial and 'id="rubric-table"' in partial
    assert "C-002" in partial and "C-001" not in partial
    usable = coordinator_client.get(url, {"state": "usable"}, **HX).content.decode()
    assert "C-001" not in usable and "Nothing matches" in usable


def test_import_lists_every_bad_line_and_imports_nothing(
    world: World, coordinator_client: Client
) -> None:
    good = {"case_id": "C-001", "rubrics": [{"criterion": "Orders AMH", "points": 3}]}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"case_id": "C-404", "rubrics": good["rubrics"]}),
        json.dumps({"case_id": "C-001", "rubrics": [{"criterion": "x", "points": 0}]}),
    ]
    url = reverse("rubrics:import", kwargs={"study_id": world.study.pk})
    upload = SimpleUploadedFile("rubrics.jsonl", "\n".join(lines).encode())
    response = coordinator_client.post(url, {"file": upload})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was imported" in page
    assert "line 2: not valid JSON" in page
    assert "line 4: criterion 1: points must be" in page
    assert list(world.rubric.criteria.values_list("text", flat=True))[0] == "Recommends IVF"

    upload = SimpleUploadedFile("rubrics.jsonl", b"\xff\xfe")
    assert coordinator_client.post(url, {"file": upload}).status_code == 400


def test_export_round_trips_through_import(world: World, coordinator_client: Client) -> None:
    url = reverse("rubrics:export", kwargs={"study_id": world.study.pk})
    response = coordinator_client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    text = b"".join(response.streaming_content).decode()
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert record["case_id"] == "C-001"
    assert record["rubrics"][2] == {
        "criterion": "Recommends IUI despite blocked tubes",
        "points": -6,
        "tags": ["axis:accuracy", "level:example"],
    }
    log = ExportLog.objects.get(what="rubrics.jsonl")
    assert log.row_count == 1 and log.finished_at is not None

    before = list(world.rubric.criteria.values_list("text", "points", "axis", "level", "tags"))
    upload = SimpleUploadedFile("rubrics.jsonl", text.encode())
    response = coordinator_client.post(
        reverse("rubrics:import", kwargs={"study_id": world.study.pk}), {"file": upload}
    )
    assert response.status_code == 302
    rubric = CaseRubric.objects.get(case=world.case)
    assert rubric.source == CaseRubric.Source.IMPORTED
    after = list(rubric.criteria.values_list("text", "points", "axis", "level", "tags"))
    assert after == before


def test_the_detail_page_shows_the_history(
    world: World, coordinator: User, physician: User
) -> None:
    criterion = world.criterion("Explains")
    services.criterion_edit(
        criterion=criterion,
        author=physician,
        data=CriterionInput("Explains the plan in plain words", 3, axis="communication_quality"),
    )
    page = logged_in(coordinator).get(world.coordinator_url("detail")).content.decode()
    assert "Edited a criterion" in page and physician.username in page
    assert "+2 · Explains the plan" in page and "+3 · Explains the plan in plain words" in page
    assert DRAFTER_PATH in page, "the coordinator sees the drafting provenance"


# --- Edits, by either role, each recorded with its author -------------------------------------


def test_each_physician_edit_is_recorded_with_its_author(
    world: World, physician_client: Client, physician: User
) -> None:
    explains = world.criterion("Explains")
    response = physician_client.post(
        world.physician_url("review_edit", explains),
        criterion_post(edit_prefix(explains), "Explains the plan simply", -2, "completeness"),
    )
    assert response.status_code == 302
    explains.refresh_from_db()
    assert (explains.text, explains.points, explains.axis) == (
        "Explains the plan simply",
        -2,
        "completeness",
    )

    response = physician_client.post(
        world.physician_url("review_add"), criterion_post("new", "Checks semen analysis", 2)
    )
    assert response.status_code == 302

    iui = world.criterion("Recommends IUI")
    assert physician_client.post(world.physician_url("review_delete", iui)).status_code == 302
    assert RubricCriterion.objects.filter(pk=iui.pk).exists(), "no deletion without confirming"
    response = physician_client.post(world.physician_url("review_delete", iui), {"confirm": "yes"})
    assert response.status_code == 302
    assert not RubricCriterion.objects.filter(pk=iui.pk).exists()

    changes = list(world.rubric.changes.values_list("action", "author", "version"))
    assert changes == [
        (RubricChange.Action.EDIT, physician.pk, 2),
        (RubricChange.Action.ADD, physician.pk, 3),
        (RubricChange.Action.DELETE, physician.pk, 4),
    ]
    assert version_of(world.rubric) == 4


def test_a_coordinator_edit_is_recorded_with_the_coordinator(
    world: World, coordinator_client: Client, coordinator: User
) -> None:
    ivf = world.criterion("Recommends IVF")
    response = coordinator_client.post(
        world.coordinator_url("criterion_edit", ivf),
        criterion_post(edit_prefix(ivf), "Recommends IVF first", 6),
    )
    assert response.status_code == 302
    change = world.rubric.changes.get()
    assert (change.action, change.author_id) == (RubricChange.Action.EDIT, coordinator.pk)
    assert (change.before["points"], change.after["points"]) == (5, 6)


def test_invalid_edits_come_back_with_their_errors(world: World, physician_client: Client) -> None:
    ivf = world.criterion("Recommends IVF")
    prefix = edit_prefix(ivf)
    page = physician_client.post(
        world.physician_url("review_edit", ivf), criterion_post(prefix, "", 0)
    )
    assert page.status_code == 200
    assert "Points cannot be 0" in page.content.decode()
    # The last criterion with positive points cannot turn negative: the service says why.
    world.rubric.criteria.exclude(pk=ivf.pk).filter(points__gt=0).delete()
    partial = physician_client.post(
        world.physician_url("review_edit", ivf), criterion_post(prefix, "Recommends IVF", -5), **HX
    ).content.decode()
    assert "<html" not in partial and "positive points" in partial
    assert not RubricChange.objects.exists()


def test_edits_are_refused_once_the_study_is_open(world: World, physician_client: Client) -> None:
    Study.objects.filter(pk=world.study.pk).update(status=Study.Status.OPEN)
    page = physician_client.get(world.review_url()).content.decode()
    assert "Save criterion" not in page and "Verify this rubric" not in page
    ivf = world.criterion("Recommends IVF")
    physician_client.post(
        world.physician_url("review_edit", ivf), criterion_post(edit_prefix(ivf), "Changed", 5)
    )
    assert not RubricChange.objects.exists()


# --- htmx: a row partial, the verify panel out of band ------------------------------------------


def test_htmx_edit_returns_the_row_and_the_verify_panel(
    world: World, physician_client: Client
) -> None:
    ivf = world.criterion("Recommends IVF")
    key = rubric_selectors.criterion_public_id(ivf)
    body = {**criterion_post(edit_prefix(ivf), "Recommends IVF now", 7), "version": 1}
    response = physician_client.post(world.physician_url("review_edit", ivf), body, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "site-header" not in html
    assert html.lstrip().startswith(f'<li id="criterion-{key}"')
    assert "Recommends IVF now" in html and 'data-points="7"' in html
    assert 'id="rubric-panel"' in html and 'hx-swap-oob="true"' in html
    assert re.search(r'id="rubric-seen-version" value="2"', html), "the page may verify v2"

    full = physician_client.get(world.review_url()).content.decode()
    assert "<html" in full and 'id="criteria-list"' in full

    added = physician_client.post(
        world.physician_url("review_add"),
        {**criterion_post("new", "Checks AMH", 2), "version": 2},
        **HX,
    ).content.decode()
    assert added.lstrip().startswith("<li") and 'id="criterion-add"' in added
    bad = physician_client.post(
        world.physician_url("review_add"), {**criterion_post("new", "", 2), "version": 3}, **HX
    )
    assert bad["HX-Retarget"] == "#criterion-add" and bad["HX-Reswap"] == "outerHTML"

    iui = world.criterion("Recommends IUI")
    deleted = physician_client.post(
        world.physician_url("review_delete", iui), {"confirm": "yes", "version": 3}, **HX
    ).content.decode()
    assert "<li" not in deleted and 'id="rubric-seen-version" value="4"' in deleted


def test_a_change_by_someone_else_keeps_the_page_stale(
    world: World, physician_client: Client, other_physician: User
) -> None:
    StudyRater.objects.create(study=world.study, rater=other_physician)
    services.criterion_add(
        rubric=world.rubric, author=other_physician, data=CriterionInput("Checks AMH", 1)
    )
    ivf = world.criterion("Recommends IVF")
    body = {**criterion_post(edit_prefix(ivf), "Recommends IVF now", 7), "version": 1}
    html = physician_client.post(
        world.physician_url("review_edit", ivf), body, **HX
    ).content.decode()
    assert "Someone else changed this rubric" in html
    assert 'id="rubric-seen-version" value="1"' in html
    response = physician_client.post(world.physician_url("verify"), {"version": 1}, follow=True)
    assert "changed this rubric while you were reading it" in response.content.decode()
    assert not RubricVerification.objects.exists()


# --- Verification -----------------------------------------------------------------------------


def test_verify_checks_the_version_and_counts_towards_usable(
    world: World, physician: User, other_physician: User
) -> None:
    StudyRater.objects.create(study=world.study, rater=other_physician)
    world.study.design = {**world.study.design, "rubric_verifiers": 2}
    world.study.save()
    first, second = logged_in(physician), logged_in(other_physician)

    response = first.post(world.physician_url("verify"), {"version": 1})
    assert response.status_code == 302
    assert RubricVerification.objects.filter(physician=physician, version=1).exists()
    assert not rubric_is_usable(rubric=world.rubric)
    page = first.get(world.review_url()).content.decode()
    assert "You verified this rubric as it stands" in page
    assert world.public_id not in first.get(reverse("rubrics:queue")).content.decode()

    # The second physician edits, which voids the first verification; a stale form is refused.
    ivf = world.criterion("Recommends IVF")
    second.post(world.physician_url("review_edit", ivf), criterion_post(edit_prefix(ivf), "IVF", 5))
    response = second.post(world.physician_url("verify"), {"version": 1}, follow=True)
    assert "review it again, then verify" in response.content.decode()
    assert second.post(world.physician_url("verify"), {"version": 2}).status_code == 302
    assert version_of(world.rubric) == 2
    assert not rubric_is_usable(rubric=world.rubric), "the first verification was of v1"
    assert world.public_id in first.get(reverse("rubrics:queue")).content.decode()

    first.post(world.physician_url("verify"), {"version": 2})
    assert rubric_is_usable(rubric=world.rubric)
    overview = logged_in(world.study.coordinators.get()).get(
        reverse("rubrics:overview", kwargs={"study_id": world.study.pk}), {"state": "usable"}
    )
    assert "C-001" in overview.content.decode()


def test_verify_without_a_version_verifies_nothing(world: World, physician_client: Client) -> None:
    response = physician_client.post(world.physician_url("verify"), {})
    assert response.status_code == 302
    assert not RubricVerification.objects.exists()


# --- Blinding ---------------------------------------------------------------------------------


def test_nothing_on_the_physician_pages_says_who_drafted_the_rubric(
    world: World, physician_client: Client
) -> None:
    ivf = world.criterion("Recommends IVF")
    pages = [
        physician_client.get(reverse("rubrics:queue")),
        physician_client.get(reverse("rubrics:queue"), **HX),
        physician_client.get(world.review_url()),
        physician_client.post(
            world.physician_url("review_edit", ivf),
            {**criterion_post(edit_prefix(ivf), "Recommends IVF", 6), "version": 1},
            **HX,
        ),
        physician_client.post(
            world.physician_url("review_add"),
            {**criterion_post("new", "Checks AMH", 1), "version": 2},
            **HX,
        ),
        physician_client.get(world.review_url()),
    ]
    forbidden = [
        DRAFTER_LABEL,
        DRAFTER_PATH,
        DRAFTER_ADAPTER,
        "secret-sft",
        "drafted",
        "Drafted by",
        "provenance",
        "/coordinator/",
    ]
    for response in pages:
        assert response.status_code == 200
        html = response.content.decode()
        for word in forbidden:
            assert word.lower() not in html.lower(), f"{word!r} on a physician page"
    review = pages[2].content.decode()
    assert "<script>window.__owned" not in review, "case text is escaped"
    assert "<strong>tubal</strong>" in review, "case text is rendered Markdown"
    assert "IVF" in review and "Reference decision" in review
