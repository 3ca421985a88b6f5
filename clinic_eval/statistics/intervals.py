"""The interval type every statistic returns, and the Wilson interval for proportions."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan)


def z_value(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion.

    Chosen over the Wald interval because study cells are small and shares are often near 0 or
    1 (hallucination rates), where Wald collapses to zero width (Newcombe 1998, Stat Med
    17:857). With ``n == 0`` there is no information: the estimate is nan and the interval is
    the whole of ``[0, 1]``. ``successes`` may be fractional (the tie-as-half rates use it).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = z_value(confidence)
    if n == 0:
        return Interval(math.nan, 0.0, 1.0)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # Clipping only removes floating-point overshoot; mathematically the bounds lie in [0, 1].
    return Interval(float(p), max(0.0, centre - half), min(1.0, centre + half))
