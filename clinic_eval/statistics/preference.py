"""Pairwise and best-of-N preference statistics for blinded physician comparisons of model arms.

Input shapes (pandas DataFrames, one row per judgment):

* pairwise judgments: ``case_id``, ``rater_id``, ``arm_a``, ``arm_b``, ``outcome`` with outcome in
  ``{"a", "b", "tie", "both_bad"}``; ``"both_bad"`` means the rater found neither response
  acceptable, which is not a statement about which one is better;
* best-of-N rows: ``case_id``, ``rater_id``, ``arms`` (a tuple of the arms shown), ``winner``;
* position rows: ``left_arm``, ``right_arm``, ``outcome`` in
  ``{"left", "right", "tie", "both_bad"}``;
* length rows: ``length_a``, ``length_b``, ``outcome`` (as for pairwise judgments).

Everything here is pure (arrays and DataFrames in, frozen dataclasses or DataFrames out) and has
no Django import, so it can be used from notebooks and tested without a database.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from clinic_eval.statistics.intervals import Interval, wilson_interval

OUTCOMES: tuple[str, ...] = ("a", "b", "tie", "both_bad")


POSITION_OUTCOMES: tuple[str, ...] = ("left", "right", "tie", "both_bad")


JUDGMENT_COLUMNS: tuple[str, ...] = ("case_id", "rater_id", "arm_a", "arm_b", "outcome")


@dataclass(frozen=True)
class PositionBias:
    """Share of decisive judgments that went to the left-hand (first shown) response."""

    decisive: int
    left_wins: int
    right_wins: int
    ties: int
    both_bad: int
    left_share: Interval
    p_value: float


@dataclass(frozen=True)
class LengthPreference:
    """Whether raters prefer the longer response among decisive judgments.

    ``longer_share`` counts only decisive judgments whose two lengths differ (``unequal``);
    ``spearman_rho`` uses all ``decisive`` judgments, correlating ``length_a - length_b`` with
    ``+1`` (a won) / ``-1`` (b won).
    """

    decisive: int
    unequal: int
    longer_wins: int
    longer_share: Interval
    p_value: float
    spearman_rho: float
    spearman_p: float


def sign_test(wins_a: int, wins_b: int) -> float:
    """Exact two-sided sign test of ``P(a beats b) = 1/2`` on decisive judgments only.

    Ties and ``both_bad`` must already be excluded by the caller: they carry no information about
    which arm is better. Under p = 1/2 the binomial is symmetric, so the two-sided p-value (sum of
    outcomes at most as likely as the observed one) is ``2 * P(X <= min(a, b))``, capped at 1.
    """
    if wins_a < 0 or wins_b < 0:
        raise ValueError("win counts must be non-negative")
    n = int(wins_a) + int(wins_b)
    if n == 0:
        return 1.0
    if wins_a == wins_b:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(wins_a, wins_b), n, 0.5)))


def judgment_codes(
    judgments: pd.DataFrame,
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Validate pairwise judgments and code them in one pass over the columns.

    Returns the arm names (as strings, sorted), arm_a and arm_b as positions in them, and the
    outcome as a position in OUTCOMES (a, b, tie, both_bad).
    """
    missing = [c for c in JUDGMENT_COLUMNS if c not in judgments.columns]
    if missing:
        raise ValueError(f"judgments lack columns {missing}")
    n = len(judgments)
    both = pd.concat([judgments["arm_a"], judgments["arm_b"]], ignore_index=True)
    raw, uniques = pd.factorize(both)
    if (raw < 0).any():
        raise ValueError("arm_a and arm_b must not be missing")
    outcome = pd.Index(OUTCOMES).get_indexer(pd.Index(judgments["outcome"]))
    if (outcome < 0).any():
        bad = set(judgments["outcome"].unique()) - set(OUTCOMES)
        raise ValueError(f"unknown outcomes {sorted(map(str, bad))}; expected {OUTCOMES}")
    if (raw[:n] == raw[n:]).any():
        raise ValueError("an arm cannot be compared with itself")
    # Arms are compared as strings (astype(str)), so 1 and "1" are one arm.
    names = pd.Index(uniques).astype(str).tolist()
    arms = tuple(sorted(set(names)))
    position = np.array([arms.index(name) for name in names], dtype=int)
    index = position[raw] if n else np.zeros(0, int)
    return arms, index[:n], index[n:], outcome


Codes = tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]


def win_rates(
    judgments: pd.DataFrame, confidence: float = 0.95, *, codes: Codes | None = None
) -> pd.DataFrame:
    """Per-arm tallies and win rates, one row per arm (index ``arm``, sorted).

    Columns:

    * ``comparisons``: every judgment the arm took part in, ``both_bad`` included;
    * ``wins``, ``losses``, ``ties``, ``both_bad`` (these sum to ``comparisons``);
    * ``win_rate = wins / comparisons`` with Wilson ``win_rate_low`` / ``win_rate_high``: the
      strict rate, in which a tie or a both-unacceptable judgment is not a win;
    * ``tie_half_rate = (wins + 0.5 * ties) / (wins + losses + ties)`` with a Wilson interval on
      that denominator (fractional successes): ``both_bad`` is left out of the denominator
      because it says nothing about which of the two responses was better.

    Rates are nan where their denominator is 0. ``codes`` is ``judgment_codes(judgments)``
    when the caller already has it.
    """
    arms, ia, ib, outcome = codes or judgment_codes(judgments)
    k = len(arms)

    def tally(first: int, second: int) -> np.ndarray:
        # Judgments with outcome `first` for arm_a, plus those with `second` for arm_b.
        return np.bincount(ia[outcome == first], minlength=k) + np.bincount(
            ib[outcome == second], minlength=k
        )

    counts = pd.DataFrame(
        {"wins": tally(0, 1), "losses": tally(1, 0), "ties": tally(2, 2), "both_bad": tally(3, 3)},
        index=pd.Index(arms, name="arm"),
    ).astype(int)
    counts.insert(0, "comparisons", counts[["wins", "losses", "ties", "both_bad"]].sum(axis=1))
    rows = []
    for _, row in counts.iterrows():
        strict = wilson_interval(row["wins"], row["comparisons"], confidence)
        tied_n = row["wins"] + row["losses"] + row["ties"]
        half = wilson_interval(row["wins"] + 0.5 * row["ties"], tied_n, confidence)
        rows.append(
            {
                "win_rate": strict.estimate,
                "win_rate_low": strict.low,
                "win_rate_high": strict.high,
                "tie_half_rate": half.estimate,
                "tie_half_low": half.low,
                "tie_half_high": half.high,
            }
        )
    return pd.concat([counts, pd.DataFrame(rows, index=counts.index)], axis=1)


def pairwise_win_rates(
    judgments: pd.DataFrame, confidence: float = 0.95, *, codes: Codes | None = None
) -> pd.DataFrame:
    """Head-to-head tallies per unordered arm pair, one row each (``arm_1 < arm_2``).

    Columns: ``arm_1``, ``arm_2``, ``comparisons`` (all judgments of the pair), ``wins_1``,
    ``wins_2``, ``ties``, ``both_bad``, ``decisive = wins_1 + wins_2``, ``win_rate_1 = wins_1 /
    decisive`` with a Wilson interval, and ``sign_p`` (exact two-sided sign test on the decisive
    judgments; ties and both_bad excluded).
    """
    arms, ia, ib, outcome = codes or judgment_codes(judgments)
    k = len(arms)
    # Orient each judgment to the sorted pair (arm codes follow the sorted arm names).
    swap = ia > ib
    pair = np.where(swap, ib, ia) * k + np.where(swap, ia, ib)
    first_won = ((outcome == 0) & ~swap) | ((outcome == 1) & swap)
    second_won = ((outcome == 1) & ~swap) | ((outcome == 0) & swap)
    tallies = {
        name: np.bincount(pair[rows], minlength=k * k)
        for name, rows in (
            ("wins_1", first_won),
            ("wins_2", second_won),
            ("ties", outcome == 2),
            ("both_bad", outcome == 3),
        )
    }
    seen = np.flatnonzero(np.bincount(pair, minlength=k * k))
    names = np.array(arms, dtype=object)
    counts = pd.DataFrame(
        {
            "arm_1": names[seen // k],
            "arm_2": names[seen % k],
            **{name: tally[seen] for name, tally in tallies.items()},
        }
    ).astype({name: int for name in tallies})
    counts.insert(2, "comparisons", counts[["wins_1", "wins_2", "ties", "both_bad"]].sum(axis=1))
    counts["decisive"] = counts["wins_1"] + counts["wins_2"]
    intervals = [
        wilson_interval(w, n, confidence)
        for w, n in zip(counts["wins_1"], counts["decisive"], strict=True)
    ]
    counts["win_rate_1"] = [i.estimate for i in intervals]
    counts["win_rate_1_low"] = [i.low for i in intervals]
    counts["win_rate_1_high"] = [i.high for i in intervals]
    counts["sign_p"] = [
        sign_test(w1, w2) for w1, w2 in zip(counts["wins_1"], counts["wins_2"], strict=True)
    ]
    return counts


def best_of_n_shares(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Winning share per arm in best-of-N tasks: ``share = wins / shown`` with a Wilson interval.

    ``rows`` has ``arms`` (tuple of arms shown) and ``winner``; a missing winner (None / nan)
    means no response was chosen, which counts as a showing without a win. ``chance_share`` is
    the share expected if raters picked uniformly at random among the arms shown (the mean of
    ``1 / len(arms)`` over the arm's showings), since N may vary between tasks.
    """
    for column in ("arms", "winner"):
        if column not in rows.columns:
            raise ValueError(f"best-of-N rows lack column {column!r}")
    shown: dict[Hashable, int] = {}
    wins: dict[Hashable, int] = {}
    chance: dict[Hashable, float] = {}
    for arms, winner in zip(rows["arms"], rows["winner"], strict=True):
        arms = tuple(arms)
        if len(arms) < 2 or len(set(arms)) != len(arms):
            raise ValueError(f"a best-of-N task needs at least two distinct arms, got {arms}")
        has_winner = winner is not None and not (isinstance(winner, float) and math.isnan(winner))
        if has_winner and winner not in arms:
            raise ValueError(f"winner {winner!r} was not among the arms shown {arms}")
        for arm in arms:
            shown[arm] = shown.get(arm, 0) + 1
            chance[arm] = chance.get(arm, 0.0) + 1 / len(arms)
            wins.setdefault(arm, 0)
        if has_winner:
            wins[winner] += 1
    records = []
    for arm in sorted(shown, key=str):
        interval = wilson_interval(wins[arm], shown[arm], confidence)
        records.append(
            {
                "arm": arm,
                "shown": shown[arm],
                "wins": wins[arm],
                "share": interval.estimate,
                "share_low": interval.low,
                "share_high": interval.high,
                "chance_share": chance[arm] / shown[arm],
            }
        )
    columns = ["arm", "shown", "wins", "share", "share_low", "share_high", "chance_share"]
    return pd.DataFrame.from_records(records, columns=columns).set_index("arm")


def position_bias(judgments: pd.DataFrame, confidence: float = 0.95) -> PositionBias:
    """Do raters favour the response shown on the left?

    Uses rows with ``left_arm``, ``right_arm`` and ``outcome`` in ``{"left", "right", "tie",
    "both_bad"}``. The share of decisive choices that went left gets a Wilson interval and an
    exact two-sided binomial test against 1/2. With arm order randomised, arm quality averages
    out over positions, so a departure from 1/2 is attributable to position.
    """
    for column in ("left_arm", "right_arm", "outcome"):
        if column not in judgments.columns:
            raise ValueError(f"position rows lack column {column!r}")
    outcome = judgments["outcome"].to_numpy()
    bad = set(outcome) - set(POSITION_OUTCOMES)
    if bad:
        raise ValueError(f"unknown outcomes {sorted(map(str, bad))}; expected {POSITION_OUTCOMES}")
    left = int(np.sum(outcome == "left"))
    right = int(np.sum(outcome == "right"))
    return PositionBias(
        decisive=left + right,
        left_wins=left,
        right_wins=right,
        ties=int(np.sum(outcome == "tie")),
        both_bad=int(np.sum(outcome == "both_bad")),
        left_share=wilson_interval(left, left + right, confidence),
        p_value=sign_test(left, right),
    )


def length_preference(rows: pd.DataFrame, confidence: float = 0.95) -> LengthPreference:
    """Do raters prefer the longer response?

    Uses rows with ``length_a``, ``length_b`` and ``outcome``; only decisive rows (``"a"`` or
    ``"b"``) are used, the rest are ignored. The share of decisive judgments with unequal
    lengths in which the longer response won gets a Wilson interval and a sign test (equal
    lengths cannot favour either side, so they are excluded there). Spearman's rho relates
    ``length_a - length_b`` to ``+1`` (a won) / ``-1`` (b won) over all decisive rows; it is nan
    when either variable is constant.
    """
    for column in ("length_a", "length_b", "outcome"):
        if column not in rows.columns:
            raise ValueError(f"length rows lack column {column!r}")
    outcome = rows["outcome"].to_numpy()
    bad = set(outcome) - set(OUTCOMES)
    if bad:
        raise ValueError(f"unknown outcomes {sorted(map(str, bad))}; expected {OUTCOMES}")
    decisive = (outcome == "a") | (outcome == "b")
    diff = (rows["length_a"].to_numpy(float) - rows["length_b"].to_numpy(float))[decisive]
    sign = np.where(outcome[decisive] == "a", 1.0, -1.0)
    unequal = diff != 0
    longer_wins = int(np.sum(np.sign(diff[unequal]) == sign[unequal]))
    n_unequal = int(unequal.sum())
    if diff.size >= 2 and np.ptp(diff) > 0 and np.ptp(sign) > 0:
        rho, rho_p = stats.spearmanr(diff, sign)
        rho, rho_p = float(rho), float(rho_p)
    else:
        rho, rho_p = math.nan, math.nan
    return LengthPreference(
        decisive=int(decisive.sum()),
        unequal=n_unequal,
        longer_wins=longer_wins,
        longer_share=wilson_interval(longer_wins, n_unequal, confidence),
        p_value=sign_test(longer_wins, n_unequal - longer_wins),
        spearman_rho=rho,
        spearman_p=rho_p,
    )
