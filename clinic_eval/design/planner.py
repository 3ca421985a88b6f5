"""The blinded design: which rater sees which comparison, in which positions and order.

Pure functions over plain values, so a design can be rebuilt from the study seed and checked
without a database. ``design.services`` stores the result as Comparison and Assignment rows.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from clinic_eval.config import RUBRIC_MODE


class DesignError(ValueError):
    """The requested design cannot be built; the message says what to change."""


@dataclass(frozen=True)
class PlannedComparison:
    case_id: str
    arms: tuple[str, ...]  # sorted: the arm set, independent of where each is shown


@dataclass(frozen=True)
class PlannedSeat:
    rater: str
    comparison: int  # index into PlannedDesign.comparisons
    shown: tuple[str, ...]  # arms in on-screen order: A/B, or 1..N
    queue_position: int  # 0-based place in the rater's queue
    repeat: bool = False  # a second showing for intra-rater consistency


@dataclass(frozen=True)
class PlannedDesign:
    comparisons: list[PlannedComparison]
    assignments: list[PlannedSeat]

    def balance(self) -> dict[tuple[str, ...], Counter[tuple[str, ...]]]:
        """Per arm set: how often each on-screen order was used (first showings only)."""
        table: dict[tuple[str, ...], Counter[tuple[str, ...]]] = defaultdict(Counter)
        for assignment in self.assignments:
            if not assignment.repeat:
                table[self.comparisons[assignment.comparison].arms][assignment.shown] += 1
        return dict(table)


def check_arm_sets(arm_sets: Sequence[Sequence[str]], *, mode: str = "pairwise") -> None:
    """Refuse arm sets the mode cannot use.

    Pairwise and best-of-N: two or more distinct arms per set. Rubric mode grades each response
    on its own criteria, so a set may hold a single arm; but every set must be the same size
    (a response graded alone and one graded beside others are not graded alike) and no arm may
    be in two sets (a rater would grade the same response twice).
    """
    least = 1 if mode == RUBRIC_MODE else 2
    for arms in arm_sets:
        if len(arms) < least or len(set(arms)) != len(arms):
            need = "one or more" if least == 1 else "two or more"
            raise DesignError(f"an arm set needs {need} distinct arms; got {list(arms)}")
    if mode != RUBRIC_MODE:
        return
    if len({len(arms) for arms in arm_sets}) > 1:
        raise DesignError(
            "in rubric mode every arm set must hold the same number of arms, so every "
            "response is graded in the same setting; got sizes "
            + ", ".join(str(len(arms)) for arms in arm_sets)
        )
    seen: Counter[str] = Counter(arm for arms in arm_sets for arm in arms)
    twice = sorted(arm for arm, n in seen.items() if n > 1)
    if twice:
        raise DesignError(
            "in rubric mode an arm may be in only one arm set (its responses would be graded "
            f"twice): {', '.join(twice)}"
        )


def build_comparisons(
    case_ids: Sequence[str], arm_sets: Sequence[Sequence[str]], *, mode: str = "pairwise"
) -> list[PlannedComparison]:
    """One comparison per case and arm set (a pair, N arms for best-of-N, 1+ in rubric mode)."""
    check_arm_sets(arm_sets, mode=mode)
    sets = []
    for arms in arm_sets:
        key = tuple(sorted(arms))
        if key not in sets:
            sets.append(key)
    return [PlannedComparison(case_id, arms) for case_id in case_ids for arms in sets]


def _orders(arms: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The cyclic rotations: each arm takes each position once (a Latin square row set)."""
    return [arms[i:] + arms[:i] for i in range(len(arms))]


def _counterbalance(
    comparisons: Sequence[PlannedComparison],
    raters: Sequence[str],
    per_rater: Mapping[str, list[int]],
) -> dict[tuple[str, int], tuple[str, ...]]:
    """The on-screen order of each (rater, comparison), balanced per rater and overall.

    Each rater shows each rotation of an arm set ``n // k`` times; the ``n % k`` left over
    go to the rotations next in a cycle that runs on across raters, so every rater's counts
    and the arm set's totals are both within one.
    """
    cycle: Counter[tuple[str, ...]] = Counter()
    shown: dict[tuple[str, int], tuple[str, ...]] = {}
    for rater in raters:
        by_set: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for index in per_rater.get(rater, []):
            by_set[comparisons[index].arms].append(index)
        for arms in sorted(by_set):
            orders = _orders(arms)
            base, extra = divmod(len(by_set[arms]), len(orders))
            counts = [base] * len(orders)
            for step in range(extra):
                counts[(cycle[arms] + step) % len(orders)] += 1
            cycle[arms] += extra
            # Interleaved (AB, BA, AB...) so no long runs of one side in processing order.
            sequence = []
            remaining = counts[:]
            while any(remaining):
                for position, order in enumerate(orders):
                    if remaining[position]:
                        sequence.append(order)
                        remaining[position] -= 1
            for index, order in zip(by_set[arms], sequence, strict=True):
                shown[(rater, index)] = order
    return shown


def build_design(
    *,
    comparisons: Sequence[PlannedComparison],
    raters: Sequence[str],
    raters_per_item: int,
    seed: int,
    authors: Mapping[str, str] | None = None,
    repeats_per_rater: int = 0,
) -> PlannedDesign:
    """Assign every comparison to exactly ``raters_per_item`` raters, balanced.

    - Load: each comparison goes to the eligible raters with the fewest items so far, then the
      fewest shared with the raters already chosen for it, then the fewest of that arm set: every
      rater gets a similar number and mix, and pairs of raters rotate instead of staying fixed,
      so agreement is measured across many rater pairs.
    - Never a rater's own case: ``authors`` maps a case id to the rater who made its original
      decision.
    - Positions: per arm set, every arm is shown in every position equally often, within
      one, both for each rater and in total (see ``_counterbalance``).
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
    together: Counter[frozenset[str]] = Counter()  # items each pair of raters shares
    per_rater: dict[str, list[int]] = defaultdict(list)
    for index in order:
        comparison = comparisons[index]
        eligible = [r for r in raters if authors.get(comparison.case_id) != r]
        if len(eligible) < raters_per_item:
            raise DesignError(
                f"case {comparison.case_id} needs {raters_per_item} raters but only "
                f"{len(eligible)} may rate it (a physician never rates their own case)"
            )
        chosen: list[str] = []
        for _ in range(raters_per_item):
            chosen.append(
                min(
                    (r for r in eligible if r not in chosen),
                    key=lambda r: (
                        load[r],
                        sum(together[frozenset((r, other))] for other in chosen),
                        mix[r][comparison.arms],
                        tiebreak[r],
                    ),
                )
            )
        for first, second in combinations(chosen, 2):
            together[frozenset((first, second))] += 1
        for rater in chosen:
            per_rater[rater].append(index)
            load[rater] += 1
            mix[rater][comparison.arms] += 1

    shown_for = _counterbalance(comparisons, raters, per_rater)

    assignments: list[PlannedSeat] = []
    for rater in raters:
        items = [(index, shown_for[(rater, index)]) for index in per_rater.get(rater, [])]
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
            PlannedSeat(rater, index, shown, position, repeat)
            for position, (index, shown, repeat) in enumerate(queue)
        )
    return PlannedDesign(comparisons=list(comparisons), assignments=assignments)


SKIP_MISSING = "a response is missing, held back or excluded"
SKIP_RATERS = "too few raters who did not author the case"
SKIP_LIMIT = "beyond the items-per-rater limit"
SKIP_NO_RUBRIC = "no verified rubric"


@dataclass(frozen=True)
class StudyPlan:
    design: PlannedDesign
    skipped: dict[str, int]  # reason -> comparisons left out
    repeats_per_rater: int


def _interleaved_cases(case_ids: Sequence[str], strata: Mapping[str, str], seed: int) -> list[str]:
    """Cases shuffled within each stratum, then dealt round-robin, so any prefix is balanced."""
    rng = random.Random(f"{seed}:cases")
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for case_id in sorted(case_ids):
        by_stratum[strata.get(case_id, "")].append(case_id)
    queues = []
    for stratum in sorted(by_stratum):
        cases = by_stratum[stratum]
        rng.shuffle(cases)
        queues.append(cases)
    dealt: list[str] = []
    for round_index in range(max((len(q) for q in queues), default=0)):
        dealt.extend(q[round_index] for q in queues if round_index < len(q))
    return dealt


def plan_design(
    *,
    case_arms: Mapping[str, set[str]],
    arm_sets: Sequence[Sequence[str]],
    raters: Sequence[str],
    raters_per_item: int,
    seed: int,
    strata: Mapping[str, str] | None = None,
    authors: Mapping[str, str] | None = None,
    items_per_rater: int | None = None,
    repeat_fraction: float = 0.0,
    mode: str = "pairwise",
    graded_cases: set[str] | None = None,
) -> StudyPlan:
    """The study's design from what the database holds, and what had to be left out.

    ``case_arms`` maps a case id to the arms with a response raters may see. A comparison is
    built only when every arm of its set has one, and only for cases with enough raters who
    did not author them. ``items_per_rater`` caps each rater's load by taking whole cases in
    a seeded, stratum-interleaved order; ``repeat_fraction`` of each rater's items come back
    a second time, sides swapped, for intra-rater consistency.

    In rubric mode a case is used only if it is in ``graded_cases`` (its own or its stratum's
    criteria rubric is verified); the others are left out as ``SKIP_NO_RUBRIC``.
    """
    if not raters:
        raise DesignError("assign at least one physician as a rater")
    if not arm_sets:
        raise DesignError("choose the arms to compare")
    check_arm_sets(arm_sets, mode=mode)
    strata = strata or {}
    authors = authors or {}
    skipped: Counter[str] = Counter()
    sets = list(dict.fromkeys(tuple(sorted(arms)) for arms in arm_sets))
    per_case: dict[str, list[tuple[str, ...]]] = {}
    for case_id in _interleaved_cases(list(case_arms), strata, seed):
        if mode == RUBRIC_MODE and case_id not in (graded_cases or set()):
            skipped[SKIP_NO_RUBRIC] += len(sets)
            continue
        available = [arms for arms in sets if set(arms) <= case_arms[case_id]]
        skipped[SKIP_MISSING] += len(sets) - len(available)
        eligible = [r for r in raters if authors.get(case_id) != r]
        if available and len(eligible) < raters_per_item:
            skipped[SKIP_RATERS] += len(available)
            continue
        if available:
            per_case[case_id] = available

    chosen: list[PlannedComparison] = []
    budget = None
    if items_per_rater is not None:
        budget = (items_per_rater * len(set(raters))) // raters_per_item
    for case_id, available in per_case.items():
        if budget is not None and len(chosen) + len(available) > budget:
            skipped[SKIP_LIMIT] += len(available)
            continue
        chosen.extend(PlannedComparison(case_id, arms) for arms in available)
    if not chosen:
        raise DesignError(
            "no comparison can be built: "
            + (", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "no cases")
        )
    load = len(chosen) * raters_per_item / len(set(raters))
    repeats = round(repeat_fraction * load)
    design = build_design(
        comparisons=chosen,
        raters=raters,
        raters_per_item=raters_per_item,
        seed=seed,
        authors=authors,
        repeats_per_rater=repeats,
    )
    left_out = {reason: n for reason, n in skipped.items() if n}
    return StudyPlan(design=design, skipped=left_out, repeats_per_rater=repeats)
