"""Pure statistics for study results: arrays and DataFrames in, dataclasses out, no ORM.

- ``intervals``: the ``Interval`` every function returns, and Wilson intervals.
- ``preference``: win rates, sign tests, best-of-N shares, Bradley-Terry (Davidson ties) with
  bootstrap intervals, position bias and length preference.
- ``paired``: Wilcoxon signed-rank per arm pair and dimension with effect sizes, Friedman,
  Holm / Benjamini-Hochberg, hallucination rates and exact McNemar.
- ``agreement``: Krippendorff's alpha, Fleiss' and Cohen's kappa, intra-rater consistency.
- ``accuracy``: automatic metrics against ground truth per decision layer and stratum.
"""
