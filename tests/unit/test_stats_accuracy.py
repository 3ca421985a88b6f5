"""Decision-layer accuracy against hand computations and brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinic_eval.statistics.accuracy import (
    bootstrap_macro_f1,
    layer_accuracy,
    score_layer,
)
from clinic_eval.statistics.intervals import wilson_interval

LAYERS = {
    "diagnosis": {"title": "Diagnosis", "multi": True, "labels": ["pcos", "endo", "male", "tubal"]},
    "art_strategy": {
        "title": "ART strategy",
        "multi": False,
        "labels": ["IUI", "IVF", "ICSI", "PGT-A", "PGT-M", "PGT-SR"],
    },
}

TRUTH = pd.DataFrame(
    {
        "case_id": [1, 2, 3, 4, 5, 6],
        "stratum": ["easy", "easy", "easy", "hard", "hard", "hard"],
        "diagnosis": [["pcos"], ["endo", "tubal"], ["male"], ["pcos", "male"], [], ["tubal"]],
        "art_strategy": ["IUI", "IVF", "ICSI", "ICSI", "PGT-A", "IVF"],
    }
)
PRED = pd.DataFrame(
    {
        "case_id": [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6],
        "arm": ["m1"] * 5 + ["m2"] * 6,
        "diagnosis": [
            ["pcos"],
            ["endo"],
            ["male", "pcos"],
            ["pcos", "male"],
            [],
            ["pcos"],
            ["endo", "tubal"],
            ["male"],
            None,
            ["tubal"],
            ["tubal"],
        ],
        "art_strategy": [
            "IUI",
            "ICSI",
            "ICSI",
            "IVF",
            None,
            "IUI",
            "IVF",
            "ICSI",
            "ICSI",
            "",
            "IVF",
        ],
    }
)


def _f1_reference(truths: list[set], preds: list[set | None]) -> tuple[float, float]:
    """Macro/micro F1 through precision and recall per label, the textbook way."""
    labels = set().union(*truths, *[p or set() for p in preds])
    f1s, tp_all, fp_all, fn_all = [], 0, 0, 0
    for label in sorted(labels):
        tp = sum(label in t and label in (p or set()) for t, p in zip(truths, preds, strict=True))
        fp = sum(
            label not in t and label in (p or set()) for t, p in zip(truths, preds, strict=True)
        )
        fn = sum(
            label in t and label not in (p or set()) for t, p in zip(truths, preds, strict=True)
        )
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    micro_p = tp_all / (tp_all + fp_all) if tp_all + fp_all else 0.0
    micro_r = tp_all / (tp_all + fn_all)
    micro = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    return float(np.mean(f1s)), micro


def test_single_label_hand_computation() -> None:
    truth = ["IUI", "IVF", "ICSI", "ICSI", "PGT-A"]
    pred = ["IUI", "ICSI", "ICSI", "IVF", None]
    s = score_layer(truth, pred)
    assert (s.n, s.missing, s.correct) == (5, 1, 2)
    assert s.accuracy == pytest.approx(0.4)
    # Per label F1 by hand: IUI 1, IVF 0 (tp0 fp1 fn1), ICSI 0.5 (tp1 fp1 fn1), PGT-A 0 (fn1).
    assert s.macro_f1 == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert s.n_labels == 4
    # Micro: tp 2, fp 2, fn 3 -> 4 / 9 (the missing prediction costs recall, not precision).
    assert s.micro_f1 == pytest.approx(4 / 9)
    assert s.jaccard == pytest.approx(s.accuracy)


def test_multi_label_hand_computation() -> None:
    truth = [["pcos"], ["endo", "tubal"], ["male"], ["pcos", "male"], []]
    pred = [["pcos"], ["endo"], ["male", "pcos"], ["pcos", "male"], []]
    s = score_layer(truth, pred, multi=True)
    assert s.correct == 3 and s.accuracy == pytest.approx(0.6)
    assert s.jaccard == pytest.approx((1 + 0.5 + 0.5 + 1 + 1) / 5)
    macro, micro = _f1_reference([set(t) for t in truth], [set(p) for p in pred])
    assert s.macro_f1 == pytest.approx(macro, abs=1e-12)
    assert s.micro_f1 == pytest.approx(micro, abs=1e-12)
    # By hand: pcos 0.8, endo 1, tubal 0, male 1 -> 0.7; micro tp5 fp1 fn1 -> 10/12.
    assert s.macro_f1 == pytest.approx(0.7) and s.micro_f1 == pytest.approx(10 / 12)
    with pytest.raises(TypeError):
        score_layer(["pcos"], ["pcos"], multi=True)


def test_macro_f1_matches_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(11)
    labels = ["a", "b", "c", "d", "e"]
    for _ in range(20):
        truths = [
            set(rng.choice(labels, size=rng.integers(0, 3), replace=False)) for _ in range(15)
        ]
        preds = [
            None if rng.random() < 0.1 else set(rng.choice(labels, size=rng.integers(0, 3)))
            for _ in range(15)
        ]
        s = score_layer(
            [list(t) for t in truths], [None if p is None else list(p) for p in preds], True
        )
        macro, micro = _f1_reference(truths, preds)
        assert s.macro_f1 == pytest.approx(macro, abs=1e-12)
        assert s.micro_f1 == pytest.approx(micro, abs=1e-12)


def test_layer_accuracy_table() -> None:
    table = layer_accuracy(PRED, TRUTH, LAYERS)
    assert len(table) == 2 * 2 * 3  # arms × layers × (easy, hard, all)
    row = table.set_index(["arm", "layer", "stratum"]).loc[("m1", "art_strategy", "all")]
    # m1 has no row for case 6 and None for case 5: both missing and wrong.
    assert (row.n, row.missing, row.correct) == (6, 2, 2)
    interval = wilson_interval(2, 6)
    assert (row.ci_low, row.ci_high) == pytest.approx((interval.low, interval.high))
    ref_macro, _ = _f1_reference(
        [{t} for t in TRUTH.art_strategy], [{"IUI"}, {"ICSI"}, {"ICSI"}, {"IVF"}, None, None]
    )
    assert row.macro_f1 == pytest.approx(ref_macro, abs=1e-12)
    assert row.title == "ART strategy"
    m2 = table.set_index(["arm", "layer", "stratum"]).loc[("m2", "diagnosis", "hard")]
    # Cases 4 (None -> missing), 5 ([] vs ["tubal"]), 6 (exact): 1 of 3 exact.
    assert (m2.n, m2.missing, m2.correct) == (3, 1, 1)
    assert m2.jaccard == pytest.approx((0 + 0 + 1) / 3)
    easy = table.set_index(["arm", "layer", "stratum"]).loc[("m2", "art_strategy", "easy")]
    assert easy.accuracy == 1.0 and easy.macro_f1 == 1.0


def test_layer_accuracy_without_stratum_and_validation() -> None:
    table = layer_accuracy(PRED, TRUTH.drop(columns="stratum"), LAYERS)
    assert set(table.stratum) == {"all"} and len(table) == 4
    with pytest.raises(ValueError, match="several predictions"):
        layer_accuracy(pd.concat([PRED, PRED.iloc[:1]]), TRUTH, LAYERS)
    with pytest.raises(ValueError, match="lacks columns"):
        layer_accuracy(PRED.drop(columns="diagnosis"), TRUTH, LAYERS)


def test_bootstrap_deterministic_and_matches_naive_loop() -> None:
    rng = np.random.default_rng(5)
    labels = np.array(["IUI", "IVF", "ICSI", "PGT-A"])
    truth = rng.choice(labels, size=40).tolist()
    pred = [t if rng.random() < 0.6 else str(rng.choice(labels)) for t in truth]
    first = bootstrap_macro_f1(truth, pred, n_boot=300, seed=42)
    assert first == bootstrap_macro_f1(truth, pred, n_boot=300, seed=42)
    assert first != bootstrap_macro_f1(truth, pred, n_boot=300, seed=43)
    assert first.low <= first.estimate <= first.high
    assert first.estimate == pytest.approx(score_layer(truth, pred).macro_f1)
    # Naive reference: same documented draws, each replicate scored from scratch.
    draws = np.random.default_rng(42).integers(0, 40, size=(300, 40))
    reps = [_f1_reference([{truth[i]} for i in d], [{pred[i]} for i in d])[0] for d in draws]
    assert (first.low, first.high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))


def test_layer_accuracy_bootstrap_columns() -> None:
    table = layer_accuracy(PRED, TRUTH, LAYERS, n_boot=200, seed=1)
    again = layer_accuracy(PRED, TRUTH, LAYERS, n_boot=200, seed=1)
    pd.testing.assert_frame_equal(table, again)
    assert (table.f1_ci_low <= table.macro_f1 + 1e-12).all()


def test_a_single_label_layer_with_no_labels_at_all_scores_nothing_without_failing() -> None:
    """Regression: every truth and prediction missing (a study with no decisions parsed yet)."""
    pred = pd.DataFrame({"case_id": ["c1", "c2"], "arm": ["A", "A"], "strategy": [None, np.nan]})
    truth = pd.DataFrame({"case_id": ["c1", "c2"], "strategy": [None, ""]})
    table = layer_accuracy(pred, truth, {"strategy": {"multi": False}})
    row = table[table["stratum"] == "all"].iloc[0]
    assert row["n"] == 0 and row["missing"] == 0  # as the set-based code scored it
