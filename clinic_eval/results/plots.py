"""Server-rendered plots for the results page: report dict (and ratings) in, SVG text out.

Pure functions with no database access. Each returns ``None`` when the report lacks what the
plot needs, so the page can say "not available" instead of drawing an empty frame. Figures are
built with ``matplotlib.figure.Figure`` rather than pyplot, so nothing is registered in a global
figure manager (safe under threaded servers, nothing to leak); the SVG is deterministic (fixed
hash salt, no date) and, being matplotlib's, holds no scripts.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, cast

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colors, ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

plt.rcParams["svg.hashsalt"] = "clinic-eval"
P = ParamSpec("P")

# Applied around every render so a caller's rcParams cannot change the bytes we produce.
STYLE: dict[RcKeyType, Any] = {
    "svg.hashsalt": "clinic-eval",
    "svg.fonttype": "path",  # glyphs as paths: the image needs no fonts in the browser
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#5b6676",
    "axes.labelcolor": "#1b2430",
    "text.color": "#1b2430",
    "xtick.color": "#5b6676",
    "ytick.color": "#1b2430",
    "grid.color": "#d8dee6",
    "grid.linewidth": 0.6,
}
INK = "#1b2430"
MUTED = "#5b6676"
ACCENT = "#1f5fa8"
BAD = "#b3261e"
# Inches. Shown at natural size (1 pt = 1.33 CSS px) and scaled down only to fit its column:
# the forest plot spans the page, the others half of it.
WIDTH = 5.6
WIDE = 8.5
# Lowest to highest score: red through grey to blue, readable in grayscale as light-dark-light.
LIKERT_COLOURS = ("#b3261e", "#e8918a", "#c9ced6", "#8fb3de", "#1f5fa8")


def svg_data_uri(svg: str | None) -> str | None:
    """An SVG as an ``img`` source that the content security policy allows."""
    if svg is None:
        return None
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _styled(plot: Callable[P, str | None]) -> Callable[P, str | None]:
    """Build and save the whole figure under STYLE: rcParams are read at creation and at save."""

    @functools.wraps(plot)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> str | None:
        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)

    return wrapper


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    fig.clear()
    return buffer.getvalue()


def _figure(height: float, width: float = WIDTH) -> Figure:
    return Figure(figsize=(width, height))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def likert_levels(scores: pd.Series) -> list[int]:
    """Every point of the scale between the lowest and highest score seen, gaps included."""
    low, high = int(scores.min()), int(scores.max())
    return list(range(low, high + 1))


def accuracy_by_arm(
    report: Mapping[str, Any], layer: str | None = None
) -> tuple[str, str, dict[str, dict[str, Any]]] | None:
    """(layer, title, {arm: the layer's all-strata row}) for one decision layer, or None.

    Without ``layer`` the first layer in the report is used (the study's main decision).
    """
    rows = [r for r in report.get("accuracy") or [] if r.get("stratum") == "all"]
    if not rows:
        return None
    layer = layer or rows[0]["layer"]
    chosen = [r for r in rows if r["layer"] == layer]
    if not chosen:
        return None
    title = chosen[0].get("title") or layer
    return layer, title, {r["arm"]: r for r in chosen}


def preference_by_arm(report: Mapping[str, Any]) -> dict[str, tuple[float, float, float]]:
    """{arm: (win rate, low, high)} for arms with a defined win rate."""
    out = {}
    preference = report.get("preference") or {}
    rows = (preference.get("clustered") or {}).get("win_rates") or preference.get("win_rates")
    for row in rows or []:
        estimate = _number(row.get("win_rate"))
        if estimate is not None:
            out[row["arm"]] = (
                estimate,
                _number(row.get("win_rate_low")) or estimate,
                _number(row.get("win_rate_high")) or estimate,
            )
    return out


def bt_strengths(report: Mapping[str, Any]) -> dict[str, tuple[float, float, float]]:
    """{arm: (log-strength, low, high)}; empty when the fit was not estimable."""
    fit = (report.get("preference") or {}).get("bradley_terry") or {}
    out = {}
    for arm, interval in (fit.get("strengths") or {}).items():
        estimate = _number(interval.get("estimate"))
        if estimate is not None:
            low, high = _number(interval.get("low")), _number(interval.get("high"))
            out[arm] = (
                estimate,
                estimate if low is None else low,
                estimate if high is None else high,
            )
    return out


def _forest_panel(
    ax: Any,
    rows: Sequence[tuple[str, float, float | None, float | None, bool]],
    title: str,
    xlabel: str,
    limits: tuple[float, float],
) -> None:
    # First row at the top, as read.
    positions = list(range(len(rows)))[::-1]
    for y, (_, estimate, low, high, significant) in zip(positions, rows, strict=True):
        colour = ACCENT if significant else MUTED
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color=colour, linewidth=1.6, solid_capstyle="butt")
        ax.plot(
            [estimate],
            [y],
            marker="D" if significant else "o",
            markersize=6,
            color=colour,
            markerfacecolor=colour if significant else "white",
            markeredgewidth=1.4,
            linestyle="none",
        )
    ax.axvline(0, color=INK, linewidth=0.8)
    ax.set_yticks(positions, [row[0] + (" *" if row[4] else "") for row in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(*limits)
    ax.set_xticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.grid(axis="x")
    ax.set_axisbelow(True)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)


@_styled
def forest_plot(report: Mapping[str, Any]) -> str | None:
    """Pairwise effects with 95% clustered intervals: preference, then Likert per dimension.

    Preference: (wins − losses) / decisive judgments of the first arm against the second,
    2·p − 1 for the clustered decisive share p; Likert: the net benefit, P(first scored higher)
    − P(second scored higher), the ordinal view (positive: first arm rated higher). Both lie in
    [−1, 1] and carry the two-way cluster-robust interval. Filled diamonds and an asterisk mark
    pairs significant after the report's multiplicity correction.
    """
    alpha = float((report.get("options") or {}).get("alpha", 0.05))
    preference_rows = []
    preference = report.get("preference") or {}
    for row in (preference.get("clustered") or {}).get("pairwise") or []:
        share = _number(row.get("share_1"))
        if share is None:
            continue
        low, high = _number(row.get("share_1_low")), _number(row.get("share_1_high"))
        adjusted = _number(row.get("share_1_p_adjusted"))
        preference_rows.append(
            (
                f"{row['arm_1']} vs {row['arm_2']}",
                2 * share - 1,
                None if low is None else 2 * low - 1,
                None if high is None else 2 * high - 1,
                adjusted is not None and adjusted < alpha,
            )
        )
    likert_rows = []
    for row in (report.get("likert") or {}).get("clustered") or []:
        effect = _number(row.get("net_benefit"))
        if effect is None:
            continue
        adjusted = _number(row.get("net_benefit_p_adjusted"))
        likert_rows.append(
            (
                f"{row['dimension'].replace('_', ' ')}: {row['arm_a']} vs {row['arm_b']}",
                effect,
                _number(row.get("net_benefit_low")),
                _number(row.get("net_benefit_high")),
                adjusted is not None and adjusted < alpha,
            )
        )
    panels = [
        (
            rows,
            title,
            xlabel,
        )
        for rows, title, xlabel in (
            (
                preference_rows,
                "Pairwise preference",
                "(wins − losses) / decisive judgments, first arm vs second",
            ),
            (
                likert_rows,
                "Likert ratings",
                "net benefit: P(first higher) − P(second higher)",
            ),
        )
        if rows
    ]
    if not panels:
        return None
    heights = [len(rows) + 1.6 for rows, _, _ in panels]
    fig = _figure(0.26 * sum(heights) + 0.4, WIDE)
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (rows, title, xlabel) in zip(axes[:, 0], panels, strict=True):
        _forest_panel(ax, rows, title, xlabel, (-1.0, 1.0))
    fig.text(
        0.0,
        0.0,
        "Bars: 95% intervals clustered by case and rater. Filled diamond and *: significant "
        "after correction "
        f"({(report.get('options') or {}).get('correction', 'holm')}, α = {alpha:g}).",
        color=MUTED,
        fontsize=8,
        transform=fig.transFigure,
        va="top",
    )
    fig.tight_layout()
    return _svg(fig)


@_styled
def likert_distribution_plot(ratings: pd.DataFrame | None) -> str | None:
    """Stacked bars of score shares per arm, one panel per Likert dimension."""
    if ratings is None or ratings.empty:
        return None
    if not {"arm", "dimension", "score"} <= set(ratings.columns):
        return None
    scores = ratings.dropna(subset=["score"])
    if scores.empty:
        return None
    levels = likert_levels(scores["score"])
    dimensions = sorted(scores["dimension"].astype(str).unique())
    arms = sorted(scores["arm"].astype(str).unique())
    counts = (
        scores.assign(
            arm=scores["arm"].astype(str),
            dimension=scores["dimension"].astype(str),
            score=scores["score"].astype(int),
        )
        .groupby(["dimension", "arm", "score"])
        .size()
    )
    colours = _likert_colours(len(levels))
    per_panel = 0.32 * len(arms) + 0.7
    fig = _figure(per_panel * len(dimensions) + 0.5)
    axes = fig.subplots(len(dimensions), 1, squeeze=False)
    for ax, dimension in zip(axes[:, 0], dimensions, strict=True):
        # A lookup by the first level of the MultiIndex gives the Series of the other two.
        panel = cast(pd.Series, counts.get(dimension, pd.Series(dtype=float)))
        table = panel.unstack("score", fill_value=0).reindex(
            index=arms, columns=levels, fill_value=0
        )
        totals = table.sum(axis=1).replace(0, 1)
        shares = table.div(totals, axis=0)
        positions = list(range(len(arms)))[::-1]
        left = pd.Series(0.0, index=arms)
        for level, colour in zip(levels, colours, strict=True):
            ax.barh(
                positions,
                shares[level].to_numpy(),
                left=left.to_numpy(),
                color=colour,
                edgecolor="white",
                linewidth=0.6,
                height=0.7,
                label=str(level),
            )
            left += shares[level]
        ax.set_yticks(positions, [f"{arm} (n={int(table.loc[arm].sum())})" for arm in arms])
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        ax.set_title(dimension.replace("_", " ").capitalize(), loc="left")
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
    axes[0, 0].legend(
        title="score",
        ncols=len(levels),
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        fontsize=8,
        title_fontsize=8,
        handlelength=1.2,
        columnspacing=0.8,
    )
    fig.tight_layout()
    return _svg(fig)


def _likert_colours(count: int) -> list[str]:
    if count == len(LIKERT_COLOURS):
        return list(LIKERT_COLOURS)
    cmap = matplotlib.colormaps["RdBu"]
    return [colors.to_hex(cmap(0.1 + 0.8 * i / max(1, count - 1))) for i in range(count)]


@_styled
def power_curve_plot(curve: Sequence[Mapping[str, Any]], target: float = 0.8) -> str | None:
    """Power of the primary analysis against the number of cases, with Monte Carlo error bars
    and the target power as a dotted line (the planner's small plot)."""
    points = sorted(
        (row["cases"], row["power"], row.get("mc_error") or 0.0)
        for row in curve
        if _number(row.get("power")) is not None
    )
    if len(points) < 2:
        return None
    fig = _figure(2.2)
    ax = fig.subplots()
    cases = [p[0] for p in points]
    ax.errorbar(
        cases,
        [p[1] for p in points],
        yerr=[1.96 * p[2] for p in points],
        color=ACCENT,
        marker="o",
        markersize=4,
        linewidth=1.4,
        capsize=2,
    )
    ax.axhline(target, color=MUTED, linewidth=0.8, linestyle=":")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set_xlabel("cases (same physicians and raters per item)")
    ax.set_ylabel("power")
    ax.grid(axis="y")
    ax.set_axisbelow(True)
    fig.tight_layout()
    return _svg(fig)


@_styled
def bradley_terry_plot(report: Mapping[str, Any]) -> str | None:
    """Bradley-Terry log-strengths per arm with their two-way bootstrap intervals."""
    strengths = bt_strengths(report)
    if len(strengths) < 2:
        return None
    order = sorted(strengths, key=lambda arm: (-strengths[arm][0], arm))
    positions = list(range(len(order)))[::-1]
    fig = _figure(0.35 * len(order) + 1.1)
    ax = fig.subplots()
    for y, arm in zip(positions, order, strict=True):
        estimate, low, high = strengths[arm]
        ax.plot([low, high], [y, y], color=ACCENT, linewidth=1.8, solid_capstyle="butt")
        ax.plot([estimate], [y], marker="o", markersize=6, color=ACCENT, linestyle="none")
    ax.axvline(0, color=MUTED, linewidth=0.8, linestyle=":")
    ax.set_yticks(positions, order)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.set_xlabel("log-strength (Bradley-Terry, Davidson ties); bars: two-way bootstrap interval")
    ax.grid(axis="x")
    ax.set_axisbelow(True)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    fig.tight_layout()
    return _svg(fig)


def _error_bar(value: float, low: float, high: float) -> list[list[float]]:
    # An interval that does not cover its estimate (hand-edited data, rounding) must not crash.
    return [[max(0.0, value - low)], [max(0.0, high - value)]]


@_styled
def accuracy_preference_plot(
    report: Mapping[str, Any],
    *,
    layer: str | None = None,
    x: str = "accuracy",
    y: str = "win_rate",
) -> str | None:
    """Automatic accuracy (or macro-F1) against clinician preference, one labelled point per arm.

    ``x`` is "accuracy" or "macro_f1"; ``y`` is "win_rate" or "bt_strength". When the most
    accurate arm is not the most preferred, both are ringed and the title says so.
    """
    found = accuracy_by_arm(report, layer)
    if found is None:
        return None
    _, title, rows = found
    preferred = preference_by_arm(report) if y == "win_rate" else bt_strengths(report)
    points = {}
    for arm, row in rows.items():
        value = _number(row.get(x))
        if value is not None and arm in preferred:
            low, high = (
                (_number(row.get("ci_low")), _number(row.get("ci_high")))
                if x == "accuracy"
                else (None, None)
            )
            points[arm] = (value, low, high, *preferred[arm])
    if len(points) < 2:
        return None
    most_accurate = max(points, key=lambda arm: (points[arm][0], arm))
    most_preferred = max(points, key=lambda arm: (points[arm][3], arm))
    paradox = most_accurate != most_preferred
    fig = _figure(4.2)
    ax = fig.subplots()
    for arm in sorted(points):
        value, low, high, pref, pref_low, pref_high = points[arm]
        ax.errorbar(
            [value],
            [pref],
            xerr=None if low is None or high is None else _error_bar(value, low, high),
            yerr=_error_bar(pref, pref_low, pref_high),
            fmt="o",
            color=ACCENT,
            ecolor="#8fb3de",
            elinewidth=1.2,
            markersize=6,
        )
        if paradox and arm in (most_accurate, most_preferred):
            ax.plot(
                [value],
                [pref],
                marker="o",
                markersize=13,
                markerfacecolor="none",
                markeredgecolor=BAD,
                markeredgewidth=1.4,
                linestyle="none",
            )
        ax.annotate(arm, (value, pref), xytext=(8, 6), textcoords="offset points", fontsize=9)
    ax.margins(x=0.25, y=0.25)
    ax.set_xlabel(f"{'accuracy' if x == 'accuracy' else 'macro-F1'}: {title}")
    ax.set_ylabel("win rate (strict)" if y == "win_rate" else "Bradley-Terry log-strength")
    if x == "accuracy":
        ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    if y == "win_rate":
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    if paradox:
        ax.set_title(
            f"Most accurate ({most_accurate}) is not the most preferred ({most_preferred})",
            loc="left",
            color=BAD,
        )
    ax.grid(True)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return _svg(fig)
