"""The balanced blinded design: exact raters per item, balanced positions, reproducible."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from itertools import combinations

import pytest
from scipy.stats import chisquare

from clinic_eval.design.planner import (
    DesignError,
    PlannedDesign,
    PlannedSeat,
    build_comparisons,
    build_design,
    queue_gaps,
    queue_spacing,
)

ARMS = ("SFT", "GRPO", "Physician")
PAIRS = [("SFT", "GRPO"), ("SFT", "Physician"), ("GRPO", "Physician")]
RATERS = [f"dr-{i:02d}" for i in range(1, 8)]
CASES = [f"C-{i:03d}" for i in range(1, 41)]
AUTHORS = {case: RATERS[i % len(RATERS)] for i, case in enumerate(CASES[:14])}


def pairwise(seed: int = 7, **options: object) -> PlannedDesign:
    return build_design(
        comparisons=build_comparisons(CASES, PAIRS),
        raters=RATERS,
        raters_per_item=3,
        seed=seed,
        authors=AUTHORS,
        **options,
    )


def test_every_comparison_gets_exactly_its_raters_and_never_its_author() -> None:
    design = pairwise()
    per_item = Counter(a.comparison for a in design.assignments)
    assert len(design.comparisons) == 120
    assert set(per_item.values()) == {3}
    for assignment in design.assignments:
        case = design.comparisons[assignment.comparison].case_id
        assert AUTHORS.get(case) != assignment.rater
    raters_of = {}
    for a in design.assignments:
        raters_of.setdefault(a.comparison, set()).add(a.rater)
    assert all(len(raters) == 3 for raters in raters_of.values()), "three different raters"


def test_positions_per_arm_pair_are_balanced_within_one() -> None:
    for arms, orders in pairwise().balance().items():
        assert len(orders) == 2
        left, right = orders.values()
        assert abs(left - right) <= 1, (arms, orders)


def test_left_position_counts_per_arm_pass_a_chi_square_balance_test() -> None:
    """RELIABILITY.md's check: how often each arm is shown left, against an even split."""
    design = pairwise()
    for pair in (tuple(sorted(pair)) for pair in PAIRS):
        shown_left = Counter(
            a.shown[0] for a in design.assignments if design.comparisons[a.comparison].arms == pair
        )
        observed = [shown_left[arm] for arm in pair]
        result = chisquare(observed)
        assert result.pvalue > 0.9, (pair, observed)


def random_shape(
    rng: random.Random, seed: int, *, most_arms: int, repeats: int = 0
) -> tuple[PlannedDesign, dict[str, str], int]:
    """A design of a random shape (raters, raters per item, cases, arms, authors), with the
    authors and raters per item it was built with."""
    raters = [f"r{i}" for i in range(rng.randint(2, 9))]
    per_item = rng.randint(1, min(3, len(raters) - 1))
    cases = [f"c{i}" for i in range(rng.randint(3, 60))]
    arms = ["a", "b", "c", "d", "e"][: rng.randint(2, most_arms)]
    sets = list(combinations(arms, 2)) if seed % 3 else [tuple(arms)]
    authors = {case: rng.choice(raters) for case in cases if rng.random() < 0.3}
    design = build_design(
        comparisons=build_comparisons(cases, sets),
        raters=raters,
        raters_per_item=per_item,
        seed=seed,
        authors=authors,
        repeats_per_rater=repeats,
    )
    return design, authors, per_item


@pytest.mark.parametrize("seed", range(40))
def test_positions_are_balanced_within_one_for_every_rater_and_in_total(seed: int) -> None:
    """Many random shapes: raters, raters per item, cases, arms, authors and seeds."""
    design, _, _ = random_shape(random.Random(seed), seed, most_arms=4)
    per_rater: dict[tuple[str, tuple[str, ...]], Counter] = defaultdict(Counter)
    for assignment in design.assignments:
        per_rater[(assignment.rater, design.comparisons[assignment.comparison].arms)][
            assignment.shown
        ] += 1
    tables = list(design.balance().items()) + list(per_rater.items())
    for key, counts in tables:
        arm_set = key[1] if isinstance(key[1], tuple) else key
        rotations = [arm_set[i:] + arm_set[:i] for i in range(len(arm_set))]
        values = [counts.get(order, 0) for order in rotations]
        assert max(values) - min(values) <= 1, (key, counts)


def test_best_of_n_rotates_every_arm_through_every_position() -> None:
    design = build_design(
        comparisons=build_comparisons(CASES, [ARMS]),
        raters=RATERS,
        raters_per_item=2,
        seed=3,
    )
    (orders,) = design.balance().values()
    assert len(orders) == 3 and max(orders.values()) - min(orders.values()) <= 1
    positions = Counter((arm, shown.index(arm)) for shown in orders.elements() for arm in shown)
    assert max(positions.values()) - min(positions.values()) <= 1


def test_load_and_mix_are_even_across_raters() -> None:
    design = pairwise()
    load = Counter(a.rater for a in design.assignments)
    assert max(load.values()) - min(load.values()) <= 1
    for pair in PAIRS:
        key = tuple(sorted(pair))
        mix = Counter(
            a.rater for a in design.assignments if design.comparisons[a.comparison].arms == key
        )
        assert max(mix.values()) - min(mix.values()) <= 2, (pair, mix)


def test_the_same_seed_gives_the_same_design_and_another_seed_another() -> None:
    assert pairwise(seed=7) == pairwise(seed=7)
    assert pairwise(seed=7).assignments != pairwise(seed=8).assignments


def queues(design: PlannedDesign) -> dict[str, list[PlannedSeat]]:
    by_rater: dict[str, list[PlannedSeat]] = defaultdict(list)
    for seat in sorted(design.assignments, key=lambda a: (a.rater, a.queue_position)):
        by_rater[seat.rater].append(seat)
    return dict(by_rater)


def test_repeats_come_after_their_original_by_a_third_of_the_queue_with_sides_swapped() -> None:
    design = pairwise(repeats_per_rater=2)
    for queue in queues(design).values():
        assert [a.queue_position for a in queue] == list(range(len(queue)))
        repeats = [a for a in queue if a.repeat]
        assert len(repeats) == 2
        for repeat in repeats:
            first = next(a for a in queue if a.comparison == repeat.comparison and not a.repeat)
            assert repeat.shown == tuple(reversed(first.shown))
            assert repeat.queue_position - first.queue_position >= max(5, len(queue) / 3)


def test_a_physician_never_reads_one_case_twice_in_a_row() -> None:
    """The carry-over the demo showed: a case's pairings next to each other in one queue."""
    design = pairwise(repeats_per_rater=3)
    for rater, spacing in zip(queues(design), design.spacing(), strict=True):
        assert spacing.rater == rater
        assert spacing.case_gap == spacing.case_gap_possible, spacing
        assert spacing.case_gap is not None and spacing.case_gap >= 2
        assert spacing.repeat_gap is not None
        assert spacing.repeat_gap >= spacing.repeat_gap_wanted, spacing
        assert not spacing.shortfalls and spacing.repeat_first == 0


def test_queue_gaps_measure_places_between_items_of_one_case_and_repeats() -> None:
    queue = [("c1", 0, False), ("c2", 1, False), ("c1", 2, False), ("c1", 0, True)]
    assert queue_gaps(queue) == [(2, None), (None, None), (1, None), (1, 3)]
    spacing = queue_spacing("dr-01", queue)
    assert (spacing.case_gap, spacing.repeat_gap, spacing.repeat_gap_wanted) == (1, 3, 5)
    assert spacing.case_gap_possible == 1  # three items of c1 in four places
    assert spacing.shortfalls == [
        "dr-01: items of one case only 1 apart (wanted 2, short by 1)",
        "dr-01: a repeat only 3 after its original (wanted 5, short by 2)",
    ]
    early = queue_spacing("dr-02", [("c1", 0, True), ("c1", 0, False)])
    assert early.repeat_first == 1
    assert "dr-02: 1 repeats come before their original" in early.shortfalls


@pytest.mark.parametrize("seed", range(60))
def test_queues_of_random_shapes_spread_cases_and_repeats_and_stay_balanced(seed: int) -> None:
    """Every shape: without repeats the spacing reaches the best any order allows; repeats
    come after their original (at the distance wherever the queue is long enough) without
    putting a case's items side by side; balance, raters per item and authorship hold."""
    rng = random.Random(1000 + seed)
    repeats = rng.randint(0, 4)
    design, authors, per_item = random_shape(rng, seed, most_arms=5, repeats=repeats)
    firsts = [a for a in design.assignments if not a.repeat]
    assert set(Counter(a.comparison for a in firsts).values()) == {per_item}
    assert all(authors.get(design.comparisons[a.comparison].case_id) != a.rater for a in firsts)
    for arm_set, counts in design.balance().items():
        rotations = [arm_set[i:] + arm_set[:i] for i in range(len(arm_set))]
        used = [counts.get(order, 0) for order in rotations]
        assert max(used) - min(used) <= 1, (arm_set, counts)
    for (rater, queue), spacing in zip(queues(design).items(), design.spacing(), strict=True):
        assert [a.queue_position for a in queue] == list(range(len(queue)))
        assert spacing.repeat_first == 0
        long_enough = len(queue) >= 3 * (repeats + 5)
        if spacing.repeat_gap is not None and long_enough:
            assert spacing.repeat_gap >= spacing.repeat_gap_wanted, (rater, spacing)
        if spacing.case_gap is None or spacing.case_gap_possible is None:
            continue
        if repeats == 0:
            assert spacing.case_gap == spacing.case_gap_possible, (rater, spacing)
        elif long_enough:
            # The bound ignores the repeats' own distance, which can make it unreachable; a
            # case's items are still never next to each other where any order avoids it.
            assert spacing.case_gap >= min(2, spacing.case_gap_possible), (rater, spacing)


def test_an_early_repeat_the_old_planner_allowed_is_gone() -> None:
    """Issue 16's demo: a repeat 2 places after, or flagged before, its original."""
    cases = [f"SYN-{i:05d}" for i in range(100, 160)]
    design = build_design(
        comparisons=build_comparisons(cases, PAIRS),
        raters=["dr-01", "dr-02", "dr-03"],
        raters_per_item=2,
        seed=20240611,
        repeats_per_rater=12,
    )
    for spacing in design.spacing():
        assert spacing.items == 132
        assert spacing.repeat_gap is not None and spacing.repeat_gap >= 44
        assert spacing.case_gap is not None and spacing.case_gap >= 20, spacing


def test_a_large_design_reaches_the_best_spacing_too() -> None:
    design = build_design(
        comparisons=build_comparisons([f"c{i}" for i in range(2000)], PAIRS),
        raters=[f"r{i}" for i in range(10)],
        raters_per_item=2,
        seed=1,
        repeats_per_rater=60,
    )
    (first, *_) = design.spacing()
    assert first.items == 1260 and first.case_gap == first.case_gap_possible
    assert first.repeat_gap is not None and first.repeat_gap >= 420


def test_an_impossible_design_is_refused_with_a_reason() -> None:
    with pytest.raises(DesignError, match="needs 7 raters but only 6 may rate it"):
        build_design(
            comparisons=build_comparisons(CASES[:1], PAIRS[:1]),
            raters=RATERS,
            raters_per_item=7,
            seed=1,
            authors=AUTHORS,
        )
    with pytest.raises(DesignError, match="two or more distinct arms"):
        build_comparisons(CASES, [("SFT", "SFT")])


def test_rater_pairs_rotate_so_agreement_covers_many_pairs() -> None:
    raters = [f"r{i}" for i in range(6)]
    cases = [f"c{i}" for i in range(60)]
    design = build_design(
        comparisons=build_comparisons(cases, [("a", "b"), ("a", "c"), ("b", "c")]),
        raters=raters,
        raters_per_item=2,
        seed=4,
    )
    by_comparison: dict[int, list[str]] = defaultdict(list)
    for assignment in design.assignments:
        by_comparison[assignment.comparison].append(assignment.rater)
    shared = Counter(frozenset(pair) for pair in by_comparison.values())
    assert len(shared) == 15, "every pair of the six raters shares items"
    assert max(shared.values()) - min(shared.values()) <= 2
