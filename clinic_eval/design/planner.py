"""The blinded design: which rater sees which comparison, in which positions and order.

Pure functions over plain values, so a design can be rebuilt from the study seed and checked
without a database. ``design.services`` stores the result as Comparison and Assignment rows.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from clinic_eval.config import RUBRIC_MODE


class DesignError(ValueError):
    """The requested design cannot be built; the message says what to change."""


# One place in a rater's queue: comparison index, arms in on-screen order, is a repeat.
Showing = tuple[int, tuple[str, ...], bool]


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

    def spacing(self, *, min_case_gap: int = 2) -> list[QueueSpacing]:
        """Per rater, how far apart the queue keeps one case's items and each repeat."""
        queues: dict[str, list[PlannedSeat]] = defaultdict(list)
        for seat in self.assignments:
            queues[seat.rater].append(seat)
        return [
            queue_spacing(
                rater,
                [
                    (self.comparisons[s.comparison].case_id, s.comparison, s.repeat)
                    for s in sorted(seats, key=lambda s: s.queue_position)
                ],
                min_case_gap=min_case_gap,
            )
            for rater, seats in sorted(queues.items())
        ]


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


def _spread_by_case(
    items: Sequence[Showing],
    case_of: Callable[[int], str],
    rng: random.Random,
    repeat_after: int = 0,
) -> list[Showing] | None:
    """The items reordered so the nearest two of one case are as far apart as possible.

    With ``k`` items of the most frequent case, ``t`` cases that have ``k`` and ``n`` items in
    all, no order puts those ``k`` more than ``(n - t) // (k - 1)`` apart (the task-scheduler
    bound), and taking at each place the case with the most items left among those not seen
    within that distance reaches it. Cases that tie are taken in a seeded random order; each
    case's items keep the order they come in. A repeat waits until ``repeat_after`` places
    have passed since its original; ``None`` when no order at any gap lets it.
    """
    by_case: dict[str, list[Showing]] = defaultdict(list)
    for item in items:
        by_case[case_of(item[0])].append(item)
    largest = max((len(group) for group in by_case.values()), default=0)
    if largest <= 1:
        return list(items)
    widest = sum(len(group) == largest for group in by_case.values())
    priority = {case: rng.random() for case in sorted(by_case)}
    for gap in range((len(items) - widest) // (largest - 1), 0, -1):
        order = _spread_with_gap(by_case, priority, gap, len(items), repeat_after)
        if order is not None:
            return order
    return None


def _spread_with_gap(
    by_case: Mapping[str, list[Showing]],
    priority: Mapping[str, float],
    gap: int,
    total: int,
    repeat_after: int,
) -> list[Showing] | None:
    left = {case: deque(group) for case, group in by_case.items()}
    first_shown: dict[int, int] = {}
    # Cases free to come next, most items left first; and cases waiting, by when they may.
    free = [(-len(group), -priority[case], case) for case, group in left.items()]
    heapq.heapify(free)
    waiting: list[tuple[int, str]] = []
    order: list[Showing] = []
    for place in range(total):
        while waiting and waiting[0][0] <= place:
            case = heapq.heappop(waiting)[1]
            heapq.heappush(free, (-len(left[case]), -priority[case], case))
        if not free:
            return None
        case = heapq.heappop(free)[2]
        index, shown, repeat = left[case].popleft()
        order.append((index, shown, repeat))
        if not repeat:
            first_shown[index] = place
        if left[case]:
            # A case's originals come before its repeats, so the next one's original is placed.
            next_index, _, next_repeat = left[case][0]
            free_at = place + gap
            if next_repeat:
                free_at = max(free_at, first_shown[next_index] + repeat_after)
            heapq.heappush(waiting, (free_at, case))
    return order


def _rotated(shown: tuple[str, ...]) -> tuple[str, ...]:
    """A repeat's on-screen order: the original's rotated by one, so every arm moves."""
    return shown[1:] + shown[:1]


def _order_queue(
    items: Sequence[tuple[int, tuple[str, ...]]],
    repeats: int,
    case_of: Callable[[int], str],
    rng: random.Random,
) -> list[Showing]:
    """One rater's queue: ``items`` (shuffled) and ``repeats`` of them shown a second time.

    First every showing, repeats included, is spread by case, with a case's repeated items
    first and their repeats last, each repeat at least ``repeat_distance`` after its original.
    Where no order allows that, the first showings are spread alone and the repeats inserted
    as far after as the queue allows (``_with_repeats``).
    """
    count = min(repeats, len(items))
    firsts: list[Showing] = [(index, shown, False) for index, shown in items]
    # Spread before the repeats are drawn, even when the interleaved order wins: the draws
    # from ``rng`` come in this order, and a design is reproduced from its seed.
    spread = _spread_by_case(firsts, case_of, rng)
    assert spread is not None  # without repeats a gap of one always fits
    if not count:
        return spread
    picked = set(rng.sample(range(len(items)), count))
    originals = [firsts[p] for p in range(len(items)) if p in picked]
    again: list[Showing] = [(index, _rotated(shown), True) for index, shown, _ in originals]
    rest = [firsts[p] for p in range(len(items)) if p not in picked]
    distance = repeat_distance(len(items) + count)
    together = _spread_by_case(originals + rest + again, case_of, rng, repeat_after=distance)
    if together is not None:
        return together
    # Too short for both targets: of the inserted repeats and the interleaved ones at each
    # shorter distance, the order that misses the targets by the fewest places.
    options = [_with_repeats(spread, count, case_of, rng)]
    for shorter in sorted({distance - 1, distance - 2, distance // 2, 1} - {0, -1}, reverse=True):
        option = _spread_by_case(originals + rest + again, case_of, rng, repeat_after=shorter)
        if option is not None:
            options.append(option)

    def missed(queue: list[Showing]) -> tuple[int, int]:
        spacing = queue_spacing("", [(case_of(i), i, repeat) for i, _, repeat in queue])
        short = max(0, spacing.case_gap_wanted - (spacing.case_gap or spacing.case_gap_wanted))
        short += max(0, distance - (spacing.repeat_gap or distance))
        return short, -(spacing.case_gap or 0)

    return min(options, key=missed)


def repeat_distance(queue_length: int) -> int:
    """How many places after its original a repeat comes: at least 5 and a third of the queue,
    so the consistency check measures a physician's judgment, not their memory of the item."""
    return max(5, math.ceil(queue_length / 3))


def _with_repeats(
    items: Sequence[Showing], count: int, case_of: Callable[[int], str], rng: random.Random
) -> list[Showing]:
    """The queue with ``count`` repeats inserted, each after its original by ``repeat_distance``.

    An insertion never brings two items closer, so the case spacing of ``items`` holds; each
    repeat takes, of the places far enough from its original, the one farthest from the case's
    other items. Originals are drawn from those early enough; a queue too short for the
    distance repeats its earliest items at the end (``queue_spacing`` reports the shortfall).
    """
    queue = list(items)
    distance = repeat_distance(len(items) + count)
    early = [place for place in range(len(items)) if place + distance <= len(items)]
    picks = rng.sample(early, min(count, len(early)))
    picks += [place for place in range(len(items)) if place not in early][: count - len(picks)]
    for pick in sorted(picks):
        index, shown, _ = items[pick]
        original = next(p for p, entry in enumerate(queue) if entry[0] == index and not entry[2])
        case = case_of(index)
        same_case = [p for p, entry in enumerate(queue) if case_of(entry[0]) == case]
        places = range(min(original + distance, len(queue)), len(queue) + 1)
        nearest = {place: _nearest_after_insert(place, same_case) for place in places}
        farthest = max(nearest.values())
        place = rng.choice([place for place in places if nearest[place] == farthest])
        queue.insert(place, (index, _rotated(shown), True))
    return queue


def _nearest_after_insert(place: int, others: Sequence[int]) -> int:
    """Distance from an item inserted at ``place`` to the nearest of ``others`` (which shift)."""
    return min(place - p if p < place else p + 1 - place for p in others)


@dataclass(frozen=True)
class QueueSpacing:
    """How far apart one rater's queue keeps things, in places (1 = next to each other)."""

    rater: str
    items: int
    case_gap: int | None  # the nearest two items of one case; None when no case comes twice
    case_gap_possible: int | None  # the most any order of these items could reach
    case_gap_wanted: int
    repeat_gap: int | None  # the nearest repeat to its original; None without repeats
    repeat_gap_wanted: int | None
    repeat_first: int  # repeats shown before their original (0 in every design built here)

    @property
    def shortfalls(self) -> list[str]:
        """What the queue misses, in words; empty when it meets every target."""
        missed = []
        if self.case_gap is not None and self.case_gap < self.case_gap_wanted:
            missed.append(
                f"{self.rater}: items of one case only {self.case_gap} apart "
                f"(wanted {self.case_gap_wanted}, short by {self.case_gap_wanted - self.case_gap})"
            )
        if (
            self.repeat_gap is not None
            and self.repeat_gap_wanted is not None
            and self.repeat_gap < self.repeat_gap_wanted
        ):
            missed.append(
                f"{self.rater}: a repeat only {self.repeat_gap} after its original "
                f"(wanted {self.repeat_gap_wanted}, short by "
                f"{self.repeat_gap_wanted - self.repeat_gap})"
            )
        if self.repeat_first:
            missed.append(f"{self.rater}: {self.repeat_first} repeats come before their original")
        return missed


def queue_gaps(queue: Sequence[tuple[str, object, bool]]) -> list[tuple[int | None, int | None]]:
    """Per place of one queue of ``(case id, comparison key, is repeat)`` in the order shown:
    the distance to the nearest other item of its case, and for a repeat how far after its
    original it comes (negative if before; ``None`` where there is nothing to measure)."""
    places: dict[str, list[int]] = defaultdict(list)
    first_showing: dict[object, int] = {}
    for place, (case_id, comparison, repeat) in enumerate(queue):
        places[case_id].append(place)
        if not repeat:
            first_showing.setdefault(comparison, place)
    gaps: list[tuple[int | None, int | None]] = []
    for place, (case_id, comparison, repeat) in enumerate(queue):
        others = [abs(place - other) for other in places[case_id] if other != place]
        after = (
            place - first_showing[comparison] if repeat and comparison in first_showing else None
        )
        gaps.append((min(others, default=None), after))
    return gaps


def queue_spacing(
    rater: str, queue: Sequence[tuple[str, object, bool]], *, min_case_gap: int = 2
) -> QueueSpacing:
    """The spacing of one queue: ``(case id, comparison key, is repeat)`` in the order shown."""
    gaps = queue_gaps(queue)
    case_gaps = [gap for gap, _ in gaps if gap is not None]
    repeat_gaps = [after for _, after in gaps if after is not None]
    counts = Counter(case for case, _, _ in queue)
    largest = max(counts.values(), default=0)
    possible = None
    if largest > 1:
        widest = sum(n == largest for n in counts.values())
        possible = (len(queue) - widest) // (largest - 1)
    return QueueSpacing(
        rater=rater,
        items=len(queue),
        case_gap=min(case_gaps, default=None),
        case_gap_possible=possible,
        case_gap_wanted=min_case_gap,
        repeat_gap=min((g for g in repeat_gaps if g > 0), default=None),
        repeat_gap_wanted=repeat_distance(len(queue)) if repeat_gaps else None,
        repeat_first=sum(g <= 0 for g in repeat_gaps),
    )


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
    - Order: each rater's queue is shuffled by the seed, then spread so that the items of one
      case are as far apart as the queue allows (``_spread_by_case``); each repeat (a second
      showing with the order rotated) comes after its original, at least ``repeat_distance``
      places later where the queue is long enough, and as far from the case's other items as
      it can be.
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
        queue = _order_queue(
            items, repeats_per_rater, lambda index: comparisons[index].case_id, rng_rater
        )
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
