"""The response viewer: every rater's spans highlighted on the text they marked, by category,
filterable by arm and category, for coordinators once the study is closed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from clinic_eval.design import services as design_services
from clinic_eval.models import Study, User
from clinic_eval.rating import services
from clinic_eval.results import viewer
from clinic_eval.spans.text import SpanInput
from tests.conftest import logged_in
from tests.support.rating_study import ARM_LABELS, judgment_input, open_study, physicians

pytestmark = pytest.mark.django_db

SFT, GRPO = ARM_LABELS[:2]
TEXTS = {
    SFT: "Plan: IVF now. AMH is 9 ng/mL, which is high.\nStart 300 IU daily.",
    GRPO: "ICSI first. The semen is normal.",
}
HIGH = "AMH is 9 ng/mL, which is high."
DOSE = "Start 300 IU daily."
SEMEN = "The semen is normal."


def _spans(rater: str, arm: str, position: int) -> list[SpanInput]:
    """What each of the two physicians marks on each arm's response."""
    if arm == SFT and rater == "viewer-00":
        return [SpanInput(position, "reasoning_error", "moderate", quote=HIGH)]
    if arm == SFT:
        return [
            SpanInput(position, "factual_error", "severe", quote=DOSE),
            SpanInput(position, "reasoning_error", "minor", quote="which is high"),
            SpanInput(position, "omission", "minor", case_field="tubal_findings", note="Tubes?"),
        ]
    if rater == "viewer-00":
        return [SpanInput(position, "unsupported_claim", "minor", quote=SEMEN)]
    return []


def span_study(coordinator: User, *, close: bool = True) -> Study:
    """Two cases, SFT vs GRPO, both physicians rate both items with spans."""
    raters = physicians(2, prefix="viewer")
    built = open_study(
        coordinator=coordinator,
        raters=raters,
        n_cases=2,
        labels=(SFT, GRPO),
        texts=TEXTS,
        open_it=False,
    )
    study = built.study
    design_services.study_design_update(
        study=study,
        design=study.design,
        rubric=study.rubric | {"spans": {"enabled": True}},
        analysis_plan=study.analysis_plan,
        rater_ids=[r.pk for r in raters],
    )
    study = design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    labels = {r.pk: r.arm.label for r in built.responses}
    for rater in raters:
        while (seat := services.assignment_next(rater=rater, study=study)) is not None:
            spans = [
                span
                for position, pk in enumerate(seat.shown_order)
                for span in _spans(rater.username, labels[pk], position)
            ]
            data = replace(judgment_input(2), spans=tuple(spans))
            services.judgment_record(assignment=seat, rater=rater, data=data)
    if close:
        study = design_services.study_transition(study=study, to_status=Study.Status.CLOSED)
    return study


@dataclass
class Viewed:
    case: str
    arm: str
    text: str = ""
    marks: list[tuple[str, str, str]] = field(default_factory=list)  # (classes, title, text)
    omissions: list[str] = field(default_factory=list)


class ViewerPage(HTMLParser):
    """The articles of the viewer: each response's text content, its marks and omissions."""

    def __init__(self) -> None:
        super().__init__()
        self.articles: list[Viewed] = []
        self._in_text = 0
        self._mark: list[str] | None = None
        self._omission: list[str] | None = None
        self._in_omissions = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "article" and "viewed-response" in classes:
            self.articles.append(Viewed(found["data-case"] or "", found["data-arm"] or ""))
        elif tag == "div" and "response-text" in classes:
            self._in_text = 1
        elif self._in_text and tag in ("div", "span", "mark"):
            self._in_text += 1
            if tag == "mark":
                self._mark = [found.get("class") or "", found.get("title") or "", ""]
        elif tag == "div" and "omissions" in classes:
            self._in_omissions = True
        elif self._in_omissions and tag == "li":
            self._omission = []

    def handle_endtag(self, tag: str) -> None:
        if self._in_text and tag in ("div", "span", "mark"):
            self._in_text -= 1
            if tag == "mark" and self._mark is not None:
                self.articles[-1].marks.append((self._mark[0], self._mark[1], self._mark[2]))
                self._mark = None
        elif self._in_omissions and tag == "li" and self._omission is not None:
            self.articles[-1].omissions.append("".join(self._omission).strip())
            self._omission = None
        elif self._in_omissions and tag == "div":
            self._in_omissions = False

    def handle_data(self, data: str) -> None:
        if self._in_text:
            self.articles[-1].text += data
            if self._mark is not None:
                self._mark[2] += data
        elif self._omission is not None:
            self._omission.append(data)


def viewed(client: Client, study: Study, **query: str) -> tuple[str, list[Viewed]]:
    response = client.get(reverse("coordinator:response_viewer", args=[study.pk]), query)
    assert response.status_code == 200
    html = response.content.decode()
    page = ViewerPage()
    page.feed(html)
    return html, page.articles


def test_a_coordinator_sees_every_raters_spans_on_the_exact_text(coordinator: User) -> None:
    study = span_study(coordinator)
    html, articles = viewed(logged_in(coordinator), study)
    cases = sorted(study.cases.values_list("external_id", flat=True))
    assert [(a.case, a.arm) for a in articles] == [(c, arm) for c in cases for arm in (GRPO, SFT)]
    assert "4 responses with spans" in html
    sft = next(a for a in articles if a.arm == SFT)
    assert sft.text == TEXTS[SFT], "the text is shown character for character"
    start = TEXTS[SFT].index(HIGH)
    phrase = TEXTS[SFT].index("which is high")
    reasoning = "span-mark span-cat-reasoning_error"
    assert sft.marks == [
        # The sentence before the phrase the second rater marked inside it...
        (
            f"{reasoning} span-harm-moderate",
            "viewer-00 — Reasoning error, moderate harm",
            TEXTS[SFT][start:phrase],
        ),
        # ...then the phrase both marks cover, carrying both raters' titles.
        (
            f"{reasoning} span-harm-moderate span-harm-minor",
            "viewer-00 — Reasoning error, moderate harm; viewer-01 — Reasoning error, minor harm",
            "which is high",
        ),
        (f"{reasoning} span-harm-moderate", "viewer-00 — Reasoning error, moderate harm", "."),
        (
            "span-mark span-cat-factual_error span-harm-severe",
            "viewer-01 — Factual error, severe harm",
            DOSE,
        ),
    ]
    marked = f'data-start="{start}" data-end="{phrase}">{TEXTS[SFT][start:phrase]}</mark>'
    assert marked in html, "each piece carries its offsets into the display text"
    assert sft.omissions == ["viewer-01 — Omission, minor harm: tubal findings · Tubes?"]
    grpo = next(a for a in articles if a.arm == GRPO)
    assert grpo.marks == [
        (
            "span-mark span-cat-unsupported_claim span-harm-minor",
            "viewer-00 — Unsupported claim, minor harm",
            SEMEN,
        )
    ]
    assert grpo.omissions == []


def test_filters_by_arm_and_category_narrow_the_responses_and_spans(coordinator: User) -> None:
    study = span_study(coordinator)
    client = logged_in(coordinator)
    _, articles = viewed(client, study, arm=GRPO)
    assert [a.arm for a in articles] == [GRPO, GRPO]

    html, articles = viewed(client, study, category="factual_error")
    assert [a.arm for a in articles] == [SFT, SFT]
    assert "marked “Factual error”" in html
    for article in articles:
        titles = [title for _, title, _ in article.marks]
        assert titles == ["viewer-01 — Factual error, severe harm"]
        assert article.omissions == [], "only the chosen category is shown"

    _, articles = viewed(client, study, category="omission")
    assert [(a.arm, a.marks, len(a.omissions)) for a in articles] == [(SFT, [], 1), (SFT, [], 1)]

    html, articles = viewed(client, study, arm=GRPO, category="omission")
    assert articles == [] and "No responses match." in html
    _, articles = viewed(client, study, arm="no such arm", category="nonsense")
    assert len(articles) == 4, "an unknown filter is dropped, not an error"


def test_an_htmx_request_gets_the_results_partial_and_pages_keep_the_filters(
    coordinator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = span_study(coordinator)
    client = logged_in(coordinator)
    url = reverse("coordinator:response_viewer", args=[study.pk])
    partial = client.get(url, {"arm": SFT}, HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<section id="viewer-results"')
    assert "<html" not in partial and partial.count('class="response viewed-response"') == 2

    monkeypatch.setattr(viewer, "RESPONSES_PER_PAGE", 1)
    html, articles = viewed(client, study, arm=SFT)
    assert len(articles) == 1 and "Page 1 of 2" in html
    next_page = "?page=2&amp;arm=SFT-arm-q7&amp;category="
    assert f'href="{next_page}"' in html and f'hx-get="{next_page}"' in html
    _, second = viewed(client, study, arm=SFT, page="2")
    assert [a.case for a in second] != [a.case for a in articles]


def test_the_results_page_links_to_the_viewer(coordinator: User) -> None:
    study = span_study(coordinator)
    page = logged_in(coordinator).get(reverse("coordinator:study_results", args=[study.pk]))
    assert reverse("coordinator:response_viewer", args=[study.pk]) in page.content.decode()


def test_only_the_studys_coordinators_open_it(
    coordinator: User, other_coordinator: User, physician: User
) -> None:
    study = span_study(coordinator)
    url = reverse("coordinator:response_viewer", args=[study.pk])
    assert logged_in(physician).get(url).status_code == 403
    rater = User.objects.get(username="viewer-00")
    assert logged_in(rater).get(url).status_code == 403, "not even a rater of the study"
    assert logged_in(other_coordinator).get(url).status_code == 404
    assert Client().get(url).status_code == 302


def test_an_open_study_says_the_viewer_opens_when_it_closes(coordinator: User) -> None:
    study = span_study(coordinator, close=False)
    html, articles = viewed(logged_in(coordinator), study)
    assert articles == [] and 'id="viewer-not-closed"' in html
    assert "opens when the study is closed" in html and "This study is open" in html
    assert "viewer-00" not in html and "<mark" not in html
