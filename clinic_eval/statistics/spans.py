"""Marked spans: how often each arm's responses carry one, how dense they are, and how far
physicians agree on where they are. Pure numpy/pandas/scipy (docs/statistics.md#spans).

The unit is a rated response: one physician's reading of one response (case, rater, arm), as
for the hallucination flag. A physician shown the same response twice (two pairings of one
case) is one unit: it counts as marked when either showing has a span, and its span count is
the mean over its showings. Repeat showings are left out before this module sees the data.

* Shares: per arm, the share of rated responses with at least one span, for any category, per
  category and per harm level, with the two-way (case and rater) clustered interval on the
  logit scale; per arm pair and category, the difference of those shares over the (case,
  rater) pairs that read both arms. Both are ``crossed.hallucination``, the estimator of the
  hallucination rates and their clustered McNemar, run on span marks instead of flags.
* Density: spans per 1,000 words per arm, a ratio estimator (total spans over total words)
  whose variance is the same two-way cluster-robust sandwich applied to its influence values.
* Agreement between physicians who read the same response: character-overlap F1 and kappa on
  "has a severe span".
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from clinic_eval.statistics import agreement, clustered, crossed
from clinic_eval.statistics import crossed_simulation as sim
from clinic_eval.statistics.clustered import CrossedEstimate, CrossedMeans

ANY = "any"
# The harm scale of config.HARM_LEVELS, least to most harmful.
HARM_LEVELS = ("none", "minor", "moderate", "severe")
UNIT = ["case_id", "rater_id", "arm"]
PER_WORDS = 1000.0
F1_DEFINITION = (
    "for two physicians who read the same response, F1 = 2|A∩B| / (|A| + |B|), A and B the "
    "sets of character offsets each marked (the union of their ranged spans of the category); "
    "pairs where neither marked anything are excluded (counted as both_empty); omissions have "
    "no range and are left out"
)


@dataclass(frozen=True)
class SpanOptions:
    """The rubric's span categories (keys in its order, their titles, which are omissions) and
    the harm scale."""

    categories: tuple[str, ...]
    titles: tuple[str, ...] = ()
    omissions: tuple[str, ...] = ()
    harms: tuple[str, ...] = HARM_LEVELS
    severe: str = "severe"


def _flat(prefix: str, results: Sequence[CrossedEstimate]) -> dict[str, list[object]]:
    """``<prefix>``, ``<prefix>_low``, ... columns as ``crossed`` names them."""
    return {
        prefix if name == "estimate" else f"{prefix}_{name}": [asdict(r)[name] for r in results]
        for name in crossed.ESTIMATE_FIELDS
    }


def span_marks(units: pd.DataFrame, spans: pd.DataFrame, options: SpanOptions) -> pd.DataFrame:
    """One row per rated response (``units``: case_id, rater_id, arm, words, showings) with
    whether it was marked (``any``, ``category:<key>``, ``harm:<level>``; omissions count) and
    its count of ranged spans per showing (``count:any``, ``count:<key>``; omissions have no
    place in the text and are not counted). ``spans`` holds case_id, rater_id, arm, category,
    harm and start (empty for an omission); a span on no unit is ignored."""
    units = units.sort_values(UNIT, kind="stable").reset_index(drop=True)
    index = pd.MultiIndex.from_frame(units[UNIT])
    at = (
        index.get_indexer(pd.MultiIndex.from_frame(spans[UNIT]))
        if len(spans)
        else np.array([], dtype=np.int64)
    )
    category = spans["category"].to_numpy() if len(spans) else np.array([])
    harm = spans["harm"].to_numpy() if len(spans) else np.array([])
    ranged = spans["start"].notna().to_numpy() if len(spans) else np.array([], dtype=bool)
    known = at >= 0
    n = len(units)
    showings = units["showings"].to_numpy(dtype=float)
    columns: dict[str, np.ndarray] = {}
    for key in (ANY, *options.categories):
        chosen = known if key == ANY else known & (category == key)
        columns[f"category:{key}" if key != ANY else ANY] = np.bincount(at[chosen], minlength=n) > 0
        counted = np.bincount(at[chosen & ranged], minlength=n).astype(float)
        columns[f"count:{key}"] = counted / showings
    for level in options.harms:
        columns[f"harm:{level}"] = np.bincount(at[known & (harm == level)], minlength=n) > 0
    return pd.concat([units, pd.DataFrame(columns)], axis=1)


def span_shares(
    marks: pd.DataFrame, arms: Sequence[str], options: SpanOptions, confidence: float = 0.95
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per arm and key (any, each category, each harm level): the share of rated responses
    marked; per arm pair and key (any and each category): the difference of those shares.
    ``crossed.hallucination`` computes both, so they are the same estimator as the flags'."""
    shares, pairs = [], []
    keys = [
        ("any", ANY, ANY),
        *(("category", key, f"category:{key}") for key in options.categories),
        *(("harm", level, f"harm:{level}") for level in options.harms),
    ]
    for scope, key, column in keys:
        units = marks[UNIT].assign(any=marks[column].to_numpy(bool))
        rates, pairwise = crossed.hallucination(pd.DataFrame(), arms, confidence, units=units)
        shares.append(rates.assign(scope=scope, key=key))
        if scope != "harm" and not pairwise.empty:
            pairs.append(pairwise.assign(key=key))
    share_table = pd.concat(shares, ignore_index=True)
    share_table = share_table[["scope", "key", *[c for c in rates.columns]]]
    pair_table = pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame()
    if not pair_table.empty:
        pair_table = pair_table[["key", *[c for c in pair_table.columns if c != "key"]]]
    return share_table, pair_table


def crossed_ratio(
    numerator: np.ndarray,
    denominator: np.ndarray,
    group: np.ndarray,
    case: np.ndarray,
    rater: np.ndarray,
    groups: int,
) -> CrossedMeans:
    """Per group, the ratio estimator R = sum(numerator) / sum(denominator) with the two-way
    cluster-robust variance of its influence values (y - R w) / sum(w): the linearisation of
    a ratio, under the same sandwich and degrees of freedom as every clustered mean."""
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    group = np.asarray(group, dtype=np.int64)
    total = np.bincount(group, denominator, minlength=groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.bincount(group, numerator, minlength=groups) / total
        influence = (numerator - ratio[group] * denominator) / total[group]
    variance = clustered.crossed_variance(np.nan_to_num(influence), group, case, rater, groups)
    return CrossedMeans(ratio, variance)


def rate_estimates(fit: CrossedMeans, confidence: float = 0.95) -> list[CrossedEstimate]:
    """``clustered.estimates`` of positive ratios with the interval formed on the log scale
    (delta method: R exp(±t se / R)), which keeps it above zero and follows the right skew of
    span counts; a zero rate keeps no interval."""
    results = clustered.estimates(fit, confidence=confidence, test=False)
    shaped = []
    for result in results:
        if result.se > 0 and result.estimate > 0 and not result.not_estimable:
            half = float(clustered.t_quantile(confidence, result.df)) * result.se / result.estimate
            result = replace(
                result,
                low=result.estimate * math.exp(-half),
                high=result.estimate * math.exp(half),
            )
        shaped.append(result)
    return shaped


def per_thousand_words(
    marks: pd.DataFrame, arms: Sequence[str], options: SpanOptions, confidence: float = 0.95
) -> pd.DataFrame:
    """Per key (any span and each category that has ranges) and arm: ranged spans per 1,000
    words of the responses the physicians read, total over total, with a clustered interval
    on the log scale (``rate_estimates``)."""
    keys = (ANY, *(c for c in options.categories if c not in options.omissions))
    arm_code = pd.Index(list(arms)).get_indexer(pd.Index(marks["arm"]))
    keep = arm_code >= 0
    marks, arm_code = marks[keep], arm_code[keep]
    case, rater = clustered.codes(marks["case_id"]), clustered.codes(marks["rater_id"])
    words = marks["words"].to_numpy(dtype=float)
    k, n = len(arms), len(marks)
    counts = np.concatenate([marks[f"count:{key}"].to_numpy(dtype=float) for key in keys])
    group = (np.repeat(np.arange(len(keys)), n) * k + np.tile(arm_code, len(keys))).astype(np.int64)
    fit = crossed_ratio(
        PER_WORDS * counts,
        np.tile(words, len(keys)),
        group,
        np.tile(case, len(keys)),
        np.tile(rater, len(keys)),
        len(keys) * k,
    )
    results = rate_estimates(fit, confidence)
    return pd.DataFrame(
        {
            "key": np.repeat(np.array(keys, dtype=object), k),
            "arm": np.tile(np.array(list(arms), dtype=object), len(keys)),
            "responses": np.tile(np.bincount(arm_code, minlength=k), len(keys)),
            "spans": np.bincount(group, counts, minlength=len(keys) * k),
            "words": np.tile(np.bincount(arm_code, words, minlength=k), len(keys)),
            **_flat("rate", results),
            "estimator": clustered.ESTIMATOR + "; ratio estimator (total spans over total words)",
            "generalises_to": clustered.GENERALISES_TO,
        }
    )


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _size(ranges: list[tuple[int, int]]) -> int:
    return sum(end - start for start, end in ranges)


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """|A ∩ B| of two sorted, disjoint range lists."""
    i = j = shared = 0
    while i < len(a) and j < len(b):
        shared += max(0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return shared


def _readers(units: pd.DataFrame) -> list[tuple[tuple[Any, Any], list[Any]]]:
    """Each response (case, arm) read by at least two physicians, with its readers, sorted."""
    readers: dict[tuple[Any, Any], set[Any]] = defaultdict(set)
    for case, arm, rater in zip(units["case_id"], units["arm"], units["rater_id"], strict=True):
        readers[(case, arm)].add(rater)
    return [(key, sorted(found)) for key, found in sorted(readers.items()) if len(found) >= 2]


def overlap_f1(units: pd.DataFrame, spans: pd.DataFrame, options: SpanOptions) -> pd.DataFrame:
    """Per key (any category, and each category that has ranges): character-overlap F1 over
    every pair of physicians who read the same response (``F1_DEFINITION``). ``f1_mean`` is
    the mean over the pairs where at least one marked; ``f1_pooled`` is 2 sum|A∩B| / sum(|A| +
    |B|) over the same pairs (long marks weigh more)."""
    keys = [ANY, *(c for c in options.categories if c not in options.omissions)]
    marked: dict[tuple[object, ...], list[tuple[int, int]]] = defaultdict(list)
    ranged = spans[spans["start"].notna()] if len(spans) else spans
    if len(ranged):
        for case, rater, arm, category, start, end in zip(
            ranged["case_id"],
            ranged["rater_id"],
            ranged["arm"],
            ranged["category"],
            ranged["start"].astype(int),
            ranged["end"].astype(int),
            strict=True,
        ):
            marked[(case, arm, rater, ANY)].append((start, end))
            marked[(case, arm, rater, category)].append((start, end))
    sets = {key: _merged(ranges) for key, ranges in marked.items()}
    readers = _readers(units)
    rows = []
    for key in keys:
        scores, shared, sizes, empty = [], 0, 0, 0
        for (case, arm), raters in readers:
            for first, second in itertools.combinations(raters, 2):
                a = sets.get((case, arm, first, key), [])
                b = sets.get((case, arm, second, key), [])
                size = _size(a) + _size(b)
                if size == 0:
                    empty += 1
                    continue
                overlap = _overlap(a, b)
                scores.append(2 * overlap / size)
                shared += overlap
                sizes += size
        rows.append(
            {
                "key": key,
                "responses": len(readers),
                "pairs": len(scores),
                "both_empty": empty,
                "f1_mean": float(np.mean(scores)) if scores else np.nan,
                "f1_pooled": 2 * shared / sizes if sizes else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["key", "responses", "pairs", "both_empty", "f1_mean",
                                       "f1_pooled"])  # fmt: skip


def severe_agreement(
    units: pd.DataFrame, spans: pd.DataFrame, options: SpanOptions
) -> dict[str, object]:
    """Agreement on "this response has a span of severe harm" between physicians who read it:
    observed agreement over rater pairs, Fleiss' kappa over the responses read by the most
    common number of physicians (Fleiss needs equal counts), and Cohen's kappa per physician
    pair (``agreement.pairwise_cohen_kappa``) with its mean over pairs sharing at least two
    responses."""
    severe = spans[spans["harm"] == options.severe] if len(spans) else spans
    flagged = set(zip(severe["case_id"], severe["arm"], severe["rater_id"], strict=True))
    readers = _readers(units)
    long_rows = [
        (f"{case}\x1f{arm}", rater, int((case, arm, rater) in flagged))
        for (case, arm), raters in readers
        for rater in raters
    ]
    long = pd.DataFrame(long_rows, columns=["unit", "rater", "value"])
    result: dict[str, object] = {
        "responses": len(readers),
        "severe_marks": int(long["value"].sum()) if len(long) else 0,
    }
    if not readers:
        return {**result, "not_estimable": "no response was read by two physicians"}
    values = long.groupby("unit", sort=False)["value"].apply(list)
    agree = [x == y for v in values for x, y in itertools.combinations(v, 2)]
    sizes = long.groupby("unit", sort=True)["rater"].size()
    tally = sizes.value_counts().sort_index(ascending=False)
    common = int(tally.index[int(np.argmax(tally.to_numpy()))])
    table = agreement.fleiss_table(long[long["unit"].isin(sizes.index[sizes == common])], [0, 1])
    pairs = agreement.pairwise_cohen_kappa(long, labels=[0, 1])
    kappas = pairs["kappa"].to_numpy(dtype=float)
    kappas = kappas[np.isfinite(kappas)]
    return {
        **result,
        "observed_agreement": float(np.mean(agree)),
        "fleiss_kappa": agreement.fleiss_kappa(table.to_numpy()),
        "fleiss_responses": len(table),
        "fleiss_raters_per_response": common,
        "cohen_pairs": int(kappas.size),
        "cohen_kappa_mean": float(kappas.mean()) if kappas.size else np.nan,
    }


def span_report(
    spans: pd.DataFrame,
    units: pd.DataFrame,
    options: SpanOptions | None,
    adjust: Callable[[np.ndarray], np.ndarray],
    confidence: float = 0.95,
) -> dict[str, object]:
    """The report's ``spans`` section. ``adjust`` maps p-values to their family-corrected
    values (the plan's Holm or Benjamini-Hochberg over the family "spans")."""
    if options is None:
        seen = sorted(spans["category"].unique()) if len(spans) else []
        options = SpanOptions(categories=tuple(seen))
    titles = dict(zip(options.categories, options.titles or options.categories, strict=True))
    section: dict[str, object] = {
        "categories": [
            {"key": key, "title": titles[key], "omission": key in options.omissions}
            for key in options.categories
        ],
        "harms": list(options.harms),
        "counts": {
            "spans": len(spans),
            "omissions": int(spans["start"].isna().sum()) if len(spans) else 0,
            "responses": len(units),
            "responses_marked": 0,
        },
        "estimator": clustered.ESTIMATOR,
        "generalises_to": clustered.GENERALISES_TO,
        "f1_definition": F1_DEFINITION,
    }
    if not len(units):
        return {**section, "not_estimable": "no rated responses with span annotation"}
    marks = span_marks(units, spans, options)
    section["counts"]["responses_marked"] = int(marks[ANY].sum())  # type: ignore[index]
    arms = sorted(marks["arm"].unique())
    shares, pairwise = span_shares(marks, arms, options, confidence)
    if not pairwise.empty:
        pairwise["difference_p_adjusted"] = adjust(
            pairwise["difference_p_value"].to_numpy(dtype=float)
        )
    section |= {
        "shares": shares,
        "pairwise": pairwise,
        "per_1000_words": per_thousand_words(marks, arms, options, confidence),
        "agreement": {
            "overlap_f1": overlap_f1(units, spans, options),
            "severe": severe_agreement(units, spans, options),
        },
    }
    return section


# --- Simulation (calibration) ---------------------------------------------------------------


def simulated_spans(
    studies: sim.SimulatedStudies,
    heterogeneity: sim.Heterogeneity,
    per_thousand: Mapping[str, float],
    *,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Span counts and word counts for every rated response of simulated studies: each (case,
    arm) response has 100-399 words; a physician marks Poisson(words / 1000 x rate x
    exp(taste + case effect)) spans, taste ~ N(0, rater_taste^2) per physician and arm and
    case effect ~ N(0, case_effect^2) per case and arm, as the hallucination flags are drawn.
    A response is marked when its count is positive."""
    rng = np.random.default_rng(seed)
    shape = studies.shape
    s, c, r, k = studies.studies, shape.cases, shape.raters, len(shape.arms)
    words = rng.integers(100, 400, (s, c, k)).astype(float)
    taste = rng.normal(0.0, heterogeneity.rater_taste, (s, r, k))
    effect = rng.normal(0.0, heterogeneity.case_effect, (s, c, k))
    study, case, rater, arm = (
        studies.response_study,
        studies.response_case,
        studies.response_rater,
        studies.response_arm,
    )
    rate = np.array([per_thousand.get(a, 2.0) for a in shape.arms])[arm]
    read = words[study, case, arm]
    mean = read / PER_WORDS * rate * np.exp(taste[study, rater, arm] + effect[study, case, arm])
    return rng.poisson(mean).astype(float), read


def true_per_thousand(heterogeneity: sim.Heterogeneity, rate: float) -> float:
    """The population ratio of the simulation: rate x E[exp(taste)] E[exp(case effect)]."""
    return rate * float(np.exp((heterogeneity.rater_taste**2 + heterogeneity.case_effect**2) / 2))


def true_marked_share(heterogeneity: sim.Heterogeneity, rate: float) -> float:
    """The population share of responses with a span: 1 - E[exp(-mean count)], over the word
    counts (uniform 100-399) and the normal taste and case effects."""
    words = np.arange(100, 400, dtype=float)
    sd = float(np.hypot(heterogeneity.rater_taste, heterogeneity.case_effect))

    def marked(z: np.ndarray) -> np.ndarray:
        means = np.outer(np.exp(z), words / PER_WORDS * rate)
        share: np.ndarray = 1 - np.exp(-means).mean(axis=1)
        return share

    return sim.normal_expectation(marked, 0.0, sd)


def simulated_share_differences(
    studies: sim.SimulatedStudies, counts: np.ndarray, confidence: float = 0.95
) -> tuple[sim.BatchResult, sim.BatchResult]:
    """Per study: each arm's marked share and each pair's difference, by the batched form of
    the estimator ``span_shares`` runs (the hallucination flag's, on span marks)."""
    marked = replace(studies, flagged=counts > 0)
    return (
        sim.hallucination_rates(marked, confidence),
        sim.hallucination_differences(marked, confidence),
    )


def simulated_rates(
    studies: sim.SimulatedStudies, counts: np.ndarray, words: np.ndarray, confidence: float = 0.95
) -> sim.BatchResult:
    """Per study and arm: spans per 1,000 words with its clustered interval (batched)."""
    k = len(studies.shape.arms)
    fit = crossed_ratio(
        PER_WORDS * counts,
        words,
        studies.response_study * k + studies.response_arm,
        studies.response_case,
        studies.response_rater,
        studies.studies * k,
    )
    results = rate_estimates(fit, confidence)

    def field_of(name: str) -> np.ndarray:
        return np.array([getattr(x, name) for x in results], dtype=float).reshape(-1, k)

    return sim.BatchResult(
        field_of("estimate"), field_of("low"), field_of("high"), field_of("p_value")
    )
