"""What a rater submits about one item, in the shapes the rating pages, the rater API and the
adjudicator's page all parse into (``rating.services`` checks and stores them)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from clinic_eval.config import NONE_ACCEPTABLE
from clinic_eval.spans.text import SpanInput


@dataclass(frozen=True)
class RatingInput:
    position: int
    scores: dict[str, int | None]
    hallucination: str = ""
    severity: str = ""
    note: str = ""


@dataclass(frozen=True)
class GradeInput:
    """A met / not-met call on criterion ``criterion`` (numbered from 1 in the rubric's order)
    for the response shown in ``position``. For a criterion with negative points, met means
    the undesirable behaviour occurred. ``met`` None: no verdict given (refused)."""

    position: int
    criterion: int
    met: bool | None
    note: str = ""


@dataclass(frozen=True)
class JudgmentInput:
    """A Likert judgment (``preference`` and ``ratings``) or, in rubric mode, a criterion
    judgment (``grades``; no preference is asked, and ``RUBRIC_PREFERENCE`` is stored)."""

    preference: str
    ratings: tuple[RatingInput, ...]
    rationale: str = ""
    grades: tuple[GradeInput, ...] = ()
    # Marked spans on any shown response (when the rubric enables them).
    spans: tuple[SpanInput, ...] = ()


class JudgmentOutcome(StrEnum):
    """What ``judgment_record`` did with a submission."""

    CREATED = "created"
    UNCHANGED = "unchanged"  # identical to the stored judgment: nothing written
    UPDATED = "updated"  # an audited edit of the current revision


# Rubric-mode judgments ask no preference; the judgment stores "none" with no preferred
# response, and analyses tell them apart by the study's mode.
RUBRIC_PREFERENCE = NONE_ACCEPTABLE


def answer_key(letter: str, *parts: str) -> str:
    """Where a problem with one answer about Response ``letter`` is reported: ``A.clarity``,
    ``B.c3.note``. The rating form names its fields from the same parts (``rating.forms``)."""
    return ".".join((letter, *parts))


def criterion_part(number: int) -> str:
    return f"c{number}"
