"""Writes the data the R reference fits use (run once; the CSVs are committed).

    .venv/bin/python tests/unit/reference/make_mixed_data.py

One simulated study with rater taste and case effects (80 cases, 12 physicians, 2 per item):
``likert.csv`` has the paired score difference A - B per (case, rater) and the two scores in
long form; ``preference.csv`` the decisive judgments of A vs B (1: A preferred).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from clinic_eval.statistics import crossed_simulation as sim

HERE = Path(__file__).resolve().parent


def main() -> None:
    shape = sim.StudyShape(cases=80, raters=12, raters_per_item=2)
    heterogeneity = sim.Heterogeneity(rater_taste=0.4, case_effect=0.8)
    effects = sim.Effects(strength={"A": 0.3}, likert={"A": 0.3})
    study = sim.simulate_studies(shape, heterogeneity, effects, studies=1, seed=20261203)
    decisive = (study.pair == 0) & (study.outcome <= 1)
    with (HERE / "preference.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "rater", "a_won"])
        for case, rater, outcome in zip(
            study.case[decisive], study.rater[decisive], study.outcome[decisive], strict=True
        ):
            writer.writerow([f"c{case:03d}", f"r{rater:02d}", int(outcome == 0)])
    scores = {}
    for case, rater, arm, score in zip(
        study.response_case,
        study.response_rater,
        study.response_arm,
        study.scores[:, 0],
        strict=True,
    ):
        scores[(case, rater, arm)] = int(score)
    with (HERE / "likert.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "rater", "score_a", "score_b", "difference"])
        for (case, rater, arm), score in sorted(scores.items()):
            if arm == 0 and (case, rater, 1) in scores:
                other = scores[(case, rater, 1)]
                writer.writerow([f"c{case:03d}", f"r{rater:02d}", score, other, score - other])
    print("wrote", HERE / "preference.csv", HERE / "likert.csv", np.count_nonzero(decisive))


if __name__ == "__main__":
    main()
