"""Agreement statistics against published worked examples and independent references."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats import inter_rater

from clinic_eval.statistics.agreement import (
    cohen_kappa,
    fleiss_kappa,
    fleiss_table,
    intra_rater_consistency,
    krippendorff_alpha,
    pairwise_cohen_kappa,
    reliability_matrix,
)

N = np.nan
# Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, missing values.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
        [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
    ]
)

# Fleiss (1971) as reproduced in Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories.
FLEISS_WIKIPEDIA = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def _long(matrix: np.ndarray) -> pd.DataFrame:
    rows = [
        {"unit": u, "rater": f"r{r}", "value": matrix[r, u]}
        for r, u in product(range(matrix.shape[0]), range(matrix.shape[1]))
        if not np.isnan(matrix[r, u])
    ]
    return pd.DataFrame(rows)


def _alpha_brute_force(matrix: np.ndarray, delta2) -> float:
    """Pairwise definition: alpha = 1 - D_o / D_e over all pairable values, no matrices."""
    units = [matrix[~np.isnan(matrix[:, u]), u] for u in range(matrix.shape[1])]
    units = [u for u in units if len(u) >= 2]
    pooled = np.concatenate(units)
    n = len(pooled)
    d_o = sum(
        delta2(u[i], u[j]) / (len(u) - 1)
        for u in units
        for i in range(len(u))
        for j in range(len(u))
        if i != j
    )
    d_e = sum(delta2(pooled[i], pooled[j]) for i in range(n) for j in range(n) if i != j)
    return 1 - (n - 1) * d_o / d_e


@pytest.mark.parametrize(
    ("level", "expected"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorff_2011_worked_example(level: str, expected: float) -> None:
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(expected, abs=5e-4)


def test_krippendorff_nominal_exact_fraction() -> None:
    # n = 40 pairable values; the coincidence sums make nominal alpha exactly 113/152 = 0.7434.
    assert krippendorff_alpha(KRIPPENDORFF_2011) == pytest.approx(113 / 152, abs=1e-12)


def test_krippendorff_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.integers(1, 6, size=(5, 15)).astype(float)
    matrix[rng.random(matrix.shape) < 0.25] = np.nan
    for level, delta2 in (
        ("nominal", lambda c, k: float(c != k)),
        ("interval", lambda c, k: (c - k) ** 2),
    ):
        assert krippendorff_alpha(matrix, level) == pytest.approx(
            _alpha_brute_force(matrix, delta2), abs=1e-10
        )


def test_krippendorff_long_form_and_single_value_units() -> None:
    long = _long(KRIPPENDORFF_2011)
    assert krippendorff_alpha(long, "ordinal") == pytest.approx(0.8154, abs=5e-4)
    # Unit 12 has one value only: dropping it entirely changes nothing.
    assert krippendorff_alpha(KRIPPENDORFF_2011[:, :11], "interval") == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_2011, "interval")
    )
    assert reliability_matrix(long).shape == (4, 12)


def test_krippendorff_degenerate_cases() -> None:
    assert np.isnan(krippendorff_alpha(np.array([[1.0, 2.0], [N, N]])))
    assert np.isnan(krippendorff_alpha(np.array([[3.0, 3.0], [3.0, 3.0]])))
    assert krippendorff_alpha(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])) == 1.0
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(KRIPPENDORFF_2011, "cardinal")  # type: ignore[arg-type]


def test_fleiss_wikipedia_example() -> None:
    kappa = fleiss_kappa(FLEISS_WIKIPEDIA)
    assert kappa == pytest.approx(0.210, abs=5e-4)
    assert kappa == pytest.approx(inter_rater.fleiss_kappa(FLEISS_WIKIPEDIA), abs=1e-12)


def test_fleiss_table_from_long_data() -> None:
    rows = [
        {"unit": u, "rater": f"r{i}", "category": cat}
        for u, counts in enumerate(FLEISS_WIKIPEDIA)
        for i, cat in enumerate(np.repeat(list("abcde"), counts))
    ]
    table = fleiss_table(pd.DataFrame(rows), categories=list("abcde"))
    np.testing.assert_array_equal(table.to_numpy(), FLEISS_WIKIPEDIA)
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    uneven = pd.DataFrame(rows[:-1])
    with pytest.raises(ValueError, match="unequal numbers of ratings"):
        fleiss_table(uneven)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[1, 1], [2, 1]]))


def test_cohen_wikipedia_example() -> None:
    # Wikipedia "Cohen's kappa": 50 applications, yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    table = np.array([[20, 5], [10, 15]])
    assert cohen_kappa(a, b) == pytest.approx(inter_rater.cohens_kappa(table).kappa, abs=1e-12)


def _weighted_kappa_brute_force(a: list[int], b: list[int], labels: list[int], power: int) -> float:
    """Mean disagreement over observed pairs vs over all cross pairs (chance), by loops."""
    pos = {label: i for i, label in enumerate(labels)}
    n = len(a)
    observed = sum(abs(pos[x] - pos[y]) ** power for x, y in zip(a, b, strict=True)) / n
    chance = sum(abs(pos[x] - pos[y]) ** power for x in a for y in b) / (n * n)
    return 1 - observed / chance


@pytest.mark.parametrize(("weights", "power"), [("linear", 1), ("quadratic", 2)])
def test_weighted_cohen_kappa(weights: str, power: int) -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(1, 6, size=60)
    b = np.clip(a + rng.integers(-1, 2, size=60), 1, 5)
    labels = [1, 2, 3, 4, 5]
    kappa = cohen_kappa(a.tolist(), b.tolist(), weights, labels)  # type: ignore[arg-type]
    brute = _weighted_kappa_brute_force(a.tolist(), b.tolist(), labels, power)
    assert kappa == pytest.approx(brute, abs=1e-12)
    table = pd.crosstab(a, b).reindex(index=labels, columns=labels, fill_value=0).to_numpy()
    assert kappa == pytest.approx(inter_rater.cohens_kappa(table, wt=weights).kappa, abs=1e-10)


def test_cohen_kappa_edges() -> None:
    assert np.isnan(cohen_kappa(["a", "a"], ["a", "a"]))
    assert cohen_kappa(["a", "b", None], ["a", "b", "b"]) == 1.0  # missing pair dropped
    with pytest.raises(ValueError, match="labels"):
        cohen_kappa(["a"], ["z"], labels=["a", "b"])


def test_pairwise_cohen_kappa() -> None:
    long = _long(KRIPPENDORFF_2011)
    table = pairwise_cohen_kappa(long, weights="quadratic")
    assert len(table) == 6
    row = table[(table.rater_a == "r0") & (table.rater_b == "r1")].iloc[0]
    mask = ~np.isnan(KRIPPENDORFF_2011[0]) & ~np.isnan(KRIPPENDORFF_2011[1])
    assert row.n == mask.sum() == 9
    expected = cohen_kappa(
        KRIPPENDORFF_2011[0, mask], KRIPPENDORFF_2011[1, mask], "quadratic", [1, 2, 3, 4, 5]
    )
    assert row.kappa == pytest.approx(expected, abs=1e-12)
    assert row.percent_agreement == pytest.approx(8 / 9)


def test_intra_rater_consistency_and_repeats_ignored_between_raters() -> None:
    first = pd.DataFrame(
        {
            "unit": [1, 2, 3, 4, 1, 2, 3, 4],
            "rater": ["x"] * 4 + ["y"] * 4,
            "value": ["a", "b", "tie", "a", "a", "b", "b", "a"],
            "repeat": 0,
        }
    )
    again = pd.DataFrame(
        {
            "unit": [1, 2, 3, 4, 1],
            "rater": ["x", "x", "x", "x", "y"],
            "value": ["a", "b", "a", "a", "a"],
            "repeat": 1,
        }
    )
    long = pd.concat([again, first], ignore_index=True)
    result = intra_rater_consistency(long).set_index("rater")
    assert result.loc["x", "n_pairs"] == 4
    assert result.loc["x", "identical_share"] == pytest.approx(0.75)
    x_first, x_again = ["a", "b", "tie", "a"], ["a", "b", "a", "a"]
    labels = ["a", "b", "tie"]
    assert result.loc["x", "kappa"] == pytest.approx(cohen_kappa(x_first, x_again, None, labels))
    # Hand computation: p_o = 3/4, p_e = (2/4)(3/4) + (1/4)(1/4) = 7/16, kappa = 5/9.
    assert result.loc["x", "kappa"] == pytest.approx(5 / 9)
    assert result.loc["all", "n_pairs"] == 5
    # Between raters only the first ratings count: x vs y agree on 3 of 4 units.
    pair = pairwise_cohen_kappa(long).iloc[0]
    assert pair.n == 4 and pair.percent_agreement == pytest.approx(0.75)
    with pytest.raises(ValueError, match="repeat"):
        pairwise_cohen_kappa(long.drop(columns="repeat"))
