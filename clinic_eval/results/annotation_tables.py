"""The span and adjudication tables of the report, from the export frames (pure pandas, no ORM).

``reporting.tables_from_frames`` calls these for the database and for an export alike, so both
give the same tables: spans of first showings, every response a rater read (with its word
count) while the rubric asked for spans, one row per adjudicated item, and the judgments and
ratings with the adjudicators' answers in place (``statistics.adjudicated``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from clinic_eval.config import HARM_LEVELS, SEVERE_HARM, SpanAnnotation
from clinic_eval.spans.text import word_count
from clinic_eval.statistics import adjudicated
from clinic_eval.statistics.spans import SpanOptions

SPAN_FILES = ("spans.csv", "adjudications.csv")
RENAME = {"rater": "rater_id"}


def _frame(frames: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame:
    frame = frames.get(name)
    return frame if frame is not None else pd.DataFrame()


def span_options(meta: Mapping[str, Any]) -> SpanOptions | None:
    """The rubric's span categories when it enables spans, else None."""
    config = SpanAnnotation.model_validate((meta.get("rubric") or {}).get("spans") or {})
    if not config.enabled:
        return None
    return SpanOptions(
        categories=tuple(c.key for c in config.categories),
        titles=tuple(c.title for c in config.categories),
        omissions=tuple(c.key for c in config.categories if c.omission),
        harms=HARM_LEVELS,
        severe=SEVERE_HARM,
    )


def adjudication_enabled(meta: Mapping[str, Any]) -> bool:
    plan = meta.get("analysis_plan") or {}
    return bool((plan.get("adjudication") or {}).get("enabled"))


def span_tables(
    frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(spans, units): the spans of first showings, and one row per response each rater read
    in a first showing (case_id, rater_id, arm, words, showings); empty when the rubric has no
    spans and none were marked."""
    spans = _frame(frames, "spans.csv")
    if span_options(meta) is None and spans.empty:
        return pd.DataFrame(), pd.DataFrame()
    columns = ["case_id", "rater_id", "arm", "category", "harm", "start", "end"]
    if spans.empty:
        spans = pd.DataFrame(columns=columns)
    else:
        spans = spans[~spans["is_repeat"].astype(bool)].rename(columns=RENAME)[columns]
    judgments = frames["judgments.csv"]
    judgments = judgments[~judgments["is_repeat"].astype(bool)]
    shown = pd.DataFrame(
        {
            "case_id": judgments["case_id"].to_numpy(),
            "rater_id": judgments["rater"].to_numpy(),
            "arm": [arms.split(" | ") for arms in judgments["shown_arms"]],
        }
    ).explode("arm")
    units = (
        shown.groupby(["case_id", "rater_id", "arm"], sort=True)
        .size()
        .rename("showings")
        .reset_index()
    )
    responses = frames["responses.csv"]
    responses = responses[responses["sample_index"] == 0]
    words = pd.Series(
        [word_count(text or "") for text in responses["display_text"]],
        index=pd.MultiIndex.from_frame(responses[["case_id", "arm"]]),
        dtype=float,
    )
    units["words"] = words.reindex(pd.MultiIndex.from_frame(units[["case_id", "arm"]])).to_numpy()
    units["words"] = units["words"].fillna(0.0)
    return spans.reset_index(drop=True), units[["case_id", "rater_id", "arm", "words", "showings"]]


def adjudication_table(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per adjudicated item: case_id, arm_set, arms, raters (who rated it, repeats
    left out), status, adjudicator, triggers, preference, preferred_arm and the final scores
    ``{arm: {dimension: score}}``."""
    rows = _frame(frames, "adjudications.csv")
    columns = ["case_id", "arm_set", "arms", "raters", "status", "adjudicator", "triggers",
               "preference", "preferred_arm", "scores"]  # fmt: skip
    if rows.empty:
        return pd.DataFrame(columns=columns)
    judgments = frames["judgments.csv"]
    judgments = judgments[~judgments["is_repeat"].astype(bool)]
    raters: dict[tuple[Any, Any], set[Any]] = {}
    for case, arm_set, rater in zip(
        judgments["case_id"], judgments["arm_set"], judgments["rater"], strict=True
    ):
        raters.setdefault((case, arm_set), set()).add(rater)
    return pd.DataFrame(
        {
            "case_id": rows["case_id"].to_numpy(),
            "arm_set": rows["arm_set"].to_numpy(),
            "arms": [tuple(arm_set.split(" | ")) for arm_set in rows["arm_set"]],
            "raters": [
                tuple(sorted(raters.get(key, ())))
                for key in zip(rows["case_id"], rows["arm_set"], strict=True)
            ],
            "status": rows["status"].to_numpy(),
            "adjudicator": rows["adjudicator"].fillna("").to_numpy(),
            "triggers": [[t for t in (text or "").split(" | ") if t] for text in rows["triggers"]],
            "preference": rows["preference"].fillna("").to_numpy(),
            "preferred_arm": rows["preferred_arm"].fillna("").to_numpy(),
            "scores": [
                {arm: dict((entry or {}).get("scores") or {}) for arm, entry in final.items()}
                if isinstance(final, dict)
                else {}
                for final in rows["ratings"]
            ],
        },
        columns=columns,
    )


def adjudicated_frames(
    frames: Mapping[str, pd.DataFrame], adjudications: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """judgments.csv and ratings.csv with every raw judgment of a done item carrying the
    adjudicator's answer (ratings find their item through item_id)."""
    judgments = frames["judgments.csv"]
    ratings = frames["ratings.csv"]
    items = judgments.set_index("item_id")["arm_set"]
    with_item = ratings.assign(arm_set=items.reindex(ratings["item_id"]).to_numpy())
    return (
        adjudicated.adjudicated_judgments(judgments, adjudications),
        adjudicated.adjudicated_ratings(with_item, adjudications),
    )
