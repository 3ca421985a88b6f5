"""Open studies with an adjudication rule, and raters' answers written by response (each
rater sees the responses in their own order, so answers are turned into their letters here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clinic_eval.config import default_rubric
from clinic_eval.design import services as design_services
from clinic_eval.models import Adjudication, Assignment, Comparison, Study, User
from clinic_eval.rating import services as rating_services
from clinic_eval.rating.inputs import JudgmentInput, RatingInput
from clinic_eval.spans.text import SpanInput
from tests.support.rating_study import ARM_LABELS, OpenStudy, open_study

RULE: dict[str, Any] = {
    "enabled": True,
    "preference_conflict": True,
    "likert_gap": 2,
    "severe_single": True,
}

# A response text with words to mark; a second sentence holds a severe error.
TEXT = "Start IVF with an antagonist protocol. Give 900 IU of FSH daily from day one."
ERROR = "Give 900 IU of FSH daily from day one."


def adjudicated_study(
    *,
    coordinator: User,
    raters: Sequence[User],
    adjudicators: Sequence[User] | None = None,
    rule: Mapping[str, Any] | None = None,
    n_cases: int = 2,
    raters_per_item: int = 2,
    spans: bool = False,
    **options: Any,
) -> OpenStudy:
    """An open pairwise study (one pair of arms: one comparison per case) whose plan
    adjudicates with ``rule`` (default ``RULE``); adjudicators default to every rater."""
    names = [u.username for u in (raters if adjudicators is None else adjudicators)]
    plan = {"adjudication": {**RULE, **(rule or {}), "adjudicators": names}}
    built = open_study(
        coordinator=coordinator,
        raters=raters,
        n_cases=n_cases,
        labels=ARM_LABELS[:2],
        raters_per_item=raters_per_item,
        analysis_plan=plan,
        texts={label: TEXT for label in ARM_LABELS[:2]},
        open_it=False,
        **options,
    )
    study = built.study
    if spans:
        rubric = default_rubric()
        rubric["spans"] = {"enabled": True}
        Study.objects.filter(pk=study.pk).update(rubric=rubric)
    built.study = design_services.study_transition(study=study, to_status=Study.Status.OPEN)
    return built


def comparisons(study: Study) -> list[Comparison]:
    return list(study.comparisons.select_related("case").order_by("id"))


def seats(comparison: Comparison, *, repeats: bool = False) -> list[Assignment]:
    query = Assignment.objects.filter(comparison=comparison).select_related("study", "rater")
    if not repeats:
        query = query.filter(is_repeat=False)
    return list(query.order_by("queue_position", "id"))


def pair(comparison: Comparison) -> tuple[int, int]:
    """The comparison's two responses, in primary-key order."""
    first, second = sorted(comparison.responses.values_list("pk", flat=True))
    return first, second


def answer(
    seat: Assignment,
    *,
    prefer: int | str,
    scores: Mapping[int, tuple[int, int]] | None = None,
    flags: Mapping[int, tuple[str, str]] | None = None,
    spans: Sequence[tuple[Any, ...]] = (),
    rationale: str = "Reasoned.",
) -> JudgmentInput:
    """A judgment of ``seat`` written by response: ``prefer`` a response pk, "tie" or "none";
    ``scores`` response -> (reasoning clarity, treatment feasibility), 4 and 3 otherwise;
    ``flags`` response -> (hallucination, severity), "none" otherwise; ``spans`` (response,
    quote, category, harm[, note])."""
    order = list(seat.shown_order)
    preference = "ABCDEFGH"[order.index(prefer)] if isinstance(prefer, int) else prefer
    ratings = []
    for position, response in enumerate(order):
        clarity, feasibility = (scores or {}).get(response, (4, 3))
        hallucination, severity = (flags or {}).get(response, ("none", ""))
        ratings.append(
            RatingInput(
                position=position,
                scores={"reasoning_clarity": clarity, "treatment_feasibility": feasibility},
                hallucination=hallucination,
                severity=severity,
            )
        )
    return JudgmentInput(
        preference=preference,
        ratings=tuple(ratings),
        rationale=rationale,
        spans=tuple(
            SpanInput(
                position=order.index(span[0]),
                quote=span[1],
                category=span[2],
                harm=span[3],
                note=span[4] if len(span) > 4 else "",
            )
            for span in spans
        ),
    )


def rate(seat: Assignment, **kwargs: Any) -> None:
    """Record ``answer(seat, **kwargs)`` as the seat's rater, through the rating service."""
    assert seat.rater is not None
    rating_services.judgment_record(assignment=seat, rater=seat.rater, data=answer(seat, **kwargs))


def adjudication_of(comparison: Comparison) -> Adjudication | None:
    return Adjudication.objects.filter(comparison=comparison).first()


def unseated(comparison: Comparison, users: Sequence[User]) -> list[User]:
    taken = {s.rater_id for s in seats(comparison, repeats=True)}
    return [u for u in users if u.pk not in taken]


def final_post(positions: int = 2, preference: str = "A", **extra: object) -> dict[str, str]:
    """A complete final-judgment form POST for the default rubric."""
    data = {"preference": preference, "reason": "Rater 2 missed the dose error."}
    for position in range(positions):
        letter = "ABCDEFGH"[position]
        data[f"{letter}-reasoning_clarity"] = "3"
        data[f"{letter}-treatment_feasibility"] = "2"
        data[f"{letter}-hallucination"] = "factual" if position == 0 else "none"
        if position == 0:
            data[f"{letter}-severity"] = "major"
    data.update({k: str(v) for k, v in extra.items()})
    return data
