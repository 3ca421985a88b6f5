"""The cells of the results page: numbers, estimates and p-values as the templates show them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

SENSITIVITY = "Sensitivity: conditional on these raters and cases (each judgment independent)"


def as_number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


@dataclass(frozen=True)
class Estimate:
    """A point estimate with an optional interval; ``str()`` is what the page shows."""

    estimate: float
    low: float | None = None
    high: float | None = None
    percent: bool = False
    digits: int = 2

    def _format(self, value: float) -> str:
        if self.percent:
            return f"{100 * value:.1f}%"
        return f"{value:.{self.digits}f}"

    @property
    def text(self) -> str:
        return self._format(self.estimate)

    @property
    def interval(self) -> str:
        if self.low is None or self.high is None:
            return ""
        return f"{self._format(self.low)} to {self._format(self.high)}"

    @property
    def html(self) -> SafeString:
        """The estimate, then its interval on a line of its own: keeps table columns narrow."""
        interval = self.interval
        if not interval:
            return format_html("{}", self.text)
        return format_html('{} <span class="ci">{}</span>', self.text, interval)

    def __str__(self) -> str:
        interval = self.interval
        return f"{self.text} ({interval})" if interval else self.text


def estimate_cell(
    value: Any, low: Any = None, high: Any = None, *, percent: bool = False, digits: int = 2
) -> Estimate | None:
    number = as_number(value)
    if number is None:
        return None
    return Estimate(number, as_number(low), as_number(high), percent=percent, digits=digits)


@dataclass(frozen=True)
class PValue:
    value: float

    def __str__(self) -> str:
        if self.value < 0.001:
            return "< 0.001"
        return f"{self.value:.3f}"

    @property
    def equation(self) -> str:
        """For running text: "p < 0.001" or "p = 0.012"."""
        text = str(self)
        return f"p {text}" if text.startswith("<") else f"p = {text}"


def p_value_cell(value: Any) -> PValue | None:
    number = as_number(value)
    return None if number is None else PValue(number)


def is_significant(p_adjusted: Any, alpha: float) -> bool:
    number = as_number(p_adjusted)
    return number is not None and number < alpha


def display_label(name: str) -> str:
    return name.replace("_", " ").capitalize()
