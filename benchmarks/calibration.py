"""Calibration table of the primary analyses and the per-judgment tests they replace.

    .venv/bin/python benchmarks/calibration.py [--studies 4000] [--cases 60]

For each cell of the null grid (raters per item 1-3, 6 or 20 physicians, rater taste SD 0 or
0.5 per arm, case effect SD 0 or 1 per arm; three arms, ties and "both unacceptable" present)
it simulates ``--studies`` studies in which no arm differs in the population of physicians and
cases, and prints the share of tests rejecting at alpha = 0.05 and the share of 95% intervals
covering the truth: for the clustered preference share, tie-as-half rate, Likert mean difference
and net benefit, hallucination difference, hallucination rate and win rate, beside the naive
sign test. Spans (``statistics.spans``): each rated response gets Poisson(words / 1000 x 2 x
exp(taste + case effect)) span marks, with the same rater taste and case effect SDs; the
columns give the rejection rate of the difference in the share of marked responses (the
family "Spans") and, beside the other intervals' coverage, the coverage of the marked share
and of spans per 1,000 words (``dens``). Then power with no heterogeneity for a planted effect,
clustered beside naive.
Numbers are measured, not asserted; ``tests/unit/test_stats_calibration.py`` asserts the bands.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clinic_eval.statistics import crossed_simulation as sim
from clinic_eval.statistics import spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4000)
    parser.add_argument("--cases", type=int, default=60)
    args = parser.parse_args()
    started = time.perf_counter()
    header = (
        f"{'per item':>8} {'raters':>6} {'taste':>5} {'case':>4} | "
        f"{'pref':>5} {'tie½':>5} {'Δlik':>5} {'netb':>5} {'Δhal':>5} {'Δspan':>5} | "
        f"{'cov min':>7} {'cov max':>7} {'dens':>5} | {'naive sign':>10}"
    )
    print(
        f"rejection at alpha 0.05 and 95% coverage; {args.studies} null studies per cell, "
        f"{args.cases} cases each"
    )
    print(header)
    for per_item in (1, 2, 3):
        for raters in (6, 20):
            for taste, case in ((0.0, 0.0), (0.5, 0.0), (0.0, 1.0), (0.5, 1.0)):
                shape = sim.StudyShape(cases=args.cases, raters=raters, raters_per_item=per_item)
                heterogeneity = sim.Heterogeneity(rater_taste=taste, case_effect=case)
                studies = sim.simulate_studies(
                    shape, heterogeneity, studies=args.studies, seed=per_item * 100 + raters
                )
                counts, words = spans.simulated_spans(studies, heterogeneity, {}, seed=raters)
                span_rates, span_differences = spans.simulated_share_differences(studies, counts)
                tests = [
                    (sim.preference_shares(studies), 0.5),
                    (sim.tie_half_shares(studies), 0.5),
                    (sim.likert_differences(studies), 0.0),
                    (sim.likert_differences(studies, ordinal=True), 0.0),
                    (sim.hallucination_differences(studies), 0.0),
                    (span_differences, 0.0),
                ]
                rejections = [float(result.rejects().mean()) for result, _ in tests]
                coverage = [float(result.covers(null).mean()) for result, null in tests]
                coverage.append(
                    float(
                        sim.hallucination_rates(studies)
                        .covers(sim.true_hallucination_rate(heterogeneity, 0.08))
                        .mean()
                    )
                )
                coverage.append(
                    float(
                        sim.win_rates(studies)
                        .covers(sim.true_win_rate(shape, heterogeneity))
                        .mean()
                    )
                )
                coverage.append(
                    float(span_rates.covers(spans.true_marked_share(heterogeneity, 2.0)).mean())
                )
                density = float(
                    spans.simulated_rates(studies, counts, words)
                    .covers(spans.true_per_thousand(heterogeneity, 2.0))
                    .mean()
                )
                naive = float((sim.sign_test_p(studies) < 0.05).mean())
                print(
                    f"{per_item:>8} {raters:>6} {taste:>5} {case:>4} | "
                    + " ".join(f"{r:>5.3f}" for r in rejections)
                    + f" | {min(coverage):>7.3f} {max(coverage):>7.3f} {density:>5.3f}"
                    + f" | {naive:>10.3f}"
                )
    print("\npower with no heterogeneity (20 physicians, 2 per item), clustered vs naive sign test")
    shape = sim.StudyShape(cases=args.cases, raters=20, raters_per_item=2)
    for strength in (0.2, 0.35, 0.5):
        studies = sim.simulate_studies(
            shape,
            sim.Heterogeneity(),
            sim.Effects(strength={"A": strength}),
            studies=args.studies,
            seed=5,
        )
        clustered = float(sim.preference_shares(studies).rejects()[:, :2].mean())
        naive = float((sim.sign_test_p(studies)[:, :2] < 0.05).mean())
        print(f"  strength difference {strength}: clustered {clustered:.3f}, naive {naive:.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
