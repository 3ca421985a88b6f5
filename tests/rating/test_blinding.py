"""Blinding and XSS on the rater side: a whole queue walked, every byte a physician gets scanned."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer
from rest_framework.test import APIClient

from alignment_jobs.models import GenerationSpec
from clinic_eval.models import (
    Arm,
    Assignment,
    Case,
    Comparison,
    Judgment,
    Response,
    ResponseSpan,
    Study,
    User,
)
from tests.conftest import PASSWORD, logged_in
from tests.rating.test_spans import spans_on  # noqa: F401 - a fixture
from tests.support.browser import ConsoleLog, chromium, new_page, sign_in
from tests.support.rating_study import OpenStudy, full_answer, open_study, physicians

SPEC = {
    "base_model_path": "/models/secret-base-llama-8b",
    "adapter_path": "/models/adapters/grpo-run-17",
    "system_prompt": "You are FERTILITY-GRPO-SYSTEM-PROMPT.",
}
WORDS = (
    "provenance", "temperature", "top_p", "max_tokens", "vllm", "lora", "checkpoint",
    "adapter", "engine", "sample_index", "arm_set", "shown_order", "spec", "seed",
)  # fmt: skip
ATTACKS = {
    "script": "<script>window.__xss = 'script'</script> Plan: IVF.",
    "img": "<img src=x onerror=\"window.__xss='img'\"> Plan: IUI.",
    "link": "[guideline](javascript:window.__xss='link') <a href=\"javascript:alert(1)\">x</a>",
    "raw": '<iframe src="javascript:alert(1)"></iframe><b onclick=alert(1)>bold</b>',
}


@pytest.fixture
def high_ids(db: None) -> None:
    """Ids far from any number a page prints for another reason, so a scan can find them."""
    for offset, model in enumerate((Case, Comparison, Assignment, Judgment, ResponseSpan)):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                [model._meta.db_table, 8_110_000 + offset * 100_000],
            )


def model_arm_with_secrets(built: OpenStudy) -> None:
    arm = built.arms[1]
    Arm.objects.filter(pk=arm.pk).update(kind=Arm.Kind.MODEL)
    GenerationSpec.objects.create(arm=arm, temperature=0.73, top_p=0.91, **SPEC)
    Response.objects.filter(arm=arm).update(
        provenance={"engine": "vllm", "base_model_path": SPEC["base_model_path"], "seed": 4242}
    )


@dataclass
class Transcript:
    pages: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, response: object) -> None:
        headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())  # type: ignore[attr-defined]
        self.pages.append((what, headers + "\n" + response.content.decode()))  # type: ignore[attr-defined]


def forbidden(built: OpenStudy) -> list[tuple[str, re.Pattern[str]]]:
    study = built.study
    patterns = [(f"arm label {a.label}", re.escape(a.label)) for a in built.arms]
    ids = {
        "arm": [a.pk for a in built.arms],
        "response": [r.pk for r in built.responses],
        "case": [c.pk for c in built.cases],
        "comparison": list(study.comparisons.values_list("pk", flat=True)),
        "assignment": list(study.assignments.values_list("pk", flat=True)),
        "judgment": list(study.judgments.values_list("pk", flat=True)),
        "span": list(
            ResponseSpan.objects.filter(judgment__study=study).values_list("pk", flat=True)
        ),
    }
    for kind, values in ids.items():
        patterns += [(f"{kind} pk {pk}", rf"(?<![\w-]){pk}(?![\w-])") for pk in values]
    patterns += [(f"spec {k}", re.escape(v)) for k, v in SPEC.items()]
    patterns += [("spec temperature", r"0\.73"), ("spec top_p", r"0\.91"), ("seed", r"4242")]
    patterns += [(f"word {w}", rf"\b{w}\b") for w in WORDS]
    return [(what, re.compile(p, re.IGNORECASE)) for what, p in patterns]


# With spans on: a quoted passage on A and an omission on B with every submission (the
# default texts say "IVF" once), and on invalid ones a quote that is not there as well.
SPAN_FIELDS = {
    "A-span1-quote": "IVF",
    "A-span1-category": "factual_error",
    "A-span1-harm": "severe",
    "A-span1-note": "Too early.",
    "B-span1-category": "omission",
    "B-span1-harm": "moderate",
    "B-span1-case_field": "tubal_findings",
}
BAD_SPAN_FIELDS = {"B-span2-quote": "Not in it", "B-span2-category": "x", "B-span2-harm": "y"}
API_SPANS = [
    {"position": "A", "quote": "IVF", "category": "factual_error", "harm": "severe"},
    {"position": "B", "category": "omission", "harm": "moderate", "case_field": "tubal_findings"},
]


def walk_queue(
    client: Client, study: Study, spans: dict[str, str] | None = None
) -> Iterator[tuple[str, object]]:
    """A physician's whole session: home, start, every item by htmx, the list, an edit."""
    spans = spans or {}
    bad = BAD_SPAN_FIELDS if spans else {}
    yield "home", client.get(reverse("rater:home"))
    started = client.post(reverse("rater:next", args=[study.public_id]))
    yield "start", started
    url = started["Location"]
    first = url
    while url.startswith("/rate/items/"):
        yield f"item {url}", client.get(url)
        answer = full_answer(**spans, **bad)
        del answer["B-hallucination"]
        yield f"invalid {url}", client.post(url, answer, HTTP_HX_REQUEST="true")
        if bad:
            yield f"bad spans {url}", client.post(url, full_answer(**spans, **bad))
        submitted = client.post(url, full_answer(**spans), HTTP_HX_REQUEST="true")
        yield f"submit {url}", submitted
        url = submitted["HX-Push-Url"]
    yield "rated", client.get(url)
    yield "edit form", client.get(first)
    yield "edit", client.post(first, full_answer(preference="B", revision=1, **spans))
    yield "edit form again", client.get(first)
    yield "home again", client.get(reverse("rater:home"))


def walk_queue_by_api(
    client: APIClient, study: Study, spans: list[dict] | None = None
) -> Iterator[tuple[str, object]]:
    """The same session through the rater API."""
    yield "api studies", client.get(reverse("api:rate_study_list"))
    next_url = reverse("api:rate_next", args=[study.public_id])
    first = None
    while (item := client.post(next_url)).status_code == 200:
        yield "api next", item
        public_id = item.json()["public_id"]
        first = first or public_id
        yield "api item", client.get(reverse("api:rate_item", args=[public_id]))
        body = {
            "preference": "A",
            "rationale": "",
            "revision": 0,
            "ratings": [
                {
                    "position": letter,
                    "scores": {"reasoning_clarity": 4, "treatment_feasibility": 2},
                    "hallucination": "factual",
                    "severity": "minor",
                    "note": "",
                }
                for letter in "AB"
            ],
        }
        if spans:
            body["spans"] = spans
            bad = {"position": "B", "quote": "Not in it", "category": "x", "harm": "y"}
            yield (
                "api bad spans",
                client.put(
                    reverse("api:rate_judgment", args=[public_id]),
                    body | {"spans": [*spans, bad]},
                    format="json",
                ),
            )
        judgment_url = reverse("api:rate_judgment", args=[public_id])
        yield "api invalid", client.put(judgment_url, body | {"preference": "Q"}, format="json")
        yield "api submit", client.put(judgment_url, body, format="json")
    yield "api done", item
    yield "api edit item", client.get(reverse("api:rate_item", args=[first]))


@pytest.mark.django_db
def test_a_whole_queue_reveals_no_arm_spec_or_internal_id(
    high_ids: None, coordinator: User, physician: User
) -> None:
    other = physicians(1)[0]
    built = open_study(coordinator=coordinator, raters=[physician, other])
    model_arm_with_secrets(built)
    transcript = Transcript()
    for what, response in walk_queue(logged_in(physician), built.study):
        assert response.status_code < 500, what  # type: ignore[attr-defined]
        transcript.add(what, response)
    done = Judgment.objects.filter(rater=physician).count()
    assert done == Assignment.objects.filter(rater=physician).count() == 18
    api = APIClient()
    api.force_authenticate(other)
    for what, response in walk_queue_by_api(api, built.study):
        assert response.status_code < 500, what  # type: ignore[attr-defined]
        transcript.add(what, response)
    assert Judgment.objects.filter(rater=other).count() == 18
    leaks = [
        (what, label)
        for label, pattern in forbidden(built)
        for what, text in transcript.pages
        if pattern.search(text)
    ]
    assert leaks == []
    assert len(transcript.pages) > 18 * 3 * 2


@pytest.mark.django_db
def test_a_whole_queue_with_spans_reveals_no_arm_spec_or_internal_id(
    high_ids: None,
    spans_on: dict,  # noqa: F811 - the fixture imported above
    coordinator: User,
    physician: User,
) -> None:
    other = physicians(1)[0]
    built = open_study(coordinator=coordinator, raters=[physician, other])
    assert built.study.rubric_config.spans.enabled
    model_arm_with_secrets(built)
    transcript = Transcript()
    for what, response in walk_queue(logged_in(physician), built.study, SPAN_FIELDS):
        assert response.status_code < 500, what  # type: ignore[attr-defined]
        transcript.add(what, response)
    api = APIClient()
    api.force_authenticate(other)
    for what, response in walk_queue_by_api(api, built.study, API_SPANS):
        assert response.status_code < 500, what  # type: ignore[attr-defined]
        transcript.add(what, response)
    assert Judgment.objects.filter(study=built.study).count() == 36
    # Every judgment carries its two spans; the scan below covers the pages that show them.
    assert ResponseSpan.objects.filter(judgment__study=built.study).count() == 72
    pages = dict(transcript.pages)
    assert (
        "data-span-text" in pages["edit form again"]
        and "span-cat-factual_error" in (pages["edit form again"])
    )
    assert '"sentences"' in pages["api item"] and '"quote":"IVF"' in pages["api edit item"]
    assert "Choose a category from the list." in next(
        text for what, text in transcript.pages if what.startswith("bad spans")
    )
    leaks = [
        (what, label)
        for label, pattern in forbidden(built)
        for what, text in transcript.pages
        if pattern.search(text)
    ]
    assert leaks == []


@pytest.mark.django_db
def test_script_in_responses_and_cases_renders_inert(coordinator: User, physician: User) -> None:
    texts = dict(
        zip(("SFT-arm-q7", "GRPO-arm-k3", "Original-arm-p4"), ATTACKS.values(), strict=False)
    )
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1, texts=texts)
    for case in built.cases:
        case.narrative = ATTACKS["raw"] + "\n\n" + ATTACKS["script"]
        case.fields = {"note": '<img src=x onerror="alert(1)">'}
        case.save()
    client = logged_in(physician)
    url = client.post(reverse("rater:next", args=[built.study.public_id]))["Location"]
    html = client.get(url).content.decode()
    body = html.split('<section class="case-summary"', 1)[1].split('class="preference', 1)[0]
    for tag in ("<script", "<img", "<iframe", "<a ", "<b "):
        assert tag not in body.lower(), tag
    assert re.search(r"<[a-z][^>]*\son[a-z]+\s*=", body, re.IGNORECASE) is None
    assert re.search(r"<[^>]+(href|src)\s*=\s*[\"']?\s*javascript:", body, re.IGNORECASE) is None
    assert "&lt;script&gt;" in body and "&lt;iframe" in body
    csp = client.get(url)["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]


@pytest.mark.django_db(transaction=True)
def test_in_a_real_browser_nothing_from_a_response_runs(
    live_server: LiveServer, coordinator: User, physician: User
) -> None:
    texts = dict(
        zip(("SFT-arm-q7", "GRPO-arm-k3", "Original-arm-p4"), ATTACKS.values(), strict=False)
    )
    built = open_study(coordinator=coordinator, raters=[physician], raters_per_item=1, texts=texts)
    for case in built.cases:
        case.narrative = ATTACKS["link"] + "\n\n" + ATTACKS["img"]
        case.save()
    console = ConsoleLog()
    with chromium() as browser:
        page = new_page(browser, console)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        sign_in(page, live_server.url, physician.username, PASSWORD)
        page.click("text=Start rating")
        page.wait_for_selector("#rating-item")
        for _ in range(3):
            assert page.evaluate("window.__xss === undefined")
            before = page.get_attribute("#rating-item", "data-item")
            page.keyboard.type("41n41na")
            page.keyboard.press("Enter")
            page.locator(f'#rating-item:not([data-item="{before}"])').wait_for()
        assert page.evaluate("window.__xss === undefined")
        assert dialogs == []
    assert Judgment.objects.filter(rater=physician).count() == 3
    assert console.problems == []


def test_a_responses_line_breaks_and_lists_survive_sanitising() -> None:
    """One decision per line is how model outputs read; joining them would garble the plan."""
    from clinic_eval.web.rendering import render_markdown

    html = str(render_markdown("Diagnosis: unexplained\nART strategy: IUI\n\n- low dose\n- review"))
    assert "Diagnosis: unexplained<br" in html and "<li>low dose</li>" in html
