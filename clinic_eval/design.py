"""The blinded design: which rater sees which comparison, in which positions and order.

Pure functions over plain values, so a design can be rebuilt from the study seed and checked
without a database. Issue 4's services store the result as Comparison and Assignment rows.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class DesignError(ValueError):
    """The requested design cannot be built; the message says what to change."""


@dataclass(frozen=True)
class Comparison:
    case_id: str
    arms: tuple[str, ...]  # sorted: the arm set, independent of where each is shown


@dataclass(frozen=True)
class Assignment:
    rater: str
    comparison: int  # index into Design.comparisons
    shown: tuple[str, ...]  # arms in on-screen order: A/B, or 1..N
    queue_position: int  # 0-based place in the rater's queue
    repeat: bool = False  # a second showing for intra-rater consistency


@dataclass(frozen=True)
class Design:
    comparisons: list[Comparison]
    assignments: list[Assignment]

    def balance(self) -> dict[tuple[str, ...], Counter[tuple[str, ...]]]:
        """Per arm set: how often each on-screen order was used (first showings only)."""
        table: dict[tuple[str, ...], Counter[tuple[str, ...]]] = defaultdict(Counter)
        for assignment in self.assignments:
            if not assignment.repeat:
                table[self.comparisons[assignment.comparison].arms][assignment.shown] += 1
        return dict(table)


def build_comparisons(
    case_ids: Sequence[str], arm_sets: Sequence[Sequence[str]]
) -> list[Comparison]:
    """One comparison per case and arm set (a pair, or N arms for best-of-N)."""
    sets = []
    for arms in arm_sets:
        key = tuple(sorted(arms))
        if len(key) < 2 or len(set(key)) != len(key):
            raise DesignError(f"an arm set needs two or more distinct arms; got {list(arms)}")
        if key not in sets:
            sets.append(key)
    return [Comparison(case_id, arms) for case_id in case_ids for arms in sets]


def _orders(arms: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The cyclic rotations: each arm takes each position once (a Latin square row set)."""
    return [arms[i:] + arms[:i] for i in range(len(arms))]


def build_design(
    *,
    comparisons: Sequence[Comparison],
    raters: Sequence[str],
    raters_per_item: int,
    seed: int,
    authors: Mapping[str, str] | None = None,
    repeats_per_rater: int = 0,
) -> Design:
    """Assign every comparison to exactly ``raters_per_item`` raters, balanced.

    - Load: each comparison goes to the eligible raters with the fewest items so far, then the
      fewest of that arm set, so every rater gets a similar number and a similar mix.
    - Never a rater's own case: ``authors`` maps a case id to the rater who made its original
      decision.
    - Positions: per arm set, on-screen orders cycle through the rotations, so each arm is
      shown in each position equally often (within one).
    - Order: each rater's queue is shuffled by the seed; repeats (a second showing with the
      order rotated) go in the second half of the queue.
    Same inputs and seed, same design.
    """
    authors = authors or {}
    raters = sorted(set(raters))
    if raters_per_item < 1:
        raise DesignError("raters per item must be at least 1")
    rng = random.Random(seed)
    tiebreak = {rater: rng.random() for rater in raters}
    order = list(range(len(comparisons)))
    rng.shuffle(order)

    load: Counter[str] = Counter()
    mix: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
    rotation: Counter[tuple[str, ...]] = Counter()
    per_rater: dict[str, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
    for index in order:
        comparison = comparisons[index]
        eligible = [r for r in raters if authors.get(comparison.case_id) != r]
        if len(eligible) < raters_per_item:
            raise DesignError(
                f"case {comparison.case_id} needs {raters_per_item} raters but only "
                f"{len(eligible)} may rate it (a physician never rates their own case)"
            )
        chosen = sorted(eligible, key=lambda r: (load[r], mix[r][comparison.arms], tiebreak[r]))[
            :raters_per_item
        ]
        orders = _orders(comparison.arms)
        for rater in chosen:
            start = rotation[comparison.arms]
            rotation[comparison.arms] += 1
            shown = orders[start % len(orders)]
            if len(orders) == 2 and (start // 2) % 2:
                # Pairs alternate AB, BA, BA, AB... so no long runs of one side either.
                shown = orders[(start + 1) % 2]
            per_rater[rater].append((index, shown))
            load[rater] += 1
            mix[rater][comparison.arms] += 1

    assignments = []
    for rater in raters:
        items = per_rater.get(rater, [])
        rng_rater = random.Random(f"{seed}:{rater}")
        rng_rater.shuffle(items)
        queue = [(index, shown, False) for index, shown in items]
        if repeats_per_rater:
            picks = rng_rater.sample(items, min(repeats_per_rater, len(items)))
            half = len(queue) // 2
            for index, shown in picks:
                again = shown[1:] + shown[:1]
                queue.insert(rng_rater.randint(half, len(queue)), (index, again, True))
        assignments.extend(
            Assignment(rater, index, shown, position, repeat)
            for position, (index, shown, repeat) in enumerate(queue)
        )
    return Design(comparisons=list(comparisons), assignments=assignments)
