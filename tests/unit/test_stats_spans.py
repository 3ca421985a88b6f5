"""Span statistics and adjudication against hand-computed values, the report's wiring, and the
span share tests' calibration on simulated null studies with rater and case heterogeneity."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clinic_eval.statistics import adjudicated, clustered, paired, spans
from clinic_eval.statistics import crossed_simulation as sim
from clinic_eval.statistics.report import ReportOptions, StudyTables, build_report

OPTIONS = spans.SpanOptions(
    categories=("factual_error", "reasoning_error", "omission"),
    titles=("Factual error", "Reasoning error", "Omission"),
    omissions=("omission",),
)
HOLM = partial(paired.adjust_p_values, method="holm")


def units_of(rows: list[tuple[str, str, str]], words: float = 100.0) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["case_id", "rater_id", "arm"])
    return frame.assign(words=words, showings=1)


def spans_of(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["case_id", "rater_id", "arm", "category", "harm", "start", "end"]
    )


# --- Marks, shares and their differences ----------------------------------------------------


def test_a_rated_response_is_marked_per_category_and_harm_and_counts_only_ranged_spans() -> None:
    units = units_of([("c1", "r1", "X"), ("c1", "r2", "X"), ("c1", "r1", "Y")]).assign(
        showings=[2, 1, 1]
    )
    marked = spans_of(
        [
            ("c1", "r1", "X", "factual_error", "minor", 0, 5),
            ("c1", "r1", "X", "factual_error", "severe", 9, 12),
            ("c1", "r1", "X", "omission", "moderate", None, None),
            ("c1", "r1", "Y", "reasoning_error", "none", 3, 4),
            ("c9", "r1", "X", "factual_error", "minor", 0, 5),  # on no unit: ignored
        ]
    )
    marks = spans.span_marks(units, marked, OPTIONS).set_index(["rater_id", "arm"])
    first = marks.loc[("r1", "X")]
    # Two ranged spans over two showings: one per showing; the omission marks but is not counted.
    assert first["count:any"] == 1.0 and first["count:factual_error"] == 1.0
    assert first["any"] and first["category:omission"] and first["count:omission"] == 0.0
    assert first["harm:minor"] and first["harm:severe"] and first["harm:moderate"]
    assert not first["harm:none"] and not first["category:reasoning_error"]
    assert not marks.loc[("r2", "X")]["any"] and marks.loc[("r2", "X")]["count:any"] == 0.0
    assert marks.loc[("r1", "Y")]["harm:none"] and marks.loc[("r1", "Y")]["count:any"] == 1.0


def _grid() -> tuple[pd.DataFrame, pd.DataFrame]:
    """4 cases x 3 raters, each reading arms X and Y: X is marked where case + rater index is
    even (6 of 12), Y where the rater is the first (4 of 12)."""
    rows, marked = [], []
    for i in range(4):
        for j in range(3):
            for arm in ("X", "Y"):
                rows.append((f"c{i}", f"r{j}", arm))
                if (arm == "X" and (i + j) % 2 == 0) or (arm == "Y" and j == 0):
                    marked.append((f"c{i}", f"r{j}", arm, "factual_error", "severe", 0, 4))
    return units_of(rows), spans_of(marked)


def _two_way_variance(influence: np.ndarray, case: np.ndarray, rater: np.ndarray) -> float:
    """V = V_case + V_rater - V_case&rater, each sum of squared cluster sums x G / (G - 1),
    by brute force."""

    def part(keys: list[object]) -> float:
        sums: dict[object, float] = {}
        for key, value in zip(keys, influence, strict=True):
            sums[key] = sums.get(key, 0.0) + value
        g = len(sums)
        return g / (g - 1) * sum(v * v for v in sums.values())

    cells = list(zip(case, rater, strict=True))
    return part(list(case)) + part(list(rater)) - part(cells)


def test_shares_and_their_difference_match_hand_counts_and_the_two_way_variance() -> None:
    units, marked = _grid()
    section = spans.span_report(marked, units, OPTIONS, HOLM)
    shares = {
        (row["key"], row["arm"]): row
        for row in section["shares"].to_dict(orient="records")  # type: ignore[attr-defined]
    }
    x, y = shares[("any", "X")], shares[("any", "Y")]
    assert (x["n"], x["count"], x["rate"]) == (12, 6, 0.5)
    assert (y["n"], y["count"]) == (12, 4) and y["rate"] == pytest.approx(1 / 3)
    assert shares[("factual_error", "X")]["rate"] == 0.5
    assert shares[("severe", "Y")]["rate"] == pytest.approx(1 / 3)
    assert shares[("reasoning_error", "X")]["count"] == 0
    # Y's interval: logit(p) -/+ t * se / (p (1 - p)), se from the two-way variance.
    values = np.array([1.0 if j == 0 else 0.0 for i in range(4) for j in range(3)])
    case = np.repeat(np.arange(4), 3)
    rater = np.tile(np.arange(3), 4)
    se = math.sqrt(_two_way_variance((values - values.mean()) / 12, case, rater))
    assert y["rate_se"] == pytest.approx(se)
    q = stats.t.ppf(0.975, y["rate_df"])
    logit = math.log((1 / 3) / (2 / 3))
    assert y["rate_low"] == pytest.approx(1 / (1 + math.exp(-(logit - q * se / (2 / 9)))))
    # The paired difference X - Y over the 12 (case, rater) pairs: 6/12 - 4/12.
    pairs = section["pairwise"].set_index("key")  # type: ignore[attr-defined]
    row = pairs.loc["any"]
    assert (row["arm_a"], row["arm_b"], row["n_pairs"]) == ("X", "Y", 12)
    assert row["difference"] == pytest.approx(1 / 6)
    x_values = np.array([1.0 if (i + j) % 2 == 0 else 0.0 for i in range(4) for j in range(3)])
    difference = x_values - values
    se = math.sqrt(_two_way_variance((difference - difference.mean()) / 12, case, rater))
    assert row["difference_se"] == pytest.approx(se)
    assert row["difference_p_value"] == pytest.approx(
        2 * stats.t.sf(abs(1 / 6) / se, row["difference_df"])
    )
    # One family "spans": any span and each category, Holm over their p-values.
    table = section["pairwise"]
    assert list(table["key"]) == ["any", "factual_error", "reasoning_error", "omission"]  # type: ignore[index]
    assert np.allclose(
        table["difference_p_adjusted"],  # type: ignore[index]
        paired.adjust_p_values(table["difference_p_value"].to_numpy(), "holm"),  # type: ignore[index]
        equal_nan=True,
    )


def test_spans_per_thousand_words_is_a_ratio_with_a_log_scale_clustered_interval() -> None:
    # The first rater marks far more than the others, so raters carry most of the variance.
    counts = [3, 0, 0, 4, 1, 0, 2, 0, 1, 5, 1, 0]
    rows = [(f"c{i}", f"r{j}", "X") for i in range(4) for j in range(3)]
    words = [100.0 + 50 * i for i in range(4) for j in range(3)]
    units = units_of(rows).assign(words=words)
    marked = spans_of(
        [
            (case, rater, arm, "factual_error", "minor", 10 * k, 10 * k + 5)
            for (case, rater, arm), n in zip(rows, counts, strict=True)
            for k in range(n)
        ]
    )
    table = spans.per_thousand_words(spans.span_marks(units, marked, OPTIONS), ["X"], OPTIONS)
    row = table.set_index("key").loc["any"]
    ratio = 1000 * sum(counts) / sum(words)
    assert (row["spans"], row["words"], row["responses"]) == (sum(counts), sum(words), 12)
    assert row["rate"] == pytest.approx(ratio)
    y, w = 1000 * np.array(counts, float), np.array(words)
    influence = (y - ratio * w) / w.sum()
    se = math.sqrt(
        _two_way_variance(influence, np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4))
    )
    assert row["rate_se"] == pytest.approx(se)
    half = stats.t.ppf(0.975, row["rate_df"]) * se / ratio
    assert row["rate_low"] == pytest.approx(ratio * math.exp(-half))
    assert row["rate_high"] == pytest.approx(ratio * math.exp(half))
    assert list(table["key"].unique()) == ["any", "factual_error", "reasoning_error"]


# --- Agreement ------------------------------------------------------------------------------


def test_overlap_f1_over_rater_pairs_by_hand() -> None:
    units = units_of(
        [("c1", "r1", "X"), ("c1", "r2", "X"), ("c1", "r3", "X"), ("c1", "r1", "Y"),
         ("c1", "r2", "Y"), ("c2", "r1", "X")]
    )  # fmt: skip
    marked = spans_of(
        [
            ("c1", "r1", "X", "factual_error", "minor", 0, 10),
            ("c1", "r1", "X", "reasoning_error", "minor", 20, 30),
            ("c1", "r2", "X", "factual_error", "minor", 5, 15),
            ("c1", "r3", "X", "omission", "minor", None, None),
            ("c1", "r1", "Y", "factual_error", "minor", 0, 4),
            ("c1", "r1", "Y", "factual_error", "minor", 2, 8),  # overlaps: marks 0-8 once
            ("c1", "r2", "Y", "factual_error", "minor", 6, 10),
            ("c2", "r1", "X", "factual_error", "minor", 0, 10),  # read by one rater only
        ]
    )
    table = spans.overlap_f1(units, marked, OPTIONS).set_index("key")
    # any, X: |A1| = 20, |A2| = 10, overlap 5 -> 1/3; r3 marked nothing: 0 with r1 and r2.
    # any, Y: |A1| = 8, |A2| = 4, overlap 2 -> 1/3. Mean (1/3 + 0 + 0 + 1/3) / 4 = 1/6;
    # pooled 2 (5 + 2) / (30 + 20 + 10 + 12) = 7/36.
    assert table.loc["any", "pairs"] == 4 and table.loc["any", "both_empty"] == 0
    assert table.loc["any", "f1_mean"] == pytest.approx(1 / 6)
    assert table.loc["any", "f1_pooled"] == pytest.approx(7 / 36)
    # factual_error, X: 10 and 10 overlapping 5 -> 1/2; Y as above -> 1/3.
    assert table.loc["factual_error", "f1_mean"] == pytest.approx((1 / 2 + 1 / 3) / 4)
    assert table.loc["factual_error", "f1_pooled"] == pytest.approx(14 / 52)
    # reasoning_error: only r1 on X marked; r2-r3 on X and r1-r2 on Y marked nothing.
    assert tuple(table.loc["reasoning_error", ["pairs", "both_empty"]]) == (2, 2)
    assert table.loc["reasoning_error", "f1_mean"] == 0.0
    assert "omission" not in table.index and table.loc["any", "responses"] == 2


def test_kappa_on_a_severe_span_by_hand() -> None:
    values = {
        ("c1", "X"): {"r1": 1, "r2": 1},
        ("c2", "X"): {"r1": 0, "r2": 0},
        ("c3", "X"): {"r1": 1, "r2": 0},
        ("c4", "X"): {"r1": 0, "r2": 0},
        ("c5", "X"): {"r1": 1, "r2": 1, "r3": 0},
    }
    units = units_of([(c, r, a) for (c, a), raters in values.items() for r in raters])
    marked = spans_of(
        [
            (c, r, a, "factual_error", "severe" if v else "minor", 0, 3)
            for (c, a), raters in values.items()
            for r, v in raters.items()
        ]
    )
    result = spans.severe_agreement(units, marked, OPTIONS)
    # Rater pairs: c1, c2, c4 agree, c3 not; c5: r1-r2 agree, r1-r3 and r2-r3 not: 4 of 7.
    assert result["observed_agreement"] == pytest.approx(4 / 7)
    # Fleiss over the four responses with two raters: P = 3/4, P_e = (5/8)^2 + (3/8)^2.
    assert (result["fleiss_responses"], result["fleiss_raters_per_response"]) == (4, 2)
    assert result["fleiss_kappa"] == pytest.approx(7 / 15)
    # Cohen r1-r2 over five responses: p_o = 4/5, p_e = 12/25 -> 8/13; r3 shares one only.
    assert result["cohen_pairs"] == 1 and result["cohen_kappa_mean"] == pytest.approx(8 / 13)
    assert result["severe_marks"] == 5 and result["responses"] == 5


# --- The report -----------------------------------------------------------------------------


def _judgments() -> pd.DataFrame:
    rows = []
    outcomes = ["a", "b", "tie", "a", "b", "a"]
    for i in range(6):
        for j in range(3):
            rows.append((f"c{i}", f"r{j}", "X", "Y", outcomes[(i + j) % 6], "X", "Y"))
    return pd.DataFrame(
        rows, columns=["case_id", "rater_id", "arm_a", "arm_b", "outcome", "left_arm", "right_arm"]
    )


def test_the_report_adds_spans_and_their_family_only_when_there_are_spans() -> None:
    units, marked = _grid()
    base = StudyTables(judgments=_judgments())
    plain = build_report(base, ReportOptions())
    assert "spans" not in plain and "adjudication" not in plain
    assert "spans" not in {family["name"] for family in plain["families"]}
    with_spans = build_report(
        StudyTables(judgments=_judgments(), spans=marked, span_units=units),
        ReportOptions(spans=OPTIONS),
    )
    family = next(f for f in with_spans["families"] if f["name"] == "spans")
    assert family["tests"] == 4 and family["correction"] == "holm"
    assert with_spans["spans"]["categories"][2] == {
        "key": "omission",
        "omission": True,
        "title": "Omission",
    }
    assert {k: v for k, v in with_spans.items() if k not in ("spans", "families")} == {
        k: v for k, v in plain.items() if k != "families"
    }
    empty = build_report(StudyTables(judgments=_judgments()), ReportOptions(spans=OPTIONS))
    assert empty["spans"]["not_estimable"] == "no rated responses with span annotation"


# --- Adjudication ---------------------------------------------------------------------------


ADJUDICATIONS = pd.DataFrame(
    {
        "case_id": ["c0", "c1", "c2", "c3"],
        "arm_set": ["X | Y"] * 4,
        "arms": [("X", "Y")] * 4,
        "raters": [("r0", "r1", "r2")] * 4,
        "status": ["done", "done", "done", "pending"],
        "adjudicator": ["adj", "adj", "adj", ""],
        "triggers": [["Decisive preferences disagree"], ["Scores differ by 2 on clarity"],
                     ["Decisive preferences disagree"], ["Decisive preferences disagree"]],
        "preference": ["B", "tie", "none", ""],
        "preferred_arm": ["Y", "", "", ""],
        "scores": [{"X": {"clarity": 1}, "Y": {"clarity": 5}}, {}, {}, {}],
    }
)  # fmt: skip


def test_every_judgment_of_an_adjudicated_item_takes_the_adjudicators_answer() -> None:
    frame = _judgments().rename(columns={"rater_id": "rater"})
    frame = frame.assign(arm_set="X | Y", preferred_arm="X")
    frame.loc[frame["case_id"] == "c4", "arm_set"] = "X | Z"
    out = adjudicated.adjudicated_judgments(frame, ADJUDICATIONS)
    by_case = out.groupby("case_id")["outcome"].agg(set)
    assert by_case["c0"] == {"b"} and by_case["c1"] == {"tie"} and by_case["c2"] == {"both_bad"}
    assert by_case["c3"] == set(frame[frame["case_id"] == "c3"]["outcome"])  # pending
    assert set(out[out["case_id"] == "c0"]["preferred_arm"]) == {"Y"}
    assert list(out["rater"]) == list(frame["rater"]) and len(out) == len(frame)
    ratings = pd.DataFrame(
        {
            "case_id": ["c0", "c0", "c0", "c1"],
            "arm_set": ["X | Y", "X | Y", "X | Y", "X | Y"],
            "arm": ["X", "Y", "Y", "X"],
            "dimension": ["clarity", "clarity", "safety", "clarity"],
            "score": [3, 2, 4, 2],
        }
    )
    assert list(adjudicated.adjudicated_ratings(ratings, ADJUDICATIONS)["score"]) == [1, 5, 4, 2]


def test_an_items_contribution_to_the_primary_endpoint_and_what_changed() -> None:
    judgments = _judgments()
    # c0: outcomes a, b, tie for raters 0-2: Y's scores 0, 1, 0.5 -> mean 1/2.
    contributions = adjudicated.item_contributions(
        judgments, pd.DataFrame(), ADJUDICATIONS, ("preference", "Y", "X")
    )
    assert contributions[0] == pytest.approx(0.5)
    other = ADJUDICATIONS.assign(arms=[("X", "Z")] * 4)
    outside = adjudicated.item_contributions(
        judgments, pd.DataFrame(), other, ("preference", "Y", "X")
    )
    assert outside == [None] * 4
    ratings = pd.DataFrame(
        {
            "case_id": ["c0"] * 4,
            "rater_id": ["r0", "r0", "r1", "r1"],
            "arm": ["X", "Y", "X", "Y"],
            "dimension": ["clarity"] * 4,
            "score": [4.0, 2.0, 3.0, 3.5],
        }
    )
    likert = adjudicated.item_contributions(
        pd.DataFrame(), ratings, ADJUDICATIONS.iloc[:1], ("likert", "clarity", "X", "Y")
    )
    assert likert == [pytest.approx((2.0 - 0.5) / 2)]


def test_the_sensitivity_analysis_is_the_primary_analysis_on_adjudicated_judgments() -> None:
    judgments = _judgments()
    frame = judgments.rename(columns={"rater_id": "rater"}).assign(arm_set="X | Y")
    changed = adjudicated.adjudicated_judgments(frame.assign(preferred_arm=""), ADJUDICATIONS)
    adjudicated_judgments = changed.rename(columns={"rater": "rater_id"})[judgments.columns]
    options = ReportOptions(primary=("preference", "Y", "X"), adjudication=True)
    report = build_report(
        StudyTables(
            judgments=judgments,
            adjudications=ADJUDICATIONS,
            adjudicated_judgments=adjudicated_judgments,
        ),
        options,
    )
    section = report["adjudication"]
    # c0 becomes Y for all three raters (1/2 -> 1), c1 a tie for all (c1: b, tie, a -> 1/2:
    # unchanged), c2 both unacceptable (no decisive judgment left: NaN).
    assert section["counts"] == {
        "triggered": 4, "pending": 1, "unassigned": 1, "done": 3, "in_primary": 3, "changed": 2,
    }  # fmt: skip
    assert [item["changed"] for item in section["items"]] == [True, False, True, False]
    assert section["triggers"][0] == {"trigger": "Decisive preferences disagree", "items": 3}
    rerun = build_report(
        StudyTables(judgments=adjudicated_judgments), ReportOptions(primary=options.primary)
    )["primary"]
    rerun.pop("model_based")
    assert section["sensitivity_primary"] == rerun
    assert section["sensitivity_primary"]["estimate"] != report["primary"]["estimate"]


def test_a_likert_primary_is_recomputed_on_the_adjudicated_scores() -> None:
    rows = [
        (f"c{i}", f"r{j}", arm, "clarity", float((i * 3 + j * 2 + (arm == "X")) % 5 + 1))
        for i in range(6)
        for j in range(3)
        for arm in ("X", "Y")
    ]
    ratings = pd.DataFrame(rows, columns=["case_id", "rater_id", "arm", "dimension", "score"])
    raw = ratings.assign(arm_set="X | Y")
    changed = adjudicated.adjudicated_ratings(raw, ADJUDICATIONS)[ratings.columns]
    # c0 takes X 1 and Y 5 for every rater; c1's adjudication gave no scores.
    assert set(changed[(changed["case_id"] == "c0")]["score"]) == {1.0, 5.0}
    assert changed[changed["case_id"] != "c0"].equals(ratings[ratings["case_id"] != "c0"])
    options = ReportOptions(primary=("likert", "clarity", "X", "Y"), adjudication=True)
    section = build_report(
        StudyTables(
            judgments=_judgments(),
            ratings=ratings,
            adjudications=ADJUDICATIONS,
            adjudicated_judgments=_judgments(),
            adjudicated_ratings=changed,
        ),
        options,
    )["adjudication"]
    c0 = [x - y for x, y in zip(ratings["score"][0:6:2], ratings["score"][1:6:2], strict=True)]
    assert section["items"][0]["raw"] == pytest.approx(float(np.mean(c0)))
    assert section["items"][0]["adjudicated"] == pytest.approx(-4.0)
    rerun = build_report(
        StudyTables(judgments=_judgments(), ratings=changed), ReportOptions(primary=options.primary)
    )["primary"]
    rerun.pop("model_based")
    assert section["sensitivity_primary"] == rerun


# --- Calibration ----------------------------------------------------------------------------

STUDIES = 1_000
CELLS = [(2, 6, 0.5, 1.0), (3, 20, 0.0, 0.0), (1, 6, 0.3, 0.5)]


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "-".join(map(str, c)))
def test_span_share_differences_are_calibrated_under_a_crossed_null(
    cell: tuple[int, int, float, float],
) -> None:
    per_item, raters, taste, case = cell
    shape = sim.StudyShape(cases=60, raters=raters, raters_per_item=per_item)
    heterogeneity = sim.Heterogeneity(rater_taste=taste, case_effect=case)
    studies = sim.simulate_studies(shape, heterogeneity, studies=STUDIES, seed=per_item + raters)
    counts, words = spans.simulated_spans(studies, heterogeneity, {}, seed=raters)
    rates, differences = spans.simulated_share_differences(studies, counts)
    density = spans.simulated_rates(studies, counts, words)
    rejection = float(differences.rejects().mean())
    share = float(rates.covers(spans.true_marked_share(heterogeneity, 2.0)).mean())
    dense = float(density.covers(spans.true_per_thousand(heterogeneity, 2.0)).mean())
    print(f"{cell}: rejection {rejection:.3f}, share coverage {share:.3f}, density {dense:.3f}")
    low, high = (0.02, 0.08) if raters <= 6 else (0.03, 0.07)
    assert low <= rejection <= high
    assert 0.93 <= float(differences.covers(0.0).mean()) <= 0.97
    assert 0.93 <= share <= 0.97
    # Per 1,000 words: right-skewed counts; near nominal unless case effects are very large.
    assert (0.93 if case <= 0.5 else 0.90) <= dense <= 0.97


def test_the_batched_span_estimators_are_the_ones_the_report_runs() -> None:
    shape = sim.StudyShape(cases=20, raters=6, raters_per_item=2)
    heterogeneity = sim.Heterogeneity(0.4, 0.6)
    studies = sim.simulate_studies(shape, heterogeneity, studies=3, seed=4)
    counts, words = spans.simulated_spans(studies, heterogeneity, {"A": 3.0}, seed=5)
    rates, differences = spans.simulated_share_differences(studies, counts)
    density = spans.simulated_rates(studies, counts, words)
    names = np.array(shape.arms, dtype=object)
    for study in range(3):
        rows = studies.response_study == study
        units = pd.DataFrame(
            {
                "case_id": studies.response_case[rows],
                "rater_id": studies.response_rater[rows],
                "arm": names[studies.response_arm[rows]],
                "words": words[rows],
                "showings": 1,
            }
        )
        marked = [
            (case, rater, arm, "factual_error", "minor", 0, 1)
            for case, rater, arm, n in zip(
                units["case_id"], units["rater_id"], units["arm"], counts[rows], strict=True
            )
            for _ in range(int(n))
        ]
        section = spans.span_report(spans_of(marked), units, OPTIONS, HOLM)
        pairs = section["pairwise"]
        pairs = pairs[pairs["key"] == "any"]  # type: ignore[index]
        assert np.allclose(pairs["difference"], differences.estimate[study])
        assert np.allclose(pairs["difference_low"], differences.low[study])
        assert np.allclose(pairs["difference_p_value"], differences.p_value[study])
        shares = section["shares"]
        shares = shares[shares["scope"] == "any"]  # type: ignore[index]
        assert np.allclose(shares["rate_low"], rates.low[study])
        per_words = section["per_1000_words"]
        per_words = per_words[per_words["key"] == "any"]  # type: ignore[index]
        assert np.allclose(per_words["rate"], density.estimate[study])
        assert np.allclose(per_words["rate_high"], density.high[study])
    assert clustered.ESTIMATOR in section["estimator"]  # type: ignore[operator]
