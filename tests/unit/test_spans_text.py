"""Spans as pure functions (clinic_eval.spans.text and .rendering), against values worked out
by hand: sentences, quotes found in the text, spans checked and resolved, the derived
hallucination flag, and marked text whose text content is the display text exactly."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from clinic_eval.config import HallucinationFlag, SpanAnnotation
from clinic_eval.spans.rendering import Mark, marked_text
from clinic_eval.spans.text import (
    ResolvedSpan,
    SpanInput,
    derived_flag,
    find_quote,
    resolve_spans,
    sentences,
)

# --- sentences ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # "Start IVF." is 0-10; after the space "Check AMH!" 11-21; after the line break
        # "Review in 6 weeks?" 22-40; two spaces, then "Then stop" 42-51 (no final stop).
        (
            "Start IVF. Check AMH!\nReview in 6 weeks?  Then stop",
            [(0, 10), (11, 21), (22, 40), (42, 51)],
        ),
        # Edge whitespace is left out: "Plan: IVF." 2-12, "Done." 18-23.
        ("  Plan: IVF.  \n\n  Done.  ", [(2, 12), (18, 23)]),
        # A decimal point is not a sentence end (no whitespace follows it).
        ("Take 3.5 mg daily. Stop.", [(0, 18), (19, 24)]),
        # A line without a full stop is a sentence of its own.
        ("- IVF\n- ICSI", [(0, 5), (6, 12)]),
        ("", []),
        (" \n ", []),
    ],
)
def test_sentences(text: str, expected: list[tuple[int, int]]) -> None:
    assert sentences(text) == expected


# --- find_quote ---------------------------------------------------------------------------------

TEXT = "Start IVF. Check AMH before IVF."  # "IVF" at 6 and 28; "Check AMH" at 11-20


def test_find_quote_finds_a_passage_once_in_the_text() -> None:
    assert find_quote(TEXT, "Check AMH", None) == (11, 20)
    assert find_quote(TEXT, "  Check AMH ", None) == (11, 20), "the quote's own edges trimmed"
    assert find_quote(TEXT, "IVF", 2) == (28, 31)
    assert find_quote(TEXT, "IVF", 1) == (6, 9)


@pytest.mark.parametrize(
    ("quote", "occurrence", "message"),
    [
        ("ICSI", None, "This text is not in the response; copy it exactly as shown."),
        ("check amh", None, "This text is not in the response"),  # case matters
        ("IVF", None, "This text appears 2 times in the response; say which occurrence (1 to 2)"),
        ("IVF", 3, "This text appears 2 time(s); occurrence 3 is not."),
        ("IVF", 0, "occurrence 0 is not"),
        ("   ", None, "Quote the text you mean, or select it."),
    ],
)
def test_find_quote_refuses_what_it_cannot_place(
    quote: str, occurrence: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        find_quote(TEXT, quote, occurrence)


# --- resolve_spans ------------------------------------------------------------------------------

ON = SpanAnnotation(enabled=True)
TEXTS = [TEXT, "Offer IUI & clomiphene."]
FIELDS = ["age", "amh_ng_ml"]


def resolve(*spans: SpanInput, config: SpanAnnotation = ON) -> tuple[list, dict]:
    return resolve_spans(spans, texts=TEXTS, config=config, case_fields=FIELDS)


def span(position: int = 0, category: str = "factual_error", harm: str = "minor", **kw: object):
    return SpanInput(position=position, category=category, harm=harm, **kw)  # type: ignore[arg-type]


def test_resolve_spans_resolves_ranges_quotes_and_omissions_in_reading_order() -> None:
    resolved, errors = resolve(
        span(1, "omission", "moderate", case_field="amh_ng_ml", note="  No AMH.  "),
        span(0, "reasoning_error", "none", quote="IVF", occurrence=2),
        span(0, "unsafe", "severe", start=0, end=5, quote="Start"),
        # A drag that took the spaces around "Check AMH" (10-21): trimmed to 11-20.
        span(0, "factual_error", "minor", start=10, end=21),
        span(1, "unsupported_claim", "moderate", quote="IUI & clomiphene"),
    )
    assert errors == {}
    assert resolved == [
        ResolvedSpan(0, "unsafe", "severe", 0, 5, "Start", "", ""),
        ResolvedSpan(0, "factual_error", "minor", 11, 20, "Check AMH", "", ""),
        ResolvedSpan(0, "reasoning_error", "none", 28, 31, "IVF", "", ""),
        ResolvedSpan(1, "unsupported_claim", "moderate", 6, 22, "IUI & clomiphene", "", ""),
        ResolvedSpan(1, "omission", "moderate", None, None, "", "amh_ng_ml", "No AMH."),
    ]


# Each bad span is the second on Response A, after a good one, so its errors are keyed
# (0, 2, field); the good one is never blamed.
BAD = {
    "range outside the text": (
        span(start=20, end=99),
        (0, 2, "quote"),
        "This range (20-99) lies outside the response, which has 32 characters.",
    ),
    "start at the end": (span(start=9, end=9), (0, 2, "quote"), "end must come after its start"),
    "start after the end": (span(start=9, end=4), (0, 2, "quote"), "after its start"),
    "half a range": (span(start=4), (0, 2, "quote"), "A span needs both its start and its end."),
    "quote and range disagree": (
        span(start=11, end=16, quote="Start"),
        (0, 2, "quote"),
        "The marked text does not match the response at this range; reload the item.",
    ),
    "only whitespace": (span(start=10, end=11), (0, 2, "quote"), "Mark some text, not only"),
    "quote not found": (span(quote="ICSI"), (0, 2, "quote"), "This text is not in the response"),
    "quote twice": (span(quote="IVF"), (0, 2, "quote"), "This text appears 2 times"),
    "occurrence out of range": (
        span(quote="IVF", occurrence=5),
        (0, 2, "quote"),
        "occurrence 5 is not",
    ),
    "unknown category": (
        span(category="typo", start=0, end=5),
        (0, 2, "category"),
        "Choose a category from the list.",
    ),
    "unknown harm": (
        span(harm="fatal", start=0, end=5),
        (0, 2, "harm"),
        "Choose a harm level: none, minor, moderate or severe.",
    ),
    "omission with a range": (
        span(category="omission", start=0, end=5),
        (0, 2, "quote"),
        "An omission marks what is missing, so it has no text",
    ),
    "omission with a quote": (
        span(category="omission", quote="Start"),
        (0, 2, "quote"),
        "An omission marks what is missing",
    ),
    "omission with neither field nor note": (
        span(category="omission", note="   "),
        (0, 2, "case_field"),
        "Name the case field the response left out, or describe the omission.",
    ),
    "unknown case field": (
        span(category="omission", case_field="bmi"),
        (0, 2, "case_field"),
        "Choose one of this case's fields.",
    ),
    "case field on a range": (
        span(start=0, end=5, case_field="age"),
        (0, 2, "case_field"),
        "Only an omission names a case field.",
    ),
    "duplicate range": (span(start=6, end=9), (0, 2, ""), "This span is marked twice."),
    # The same range reached by a quote, with another harm: still the same span.
    "duplicate by quote": (
        span(quote="IVF", occurrence=1, harm="severe"),
        (0, 2, ""),
        "This span is marked twice.",
    ),
    "note too long": (span(start=0, end=5, note="x" * 2_001), (0, 2, "note"), "limited to 2000"),
    "no such response": (span(position=2, start=0, end=1), (2, 1, ""), "does not show"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_resolve_spans_refuses_a_bad_span_beside_its_field(case: str) -> None:
    bad, key, message = BAD[case]
    resolved, errors = resolve(span(start=6, end=9), bad)
    assert list(errors) == [key]
    assert message in errors[key]
    assert [(s.start, s.end) for s in resolved] == [(6, 9)], "the good span is not blamed"


def test_a_duplicate_needs_the_same_category_and_omissions_are_told_apart_by_field() -> None:
    resolved, errors = resolve(
        span(start=6, end=9, category="factual_error"),
        span(start=6, end=9, category="reasoning_error"),  # another category: allowed
        span(start=4, end=9),  # overlapping, not the same range: allowed
        span(category="omission", case_field="age"),
        span(category="omission", case_field="amh_ng_ml"),
        span(category="omission", note="No follow-up"),
        span(category="omission", note="no FOLLOW-UP "),  # the same note, case aside
    )
    assert errors == {(0, 7, ""): "This span is marked twice."}
    assert len(resolved) == 6


def test_spans_are_numbered_per_response_and_capped_per_response() -> None:
    config = SpanAnnotation(enabled=True, max_spans_per_response=2)
    _, errors = resolve(
        span(0, start=0, end=5),
        span(1, category="typo", start=0, end=5),  # B's first span
        span(0, start=6, end=9),
        span(0, harm="typo", start=11, end=16),  # A's third: over the cap, and a bad harm
        config=config,
    )
    assert errors == {
        (1, 1, "category"): "Choose a category from the list.",
        (0, 3, "harm"): "Choose a harm level: none, minor, moderate or severe.",
        (0, 0, ""): "At most 2 spans can be marked on one response.",
    }


def test_a_study_without_spans_refuses_them() -> None:
    resolved, errors = resolve(span(start=0, end=5), config=SpanAnnotation())
    assert resolved == [] and errors == {(0, 1, ""): "This study does not mark spans."}


# --- derived_flag -------------------------------------------------------------------------------

FLAG = HallucinationFlag()  # types none / factual / reasoning, severities minor / major


def flagged(*spans: tuple[str, str]) -> tuple[str, str]:
    marked = [ResolvedSpan(0, c, h, 0, 1, "x", "", "") for c, h in spans]
    return derived_flag(marked, config=ON, flag=FLAG)


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ((), ("none", "")),
        # Categories that imply no hallucination type leave the flag at none.
        ((("unsafe", "severe"), ("guideline_deviation", "moderate")), ("none", "")),
        ((("omission", "severe"),), ("none", "")),
        ((("factual_error", "none"),), ("factual", "minor")),
        ((("unsupported_claim", "minor"),), ("factual", "minor")),
        ((("reasoning_error", "moderate"),), ("reasoning", "major")),
        # The most harmful span decides the type: a moderate reasoning error over a minor
        # factual one.
        ((("factual_error", "minor"), ("reasoning_error", "moderate")), ("reasoning", "major")),
        # On equal harm, the earlier category in the rubric's list decides.
        ((("reasoning_error", "severe"), ("factual_error", "severe")), ("factual", "major")),
        ((("unsafe", "severe"), ("reasoning_error", "minor")), ("reasoning", "minor")),
    ],
)
def test_derived_flag(spans: tuple[tuple[str, str], ...], expected: tuple[str, str]) -> None:
    assert flagged(*spans) == expected


# --- marked_text ----------------------------------------------------------------------------------


class Parsed(HTMLParser):
    """What a browser reads from the HTML: its text content, the sentences and the marks."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.sentences: list[tuple[int, int, int]] = []  # data-start, data-end, text offset
        self.marks: list[tuple[str, str, int, int, str]] = []
        self._mark: dict[str, str | None] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "span":
            assert names["class"] == "sentence"
            start, end = int(names["data-start"] or ""), int(names["data-end"] or "")
            self.sentences.append((start, end, len(self.text)))
        elif tag == "mark":
            self._mark = names | {"at": str(len(self.text))}
        else:
            raise AssertionError(f"unexpected <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark" and self._mark is not None:
            at = int(self._mark["at"] or 0)
            self.marks.append(
                (
                    self._mark["class"] or "",
                    self._mark["title"] or "",
                    int(self._mark["data-start"] or ""),
                    int(self._mark["data-end"] or ""),
                    self.text[at:],
                )
            )
            self._mark = None

    def handle_data(self, data: str) -> None:
        self.text += data


@pytest.mark.parametrize(
    "text",
    [
        'If AMH < 1 & "low", stop.\nRetry.',
        "<script>alert('x')</script> & <b>bold</b>",
        "**Plan**:\n\n1. IVF &amp; ICSI\n2. Review <6 weeks>\n",
        "  leading and trailing  \n",
        "",
        "one line, no stop",
    ],
)
def test_marked_text_content_is_the_text_exactly(text: str) -> None:
    marks = [Mark(0, min(4, len(text)), "span-mark span-cat-unsafe", 'Unsafe, "severe" harm')]
    for given in ([], marks if text else []):
        parsed = Parsed(str(marked_text(text, given)))
        assert parsed.text == text
        for start, end, offset in parsed.sentences:
            assert offset == start and (start, end) in sentences(text)


def test_overlapping_marks_nest_as_one_mark_per_piece_with_both_classes() -> None:
    text = 'If AMH < 1 & "low", stop.\nRetry.'
    # [3, 10) is 'AMH < 1', [7, 14) is '< 1 & "': pieces [3, 7), [7, 10), [10, 14).
    html = str(
        marked_text(
            text,
            [Mark(3, 10, "span-mark a", "first <one>"), Mark(7, 14, "span-mark b", 'the "second"')],
        )
    )
    parsed = Parsed(html)
    assert parsed.text == text
    assert parsed.marks == [
        ("span-mark a", "first <one>", 3, 7, "AMH "),
        ("span-mark a b", 'first <one>; the "second"', 7, 10, "< 1"),
        ("span-mark b", 'the "second"', 10, 14, ' & "'),
    ]
    assert parsed.sentences == [(0, 25, 0), (26, 32, 26)]
    assert "<one>" not in html and "&lt;one&gt;" in html, "titles are escaped"
    assert "&lt; 1" in html and "&amp;" in html and "&quot;" in html


def test_a_mark_over_two_sentences_is_shown_in_each_and_in_the_space_between() -> None:
    text = "Stop. Go."
    parsed = Parsed(str(marked_text(text, [Mark(2, 8, "m")])))
    assert parsed.text == text
    assert [(m[2], m[3], m[4]) for m in parsed.marks] == [(2, 5, "op."), (5, 6, " "), (6, 8, "Go")]
    assert parsed.sentences == [(0, 5, 0), (6, 9, 6)]
