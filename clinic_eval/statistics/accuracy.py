"""Accuracy of structured model decisions against ground truth, per arm × decision layer.

Every layer is scored on label *sets*: a single-label layer's truth {t} and prediction {p} make
the per-label TP/FP/FN counts of the usual multiclass confusion matrix, and a multi-label layer
(config ``{"multi": True}``) uses the listed labels directly. A prediction that lacks a layer
(no row for the case and arm, or None/NaN/"" in the cell) counts as wrong: a case miss for
accuracy/exact match, Jaccard 0, and false negatives only (no predicted label) for F1. Such cases
are counted in the ``missing`` column. Cases whose truth lacks the layer are not scored for it,
and predictions for cases absent from truth are ignored (there is nothing to compare them with).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clinic_eval.statistics.intervals import NAN_INTERVAL, wilson_interval

__all__ = [
    "BootstrapCI",
    "LayerScores",
    "bootstrap_macro_f1",
    "layer_accuracy",
    "score_layer",
]

ALL = "all"
COLUMNS = [
    "arm",
    "layer",
    "title",
    "stratum",
    "n",
    "missing",
    "correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "jaccard",
    "macro_f1",
    "micro_f1",
    "n_labels",
]


@dataclass(frozen=True)
class BootstrapCI:
    estimate: float
    low: float
    high: float
    n_boot: int
    seed: int
    confidence: float


@dataclass(frozen=True)
class LayerScores:
    """Scores of one arm on one layer over a set of cases (see module docstring)."""

    n: int
    missing: int
    correct: int  # exact matches (the whole label set for multi-label layers)
    accuracy: float
    ci_low: float
    ci_high: float
    jaccard: float  # mean per-case |P ∩ T| / |P ∪ T|, 1 when both are empty
    macro_f1: float
    micro_f1: float
    n_labels: int  # labels present in truth or prediction, the macro-F1 average's base


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return False  # an empty list is a real answer ("no label"), not a missing one
    return bool(pd.isna(value))


def as_label_set(value: Any, multi: bool) -> frozenset[Any] | None:
    """Label set of a cell, or None when the cell is missing."""
    if _is_missing(value):
        return None
    if multi:
        if isinstance(value, str):
            raise TypeError(f"multi-label layer expects a list of labels, got the string {value!r}")
        return frozenset(value)
    return frozenset([value])


def count_matrices(
    truths: list[frozenset[Any]], preds: list[frozenset[Any] | None]
) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
    """Per-case × per-label TP, FP, FN indicator matrices over labels seen in truth or pred."""
    seen: set[Any] = set()
    for t, p in zip(truths, preds, strict=True):
        seen |= t | (p or frozenset())
    labels = sorted(seen, key=str)
    index = {label: j for j, label in enumerate(labels)}
    shape = (len(truths), len(labels))
    tp, fp, fn = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, (t, p) in enumerate(zip(truths, preds, strict=True)):
        p = p or frozenset()
        for label in t & p:
            tp[i, index[label]] = 1
        for label in p - t:
            fp[i, index[label]] = 1
        for label in t - p:
            fn[i, index[label]] = 1
    return labels, tp, fp, fn


def macro_micro(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[float, float, int]:
    """Macro and micro F1 from per-label totals (last axis = labels).

    F1 = 2TP / (2TP + FP + FN) equals the harmonic mean of precision and recall where both are
    defined and 0 where the label was never predicted correctly; the macro mean runs over the
    labels that occur in truth or prediction (those with a non-zero denominator).
    """
    denominator = 2 * tp + fp + fn
    present = denominator > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / np.where(present, denominator, 1), 0.0)
        n_present = present.sum(axis=-1)
        macro = np.where(n_present > 0, f1.sum(axis=-1) / np.maximum(n_present, 1), np.nan)
        tp_all, den_all = tp.sum(axis=-1), denominator.sum(axis=-1)
        micro = np.where(den_all > 0, 2 * tp_all / np.maximum(den_all, 1), np.nan)
    return macro, micro, n_present  # type: ignore[return-value]


def _cells(values: Iterable[Any]) -> np.ndarray:
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy(dtype=object)
    items = list(values)
    cells = np.empty(len(items), dtype=object)
    cells[:] = items
    return cells


def _single_label_codes(
    truths: np.ndarray, preds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of single-label cells into one label array; -1 where a cell is missing.

    Factorising and asking _is_missing once per distinct value gives the same label equality
    as comparing one-element sets, without building a set per case.
    """
    codes, labels = pd.factorize(np.concatenate([truths, preds]))
    labels = np.asarray(labels, dtype=object)
    # One extra "missing" slot so that code -1 (NaN/None) indexes it, even with no labels.
    blank = np.fromiter((_is_missing(label) for label in labels), bool, len(labels))
    blank = np.append(blank, True)
    codes = np.where(~blank[codes], codes, -1)
    return codes[: len(truths)], codes[len(truths) :], labels


def _score_single(truths: np.ndarray, preds: np.ndarray, confidence: float) -> LayerScores:
    """score_layer for a single-label layer, on label codes instead of per-case sets.

    Per case the truth {t} and prediction {p} give TP on t when p == t, otherwise FN on t and
    FP on p (when given), and Jaccard 1 or 0; the totals equal count_matrices' column sums.
    """
    if len(truths) != len(preds):
        raise ValueError("truths and preds differ in length")
    truth_code, pred_code, labels = _single_label_codes(truths, preds)
    scored = truth_code >= 0
    t, p = truth_code[scored], pred_code[scored]
    n = int(t.size)
    hit = p == t
    k = len(labels)
    tp = np.bincount(t[hit], minlength=k).astype(float)
    fn = np.bincount(t[~hit], minlength=k).astype(float)
    fp = np.bincount(p[~hit & (p >= 0)], minlength=k).astype(float)
    # Same label order as count_matrices (labels seen, sorted by str), so the macro mean sums
    # the per-label F1 values in the same order.
    seen = [j for j in range(k) if tp[j] + fn[j] + fp[j] > 0]
    order = sorted(seen, key=lambda j: str(labels[j]))
    macro, micro, n_labels = macro_micro(tp[order], fp[order], fn[order])
    correct = int(hit.sum())
    interval = wilson_interval(correct, n, confidence) if n else NAN_INTERVAL
    return LayerScores(
        n=n,
        missing=int((p < 0).sum()),
        correct=correct,
        accuracy=correct / n if n else float("nan"),
        ci_low=interval.low,
        ci_high=interval.high,
        # Jaccard is 1 for a match and 0 otherwise, so its mean is the accuracy.
        jaccard=float(np.mean(hit.astype(float))) if n else float("nan"),
        macro_f1=float(macro),
        micro_f1=float(micro),
        n_labels=int(n_labels),
    )


def score_layer(
    truths: Iterable[Any], preds: Iterable[Any], multi: bool = False, confidence: float = 0.95
) -> LayerScores:
    """Score paired truth/prediction cells of one layer (see module docstring for the rules)."""
    if not multi:
        return _score_single(_cells(truths), _cells(preds), confidence)
    truth_sets = [as_label_set(t, multi) for t in truths]
    pred_sets = [as_label_set(p, multi) for p in preds]
    if len(truth_sets) != len(pred_sets):
        raise ValueError("truths and preds differ in length")
    keep = [i for i, t in enumerate(truth_sets) if t is not None]
    t_sets: list[frozenset[Any]] = [truth_sets[i] for i in keep]  # type: ignore[misc]
    p_sets = [pred_sets[i] for i in keep]
    n = len(t_sets)
    missing = sum(p is None for p in p_sets)
    correct = sum(p is not None and p == t for t, p in zip(t_sets, p_sets, strict=True))
    # A missing prediction is scored as the empty set here, except that two empty sets only
    # agree (Jaccard 1) when the prediction was actually given.
    jaccards = [
        0.0 if p is None else (1.0 if not (t | p) else len(t & p) / len(t | p))
        for t, p in zip(t_sets, p_sets, strict=True)
    ]
    _, tp, fp, fn = count_matrices(t_sets, p_sets)
    macro, micro, n_labels = macro_micro(tp.sum(0), fp.sum(0), fn.sum(0))
    interval = wilson_interval(correct, n, confidence) if n else NAN_INTERVAL
    low, high = interval.low, interval.high
    return LayerScores(
        n=n,
        missing=missing,
        correct=correct,
        accuracy=correct / n if n else float("nan"),
        ci_low=low,
        ci_high=high,
        jaccard=float(np.mean(jaccards)) if n else float("nan"),
        macro_f1=float(macro),
        micro_f1=float(micro),
        n_labels=int(n_labels),
    )


def _aligned(pred: pd.DataFrame, truth: pd.DataFrame, arm: Any, layer: str) -> pd.DataFrame:
    """Truth rows (the denominator) with this arm's prediction for the layer, None if absent."""
    if truth["case_id"].duplicated().any():
        raise ValueError("truth has duplicate case_id rows")
    arm_pred = pred.loc[pred["arm"] == arm, ["case_id", layer]]
    if arm_pred["case_id"].duplicated().any():
        raise ValueError(f"arm {arm!r} has several predictions for one case")
    columns = ["case_id", layer] + (["stratum"] if "stratum" in truth.columns else [])
    merged = truth[columns].merge(arm_pred, on="case_id", how="left", suffixes=("_truth", "_pred"))
    merged = merged.astype({f"{layer}_pred": object})
    merged[f"{layer}_pred"] = merged[f"{layer}_pred"].where(merged[f"{layer}_pred"].notna(), None)
    return merged


def layer_accuracy(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    layers: Mapping[str, Mapping[str, Any]],
    confidence: float = 0.95,
    n_boot: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Scores per arm × layer (× stratum from truth's ``stratum`` column, plus an "all" row).

    ``pred`` has columns case_id, arm and one column per layer; ``truth`` has case_id, an
    optional stratum and the layer columns (a list per cell for ``multi`` layers, one label
    otherwise). ``accuracy`` is the exact-match rate (whole label set for multi-label layers)
    with a Wilson interval; ``jaccard`` is the mean per-case Jaccard index (the partial-match
    score; also reported for single-label layers, where it equals accuracy); macro/micro F1 run
    over the labels present in truth or prediction in that group. With ``n_boot > 0`` the
    columns f1_ci_low/f1_ci_high hold a case-bootstrap percentile interval for macro-F1.
    """
    for name, frame, needed in (("pred", pred, {"case_id", "arm"}), ("truth", truth, {"case_id"})):
        lacking = (needed | set(layers)) - set(frame.columns)
        if lacking:
            raise ValueError(f"{name} lacks columns {sorted(lacking)}")
    rows = []
    for arm in sorted(pred["arm"].unique(), key=str):
        for layer, config in layers.items():
            multi = bool(config.get("multi", False))
            merged = _aligned(pred, truth, arm, layer)
            groups: list[tuple[Any, pd.DataFrame]] = []
            if "stratum" in merged.columns:
                groups += [(s, g) for s, g in merged.groupby("stratum", sort=True)]
            groups.append((ALL, merged))
            for stratum, group in groups:
                t, p = group[f"{layer}_truth"], group[f"{layer}_pred"]
                scores = score_layer(t, p, multi=multi, confidence=confidence)
                row: dict[str, Any] = {
                    "arm": arm,
                    "layer": layer,
                    "title": config.get("title", layer),
                    "stratum": stratum,
                    **scores.__dict__,
                }
                if n_boot > 0:
                    ci = bootstrap_macro_f1(t, p, multi, n_boot, seed, confidence)
                    row["f1_ci_low"], row["f1_ci_high"] = ci.low, ci.high
                rows.append(row)
    extra = ["f1_ci_low", "f1_ci_high"] if n_boot > 0 else []
    return pd.DataFrame(rows, columns=COLUMNS + extra)


def bootstrap_macro_f1(
    truths: Iterable[Any],
    preds: Iterable[Any],
    multi: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap interval for macro-F1, resampling cases with replacement.

    Replicate b uses the case indices ``rng.integers(0, n, size=(n_boot, n))[b]`` with
    ``rng = np.random.default_rng(seed)``, so a seed always gives the same interval. Each
    replicate averages F1 over the labels present in *its* resample, like the point estimate.
    Cases without truth are dropped first; missing predictions count as in ``score_layer``.
    """
    pairs = [
        (t, p)
        for t, p in zip(
            (as_label_set(t, multi) for t in truths),
            (as_label_set(p, multi) for p in preds),
            strict=True,
        )
        if t is not None
    ]
    t_sets = [t for t, _ in pairs]
    p_sets = [p for _, p in pairs]
    _, tp, fp, fn = count_matrices(t_sets, p_sets)
    estimate, _, _ = macro_micro(tp.sum(0), fp.sum(0), fn.sum(0))
    n = len(t_sets)
    if n == 0:
        nan = float("nan")
        return BootstrapCI(nan, nan, nan, n_boot, seed, confidence)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    # How often each case is drawn per replicate turns each resample's totals into a product.
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.repeat(np.arange(n_boot), n), draws.ravel()), 1)
    macro, _, _ = macro_micro(weights @ tp, weights @ fp, weights @ fn)
    alpha = 1 - confidence
    low, high = np.nanquantile(macro, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(estimate), float(low), float(high), n_boot, seed, confidence)
