"""Adjudication in the report: how many items were sent, done and changed, and the primary
endpoint recomputed with the adjudicators' answers, the analysis plan's pre-registered
sensitivity analysis (docs/statistics.md#adjudication). Pure pandas/numpy.

An item is one case and arm set (``case_id``, ``arm_set``). The raters' own judgments are the
primary analysis and never change; here, every raw judgment of an adjudicated item takes the
adjudicator's answer (its preference, and its Likert score for each response and dimension it
gave), keeping its rater, so the sensitivity analysis has exactly the primary analysis's
rows and clusters, and only the answers of adjudicated items differ.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

DONE = "done"
ITEM = ["case_id", "arm_set"]
CHANGED = (
    "an adjudicated item changed when its contribution to the primary endpoint differs after "
    "adjudication: for a preference endpoint, the mean over the item's judgments of 1 when "
    "the first registered arm is preferred, 0.5 for a tie and 0 when the second is (both "
    "unacceptable left out); for a Likert endpoint, the mean over the item's raters of the "
    "first arm's score minus the second's on the registered dimension"
)
SENSITIVITY = (
    "pre-registered sensitivity analysis: the primary endpoint's clustered analysis with every "
    "raw judgment of an adjudicated item replaced by the adjudicator's answer, each keeping its "
    "rater as its cluster"
)


def _done(adjudications: pd.DataFrame) -> pd.DataFrame:
    if adjudications.empty:
        return adjudications
    return adjudications[adjudications["status"] == DONE]


def adjudicated_judgments(judgments: pd.DataFrame, adjudications: pd.DataFrame) -> pd.DataFrame:
    """``judgments`` (case_id, arm_set, arm_a, arm_b, outcome, preferred_arm) in which every
    judgment of a done item takes the adjudicator's preference: its preferred arm and, for a
    pair, the outcome relative to arm_a / arm_b ("tie" stays a tie, "none" is both_bad)."""
    done = _done(adjudications)
    done = done[done["preference"].fillna("") != ""] if len(done) else done
    if judgments.empty or done.empty:
        return judgments
    lookup = pd.MultiIndex.from_frame(done[ITEM])
    at = lookup.get_indexer(pd.MultiIndex.from_frame(judgments[ITEM]))
    hit = at >= 0
    preference = done["preference"].to_numpy(dtype=object)[at[hit]]
    preferred = done["preferred_arm"].fillna("").to_numpy(dtype=object)[at[hit]]
    out = judgments.copy()
    arm_a = out["arm_a"].to_numpy(dtype=object)[hit]
    pair = out["arm_a"].fillna("").to_numpy(dtype=object)[hit] != ""
    outcome = np.where(
        preference == "tie",
        "tie",
        np.where(preference == "none", "both_bad", np.where(preferred == arm_a, "a", "b")),
    )
    rows = np.flatnonzero(hit)
    out.loc[out.index[rows], "preferred_arm"] = preferred
    out.loc[out.index[rows[pair]], "outcome"] = outcome[pair]
    return out


def adjudicated_ratings(ratings: pd.DataFrame, adjudications: pd.DataFrame) -> pd.DataFrame:
    """``ratings`` (case_id, arm_set, arm, dimension, score) with each score of a done item
    replaced by the adjudicator's score for the same response and dimension, where given.
    ``adjudications.scores`` holds ``{arm: {dimension: score}}``."""
    done = _done(adjudications)
    final = [
        (case, arm_set, arm, dimension, score)
        for case, arm_set, scores in zip(
            done.get("case_id", []), done.get("arm_set", []), done.get("scores", []), strict=True
        )
        for arm, by_dimension in sorted((scores or {}).items())
        for dimension, score in sorted((by_dimension or {}).items())
        if score is not None
    ]
    if ratings.empty or not final:
        return ratings
    table = pd.DataFrame(final, columns=[*ITEM, "arm", "dimension", "score"])
    keys = [*ITEM, "arm", "dimension"]
    at = pd.MultiIndex.from_frame(table[keys]).get_indexer(pd.MultiIndex.from_frame(ratings[keys]))
    hit = at >= 0
    out = ratings.copy()
    out.loc[out.index[hit], "score"] = table["score"].to_numpy()[at[hit]]
    return out


def item_contributions(
    judgments: pd.DataFrame,
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    primary: Sequence[str],
) -> list[float | None]:
    """Each item's contribution to the primary endpoint (``CHANGED``); None for an item that
    contributes nothing to it (another arm pair), NaN when its judgments carry nothing (every
    one "both unacceptable"). ``judgments`` and ``ratings`` are the report's tables
    (pairwise judgments; one score per case, rater, arm and dimension); ``items`` has
    case_id, arms and raters (who rated the item, repeats left out)."""
    if not primary:
        return [None] * len(items)
    if judgments.empty:
        judgments = pd.DataFrame(columns=["case_id", "rater_id", "arm_a", "arm_b", "outcome"])
    if ratings.empty:
        ratings = pd.DataFrame(columns=["case_id", "rater_id", "arm", "dimension", "score"])
    kind, *rest = primary
    contributions: list[float | None] = []
    if kind == "preference":
        first, second = rest
        pair = tuple(sorted((first, second)))
        same = judgments[(judgments["arm_a"] == pair[0]) & (judgments["arm_b"] == pair[1])]
        score = {"a": 1.0, "b": 0.0, "tie": 0.5} if first == pair[0] else {"a": 0.0, "b": 1.0,
                                                                          "tie": 0.5}  # fmt: skip
        values = same["outcome"].map(score)
        by_case = values.groupby(same["case_id"], sort=False).agg(["sum", "count"])
        for case, arms in zip(items["case_id"], items["arms"], strict=True):
            if set(arms) != {first, second}:
                contributions.append(None)
            elif case in by_case.index and by_case.loc[case, "count"]:
                contributions.append(float(by_case.loc[case, "sum"] / by_case.loc[case, "count"]))
            else:
                contributions.append(math.nan)
        return contributions
    dimension, first, second = rest
    wanted = ratings[
        (ratings["dimension"] == dimension)
        & ratings["arm"].isin([first, second])
        & ratings["case_id"].isin(set(items["case_id"]))
    ]
    scores = {
        (case, rater, arm): float(score)
        for case, rater, arm, score in zip(
            wanted["case_id"], wanted["rater_id"], wanted["arm"], wanted["score"], strict=True
        )
    }
    for case, arms, raters in zip(items["case_id"], items["arms"], items["raters"], strict=True):
        if first not in arms or second not in arms:
            contributions.append(None)
            continue
        differences = [
            scores[(case, rater, first)] - scores[(case, rater, second)]
            for rater in raters
            if (case, rater, first) in scores and (case, rater, second) in scores
        ]
        contributions.append(float(np.mean(differences)) if differences else math.nan)
    return contributions


def _same(before: float | None, after: float | None) -> bool:
    if before is None or after is None:
        return before is after
    if math.isnan(before) or math.isnan(after):
        return math.isnan(before) and math.isnan(after)
    return abs(before - after) < 1e-12


def adjudication_report(
    adjudications: pd.DataFrame,
    raw: tuple[pd.DataFrame, pd.DataFrame],
    adjudicated: tuple[pd.DataFrame, pd.DataFrame],
    primary: Sequence[str],
    analyse: Callable[[pd.DataFrame, pd.DataFrame], dict[str, Any] | None],
) -> dict[str, Any]:
    """The report's ``adjudication`` section. ``raw`` and ``adjudicated`` are (judgments,
    ratings) as the report's tables; ``analyse`` runs the primary endpoint's analysis on such
    a pair (the same function the primary endpoint comes from)."""
    items = (
        adjudications
        if len(adjudications)
        else pd.DataFrame(
            columns=["case_id", "arm_set", "arms", "raters", "status", "adjudicator", "triggers"]
        )
    )
    before = item_contributions(*raw, items, primary)
    after = item_contributions(*adjudicated, items, primary)
    status = items["status"].to_numpy(dtype=object)
    rows = []
    for index, (case, arm_set, triggers) in enumerate(
        zip(items["case_id"], items["arm_set"], items["triggers"], strict=True)
    ):
        done = status[index] == DONE
        contributes = before[index] is not None
        rows.append(
            {
                "case_id": case,
                "arm_set": arm_set,
                "status": status[index],
                "triggers": list(triggers),
                "in_primary": contributes,
                "raw": before[index],
                "adjudicated": after[index] if done else None,
                "changed": bool(done and contributes and not _same(before[index], after[index])),
            }
        )
    tally = Counter(t for triggers in items["triggers"] for t in triggers)
    pending = status != DONE
    unassigned = pending & (items["adjudicator"].fillna("").to_numpy(dtype=object) == "")
    return {
        "counts": {
            "triggered": len(items),
            "pending": int(pending.sum()),
            "unassigned": int(unassigned.sum()),
            "done": int((~pending).sum()),
            "in_primary": sum(1 for row in rows if row["in_primary"] and row["status"] == DONE),
            "changed": sum(1 for row in rows if row["changed"]),
        },
        "triggers": [
            {"trigger": trigger, "items": count}
            for trigger, count in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "items": rows,
        "changed_means": CHANGED,
        "sensitivity_label": SENSITIVITY,
        "sensitivity_primary": analyse(*adjudicated) if primary else None,
    }
