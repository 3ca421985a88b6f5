"""Simulated spans for the demo's closed study: where each simulated physician marks a
response wrong, submitted with its judgment exactly as the rating page submits them.

Planted by design, so the span statistics have something to find: GRPO-sim's one-line
reasoning draws the most reasoning-error spans, and SFT-sim's structured template, which
never mentions BMI, the cycle pattern or androgen excess, draws the most omissions (each names
a case field the response does not mention). As with the simulated ratings, each physician has
an eye for some categories and each case invites some errors, and a physician who flags a
hallucination also marks where it is. Harm is mostly minor or moderate, sometimes severe.
Every range is a sentence or a phrase of the response's display text.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from clinic_eval.config import HARM_LEVELS, SpanAnnotation
from clinic_eval.rating.inputs import RatingInput
from clinic_eval.spans.text import SpanInput, sentences
from clinic_eval.synthetic.rules import HIGH_DOSE_BMI

# Per arm: the expected number of spans of each category one physician marks on one response.
SPAN_RATE: dict[str, dict[str, float]] = {
    "SFT-sim": {
        "factual_error": 0.04,
        "reasoning_error": 0.12,
        "unsupported_claim": 0.05,
        "unsafe": 0.02,
        "guideline_deviation": 0.08,
        "omission": 0.75,
    },
    "GRPO-sim": {
        "factual_error": 0.06,
        "reasoning_error": 0.75,
        "unsupported_claim": 0.08,
        "unsafe": 0.05,
        "guideline_deviation": 0.12,
        "omission": 0.05,
    },
    "Physician": {
        "factual_error": 0.03,
        "reasoning_error": 0.18,
        "unsupported_claim": 0.04,
        "unsafe": 0.02,
        "guideline_deviation": 0.10,
        "omission": 0.10,
    },
}
DEFAULT_RATE = 0.05
MAX_PER_CATEGORY = 3
# Standard deviations of the log rate: a physician's eye for a category, a case's pull.
RATER_EYE = 0.35
CASE_PULL = 0.5
# Harm weights (none, minor, moderate, severe) by category.
HARM_WEIGHTS: dict[str, tuple[float, ...]] = {
    "unsafe": (0.0, 0.35, 0.50, 0.15),
    "omission": (0.12, 0.55, 0.31, 0.02),
}
DEFAULT_HARM_WEIGHTS = (0.10, 0.55, 0.33, 0.02)
# A flagged hallucination at the flag's most severe level is marked severe this often (else
# moderate).
MAJOR_SEVERE = 0.2
# Where in a response each category is marked: words a candidate sentence or phrase contains.
CATEGORY_CUES: dict[str, tuple[str, ...]] = {
    "factual_error": ("AMH", "AFC", "FSH", "M/mL", "TPMC", "year"),
    "unsupported_claim": ("AMH", "AFC", "FSH", "TPMC", "reserve", "As in", "As with"),
    "unsafe": ("IU", "dose", "protocol", "agonist", "antagonist", "Plan"),
    "guideline_deviation": ("protocol", "agonist", "antagonist", "PPOS", "IUI", "ICSI", "PGT"),
}


@dataclass(frozen=True)
class OmittedField:
    """A case field a response may leave out: the words that show it is mentioned, and what a
    physician notes when it is not."""

    key: str
    mentioned_by: tuple[str, ...]
    note: str


OMISSIONS: tuple[OmittedField, ...] = (
    OmittedField("bmi", ("bmi",), "BMI not weighed in the start dose."),
    OmittedField("cycle_pattern", ("cycle pattern", "anovulat", "oligo"), "Cycle pattern ignored."),
    OmittedField("hyperandrogenism", ("androgen", "pcos"), "Androgen excess not considered."),
    OmittedField("semen_volume_ml", ("volume",), "Semen volume not reported."),
    OmittedField("tubal_findings", ("tube", "tubal", "hydrosalpinx"), "Tubal status not used."),
    OmittedField(
        "total_progressive_motile_count_m",
        ("semen", "tpmc", "sperm", "m/ml"),
        "No semen finding used.",
    ),
    OmittedField("fsh_iu_l", ("fsh",), "Day-3 FSH not mentioned."),
    OmittedField("prior_ivf_cycles", ("previous", "prior", "failed"), "Prior IVF not weighed."),
    OmittedField("pregnancy_losses", ("loss", "miscarriage"), "Pregnancy losses not addressed."),
    OmittedField(
        "carrier_status", ("carrier", "translocation", "pgt-m", "pgt-sr"), "Carrier status missed."
    ),
)


def _omission_weight(key: str, fields: Mapping[str, object]) -> float:
    """How much a physician cares that the field was left out of this case's plan."""
    value = fields.get(key)
    relevant = {
        "bmi": isinstance(value, int | float) and value >= HIGH_DOSE_BMI,
        "cycle_pattern": value not in (None, "regular"),
        "hyperandrogenism": bool(value),
        "tubal_findings": value not in (None, "patent"),
        "total_progressive_motile_count_m": isinstance(value, int | float) and value < 20,
        "prior_ivf_cycles": bool(value),
        "pregnancy_losses": bool(value),
        "carrier_status": value not in (None, "none"),
    }.get(key, False)
    baseline = {"semen_volume_ml": 0.4, "carrier_status": 0.05, "pregnancy_losses": 0.2}
    return 3.0 if relevant else baseline.get(key, 1.0)


@dataclass(frozen=True)
class ShownText:
    """One response as a rater saw it, with what the simulation needs to know about it."""

    arm: str
    case_id: str
    text: str
    fields: Mapping[str, object]


@dataclass
class SpanEye:
    """One simulated physician's habits when marking spans."""

    eye: dict[str, float]  # per category: a multiplier on how often they mark it
    harshness: float  # shifts harm up (positive) or down

    @classmethod
    def of(cls, *, seed: int, username: str, categories: Sequence[str]) -> SpanEye:
        rng = random.Random(f"{seed}:span-eye:{username}")
        return cls(
            eye={key: math.exp(rng.gauss(0, RATER_EYE)) for key in categories},
            harshness=rng.gauss(0, 0.4),
        )


@dataclass
class CasePull:
    """Per (case, arm, category): how much the case invites that error, the same for every
    physician. Keyed by the case's external id, never a database id."""

    seed: int
    pulls: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def of(self, case_id: str, arm: str, category: str) -> float:
        key = (case_id, arm, category)
        if key not in self.pulls:
            rng = random.Random(f"{self.seed}:span-case:{case_id}:{arm}:{category}")
            self.pulls[key] = math.exp(rng.gauss(0, CASE_PULL) - CASE_PULL**2 / 2)
        return self.pulls[key]


def _poisson(rng: random.Random, mean: float) -> int:
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _harm(rng: random.Random, category: str, harshness: float) -> str:
    base = HARM_WEIGHTS.get(category, DEFAULT_HARM_WEIGHTS)
    weights = [w * math.exp(harshness * (i - 1.5)) for i, w in enumerate(base)]
    return rng.choices(HARM_LEVELS, weights=weights)[0]


_PHRASE_BREAK = re.compile(r"[,;:]\s+|\s+->\s+|\s+\(")


def _phrases(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The sentence's clauses (split at commas, semicolons, colons and arrows), trimmed."""
    pieces, left = [], start
    for match in [*_PHRASE_BREAK.finditer(text, start, end), None]:
        right = match.start() if match else end
        piece = text[left:right]
        stripped = piece.strip().rstrip(".)")
        if len(stripped) >= 8:
            begin = left + len(piece) - len(piece.lstrip())
            pieces.append((begin, begin + len(stripped)))
        if match:
            left = match.end()
    return pieces


def _reasoning(text: str) -> list[tuple[int, int]]:
    """The sentences before the closing block of decision labels (or every sentence)."""
    ranges = sentences(text)
    closing = text.rfind("\n\n")
    body = [r for r in ranges if r[1] <= closing] if closing > 0 else ranges
    return body or ranges


def _range_for(
    rng: random.Random, text: str, category: str, taken: set[tuple[int, int]]
) -> tuple[int, int] | None:
    candidates = _reasoning(text)
    cues = CATEGORY_CUES.get(category)
    if cues:
        cued = [r for r in sentences(text) if any(c in text[r[0] : r[1]] for c in cues)]
        candidates = cued or candidates
    start, end = rng.choice(candidates)
    options = [(start, end)]
    if rng.random() < 0.45:
        options = _phrases(text, start, end) or options
        if cues:
            options = [p for p in options if any(c in text[p[0] : p[1]] for c in cues)] or options
    choice = rng.choice(options)
    return None if choice in taken else choice


# The span category that shows where a flagged hallucination of each type is.
FLAGGED_CATEGORY = {"factual": "factual_error", "reasoning": "reasoning_error"}


def _flagged_category(rating: RatingInput) -> str:
    return FLAGGED_CATEGORY.get(rating.hallucination, "")


def _response_spans(
    key: str,
    position: int,
    shown: ShownText,
    rating: RatingInput | None,
    *,
    eye: SpanEye,
    pull: CasePull,
    config: SpanAnnotation,
    flag_severities: Sequence[str],
) -> list[SpanInput]:
    """What one physician marks on one response: the same wherever it is shown to them (the
    draws are keyed by physician, case and arm), plus, when they flagged a hallucination on
    it this time, a span showing where it is."""
    rng = random.Random(f"{key}:{shown.case_id}:{shown.arm}")
    spans: list[SpanInput] = []
    rates = SPAN_RATE.get(shown.arm, {})
    for category in config.categories:
        mean = rates.get(category.key, DEFAULT_RATE)
        mean *= eye.eye.get(category.key, 1.0) * pull.of(shown.case_id, shown.arm, category.key)
        count = min(MAX_PER_CATEGORY, _poisson(rng, mean))
        if category.omission:
            spans += _omissions(rng, position, shown, category.key, count, eye)
            continue
        taken: set[tuple[int, int]] = set()
        for _ in range(count):
            found = _range_for(rng, shown.text, category.key, taken)
            if found is not None:
                taken.add(found)
                spans.append(
                    _ranged(
                        shown,
                        position,
                        category.key,
                        found,
                        _harm(rng, category.key, eye.harshness),
                    )
                )
    flagged = _flagged_category(rating) if rating else ""
    if rating is None or config.category(flagged) is None:
        return spans
    # The hallucination the physician flagged, marked where it is: its harm follows the
    # flag's severity, on a span of that category already drawn or on a new one.
    rng = random.Random(f"{key}:{shown.case_id}:{shown.arm}:flag")
    harm = "minor"
    if rating.severity == flag_severities[-1]:
        harm = "severe" if rng.random() < MAJOR_SEVERE else "moderate"
    for index, span in enumerate(spans):
        if span.category == flagged:
            spans[index] = replace(span, harm=harm)
            return spans
    found = _range_for(rng, shown.text, flagged, set())
    if found is not None:
        spans.append(_ranged(shown, position, flagged, found, harm))
    return spans


def _ranged(
    shown: ShownText, position: int, category: str, found: tuple[int, int], harm: str
) -> SpanInput:
    return SpanInput(
        position=position,
        category=category,
        harm=harm,
        start=found[0],
        end=found[1],
        quote=shown.text[found[0] : found[1]],
    )


def _omissions(
    rng: random.Random, position: int, shown: ShownText, category: str, count: int, eye: SpanEye
) -> list[SpanInput]:
    text = shown.text.casefold()
    candidates = [
        item
        for item in OMISSIONS
        if item.key in shown.fields and not any(word in text for word in item.mentioned_by)
    ]
    spans = []
    for _ in range(count):
        if not candidates:
            break
        weights = [_omission_weight(item.key, shown.fields) for item in candidates]
        item = rng.choices(candidates, weights=weights)[0]
        candidates.remove(item)
        spans.append(
            SpanInput(
                position=position,
                category=category,
                harm=_harm(rng, category, eye.harshness),
                case_field=item.key,
                note=item.note if rng.random() < 0.5 else "",
            )
        )
    return spans


def simulated_spans(
    *,
    key: str,
    shown: Sequence[ShownText],
    ratings: Sequence[RatingInput],
    eye: SpanEye,
    pull: CasePull,
    config: SpanAnnotation,
    flag_severities: Sequence[str],
) -> tuple[SpanInput, ...]:
    """One physician's spans on one item's shown responses, in submission shape; () when the
    rubric does not mark spans. ``key`` names the physician (and seed): a response shown to
    them in two items draws the same spans in both (a flagged hallucination adds its own)."""
    if not config.enabled:
        return ()
    by_position = {rating.position: rating for rating in ratings}
    spans: list[SpanInput] = []
    for position, response in enumerate(shown):
        spans += _response_spans(
            key,
            position,
            response,
            by_position.get(position),
            eye=eye,
            pull=pull,
            config=config,
            flag_severities=flag_severities,
        )
    return tuple(spans)
