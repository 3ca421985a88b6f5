"""An open study rated through the real services with seeded, varied answers."""

from __future__ import annotations

import random

from clinic_eval.config import preference_choices
from clinic_eval.models import Response, Study, User
from clinic_eval.rating import services
from tests.support.rating_study import OpenStudy, open_study, physicians

RATIONALES = (
    "Clearer plan.",
    'Says "IVF first", which fits.',
    '=HYPERLINK("http://x")',
    "Two lines:\nfirst, then second",
    "",
    "-2 doses too many",
)


def rate_everything(built: OpenStudy, *, seed: int = 3, edits: int = 2) -> int:
    """Every rater rates their whole queue; a few judgments are then edited. Returns count."""
    rng = random.Random(seed)
    study = built.study
    flag = study.rubric["hallucination"]
    count = 0
    for rater in built.raters:
        while (seat := services.assignment_next(rater=rater, study=study)) is not None:
            positions = len(seat.shown_order)
            choices = preference_choices(study.design, positions)
            ratings = []
            for position in range(positions):
                kind = rng.choice(flag["types"])
                ratings.append(
                    services.RatingInput(
                        position=position,
                        scores={
                            d["key"]: rng.randint(d["scale_min"], d["scale_max"])
                            for d in study.rubric["dimensions"]
                        },
                        hallucination=kind,
                        severity=rng.choice(flag["severities"]) if kind != "none" else "",
                        note=rng.choice(["", "dose?", "+ check AMH"]),
                    )
                )
            data = services.JudgmentInput(
                preference=rng.choice(choices),
                ratings=tuple(ratings),
                rationale=rng.choice(RATIONALES),
            )
            judgment, _ = services.judgment_record(assignment=seat, rater=rater, data=data)
            count += 1
            if edits and count % 5 == 0:
                services.judgment_record(
                    assignment=seat,
                    rater=rater,
                    data=services.JudgmentInput(
                        preference=choices[0], ratings=data.ratings, rationale="changed my mind"
                    ),
                    revision=judgment.revision,
                    reason="second look",
                )
                edits -= 1
    return count


def decisions(built: OpenStudy, *, seed: int = 5) -> None:
    """Give responses parsed decisions and cases ground truth on two decision layers."""
    rng = random.Random(seed)
    for case in built.cases:
        case.ground_truth = {
            "diagnosis": rng.sample(["tubal_factor", "male_factor_mild", "unexplained"], 2),
            "art_strategy": rng.choice(["IVF", "ICSI", "IUI"]),
        }
        case.save(update_fields=["ground_truth"])
    for response in Response.objects.filter(case__in=built.cases):
        response.parsed_decision = {
            "diagnosis": rng.sample(["tubal_factor", "male_factor_mild", "unexplained"], 1),
            "art_strategy": rng.choice(["IVF", "ICSI", "IUI"]),
        }
        response.save(update_fields=["parsed_decision"])


def rated_study(coordinator: User, *, n_raters: int = 3, **options: object) -> OpenStudy:
    raters = physicians(n_raters)
    built = open_study(coordinator=coordinator, raters=raters, repeat_fraction=0.2, **options)
    Study.objects.filter(pk=built.study.pk).update(
        decision_layers={
            "diagnosis": {"title": "Diagnosis", "multi": True, "labels": ["tubal_factor",
                          "male_factor_mild", "unexplained"]},
            "art_strategy": {"title": "ART", "multi": False, "labels": ["IVF", "ICSI", "IUI"]},
        }
    )  # fmt: skip
    built.study.refresh_from_db()
    decisions(built)
    rate_everything(built)
    return built
