"""The HTML report's plots: matplotlib figures written as inline SVG (no JavaScript, no network).

matplotlib is imported only here and only when a plot is drawn (`costguard report --html`), so
the CLI's start-up never pays for it. Figures are built on `matplotlib.figure.Figure` (no pyplot:
no global state, no GUI backend). Text stays text in the SVG (`svg.fonttype: none`: small files,
the browser's fonts) and is never parsed as mathtext (fixture names may hold `$`). Every function
takes figures already in the report and draws them; none computes a new number.

Estimated figures are drawn hatched (bars) or hollow (points), with a legend entry saying so.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

HEAD = "#3b6fb6"
BASE = "#a9b7c9"
UP = "#c0392b"
DOWN = "#2e8b57"
PALETTE = ["#3b6fb6", "#e0812f", "#3a9a5b", "#b8483f", "#7f5fb0", "#8c6d4f", "#d36fb0", "#6f6f6f"]
HATCH = "///"
EST_LABEL = "hatched: estimated"

_RC: dict[Any, Any] = {  # matplotlib rcParams (its stubs type the keys as a Literal of every name)
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "hatch.linewidth": 0.8,
    "hatch.color": "white",
}


@contextmanager
def _style(salt: str) -> Any:
    import matplotlib

    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"costguard-{salt}"}):
        yield


def figure(width: float = 7.0, height: float = 3.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any, salt: str) -> str:
    """The figure as an `<svg>` element to inline (XML prolog and DOCTYPE dropped)."""
    buf = io.StringIO()
    with _style(salt):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    # ids must be unique in the HTML document: prefix matplotlib's (clip paths, glyphs, hatches)
    return re.sub(r'(id="|url\(#|href="#)', lambda m: m.group(1) + f"{salt}-", svg)


def draw(salt: str, build: Any, width: float = 7.0, height: float = 3.0) -> str:
    """Build a figure with `build(fig)` under the report's style and return its SVG."""
    with _style(salt):
        fig = figure(width, height)
        build(fig)
        return to_svg(fig, salt)


def on_axes(salt: str, build: Callable[[Any], None], height: float, width: float = 7.0) -> str:
    """`draw` on one axes: `build(ax)` plots on it."""
    return draw(salt, lambda fig: build(fig.add_subplot()), width, height)


def _frame(
    ax: Any, title: str, *, x: str | None = None, y: str | None = None, legend: str | None = None
) -> None:
    """The axes' title, axis labels and legend (at `legend`, a matplotlib `loc`), where given."""
    if x is not None:
        ax.set_xlabel(x)
    if y is not None:
        ax.set_ylabel(y)
    ax.set_title(title)
    if legend is not None:
        ax.legend(loc=legend)


def _money(value: float) -> str:
    return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.4f}"


def _est_legend(ax: Any, extra: Sequence[Any] = ()) -> None:
    from matplotlib.patches import Patch

    handles = [*extra, Patch(facecolor="#999999", hatch=HATCH, label=EST_LABEL)]
    ax.legend(handles=handles, loc="best")


def bars(
    salt: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], Sequence[bool], str]],
    *,
    unit: str = "$/month",
    fmt: Any = _money,
    xlim: tuple[float, float] | None = None,
) -> str:
    """Horizontal bars, one group per label, one bar per series (name, values, estimated, colour).

    A None value draws no bar and says "—". Estimated values are hatched and starred.
    """

    def build(ax: Any) -> None:
        from matplotlib.patches import Patch

        n = len(series)
        height = 0.8 / max(n, 1)
        any_est = False
        biggest = max(
            [abs(v) for _, values, _, _ in series for v in values if v is not None] or [1.0]
        )
        for k, (_name, values, estimated, colour) in enumerate(series):
            for i, (value, est) in enumerate(zip(values, estimated, strict=True)):
                y = i + (k - (n - 1) / 2) * height
                if value is None:
                    ax.text(0, y, " —", va="center", fontsize=8, color="#666666")
                    continue
                ax.barh(
                    y,
                    value,
                    height=height * 0.92,
                    color=colour,
                    hatch=HATCH if est else None,
                    edgecolor="white" if est else colour,
                    linewidth=0,
                )
                any_est = any_est or est
                ax.text(
                    value + biggest * 0.01 * (1 if value >= 0 else -1),
                    y,
                    fmt(value) + ("*" if est else ""),
                    va="center",
                    ha="left" if value >= 0 else "right",
                    fontsize=8,
                )
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.invert_yaxis()
        _frame(ax, title, x=unit)
        if xlim is not None:
            ax.set_xlim(*xlim)
        else:
            ax.set_xlim(min(0, *[v for _, vs, _, _ in series for v in vs if v is not None]) * 1.25,
                        biggest * 1.3)  # fmt: skip
        ax.axvline(0, color="#444444", linewidth=0.8)
        handles = [Patch(facecolor=c, label=name) for name, _, _, c in series] if n > 1 else []
        if any_est:
            _est_legend(ax, handles)
        elif handles:
            ax.legend(handles=handles, loc="best")

    return on_axes(salt, build, max(1.6, 0.45 * len(labels) * max(1, len(series)) ** 0.6 + 1.0))


def diverging(
    salt: str, title: str, labels: Sequence[str], deltas: Sequence[float], estimated: Sequence[bool]
) -> str:
    """Changes as bars right (increase, red) or left (decrease, green) of zero."""

    def build(ax: Any) -> None:
        biggest = max([abs(d) for d in deltas] or [1.0]) or 1.0
        for i, (d, est) in enumerate(zip(deltas, estimated, strict=True)):
            colour = UP if d > 0 else DOWN
            ax.barh(i, d, color=colour, hatch=HATCH if est else None, linewidth=0, height=0.7)
            sign = "+" if d > 0 else "−" if d < 0 else "±"
            ax.text(
                d + biggest * 0.02 * (1 if d >= 0 else -1),
                i,
                f"{sign}{_money(abs(d))}" + ("*" if est else ""),
                va="center",
                ha="left" if d >= 0 else "right",
                fontsize=8,
            )
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.invert_yaxis()
        ax.axvline(0, color="#444444", linewidth=0.8)
        ax.set_xlim(-biggest * 1.45, biggest * 1.45)
        _frame(ax, title, x="Δ $/month (head − base)")
        if any(estimated):
            _est_legend(ax)

    return on_axes(salt, build, max(1.8, 0.32 * len(labels) + 1.0))


def score_histogram(
    salt: str,
    scores_by_label: dict[str, list[float]],
    thresholds: Sequence[tuple[float, str]],
    default_tier: str | None,
    score_range: tuple[float, float] | None,
    *,
    unit: str = "router score",
) -> str:
    """One histogram per label (overlaid steps), the thresholds as vertical lines named by tier."""

    def build(ax: Any) -> None:
        values = [s for v in scores_by_label.values() for s in v]
        lo, hi = score_range if score_range else (min(values), max(values))
        if hi <= lo:
            hi = lo + 1.0
        bins = [lo + (hi - lo) * i / 40 for i in range(41)]
        for k, (label, scores) in enumerate(sorted(scores_by_label.items())):
            colour = PALETTE[k % len(PALETTE)]
            ax.hist(scores, bins=bins, histtype="stepfilled", alpha=0.25, color=colour)
            ax.hist(scores, bins=bins, histtype="step", linewidth=1.4, color=colour,
                    label=f"{label} ({len(scores)})")  # fmt: skip
        top = ax.get_ylim()[1]
        previous = lo
        for cut, tier in thresholds:
            ax.axvline(cut, color="#222222", linestyle="--", linewidth=1)
            ax.text(
                (previous + cut) / 2, top * 0.97, f"→ {tier}", ha="center", va="top", fontsize=8
            )
            ax.text(cut, top * 0.80, f" {cut:g}", ha="left", va="top", fontsize=8, color="#222222")
            previous = cut
        if default_tier:
            ax.text((previous + hi) / 2, top * 0.97, f"→ {default_tier}", ha="center", va="top",
                    fontsize=8)  # fmt: skip
        ax.set_xlim(lo, hi)
        _frame(ax, "Router scores per fixture label, thresholds dashed", x=unit, y="fixtures")
        ax.legend(title="label (fixtures)", loc="upper right", bbox_to_anchor=(1.0, 0.75))

    return on_axes(salt, build, 3.2)


def share_groups(
    salt: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], str]],
) -> str:
    """Vertical grouped bars of shares (0..1) per category, one bar per series."""

    def build(ax: Any) -> None:
        n = len(series)
        width = 0.8 / max(n, 1)
        for k, (name, values, colour) in enumerate(series):
            for i, value in enumerate(values):
                x = i + (k - (n - 1) / 2) * width
                if value is None:
                    continue
                ax.bar(x, 100 * value, width=width * 0.92, color=colour,
                       label=name if i == next(j for j, v in enumerate(values) if v is not None) else None)  # fmt: skip
                ax.text(x, 100 * value + 1, f"{100 * value:.1f}%", ha="center", va="bottom",
                        fontsize=7)  # fmt: skip
        ax.set_xticks(range(len(categories)), labels=list(categories))
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1] * 1.1))
        _frame(ax, title, y="% of requests", legend="upper right")

    return on_axes(salt, build, 2.8)


def pgr_sweep(
    salt: str, curves: Sequence[tuple[str, Sequence[tuple[float, float]], str]], estimated: bool
) -> str:
    """PGR against the strong tier's share for each router (RouteLLM's threshold sweep)."""

    def build(ax: Any) -> None:
        for name, points, colour in curves:
            xs = [100 * x for x, _ in points]
            ys = [100 * y for _, y in points]
            ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=name,
                    linestyle="--" if estimated else "-")  # fmt: skip
        for level in (50, 80):
            ax.axhline(level, color="#999999", linewidth=0.7, linestyle=":")
            ax.text(1, level + 1, f"PGR {level}% (CPT({level}%) where a curve crosses)", fontsize=7,
                    color="#666666")  # fmt: skip
        ax.set_xlim(0, 100)
        ax.set_ylim(-5, 105)
        title = "Performance gap recovered vs strong-tier share"
        _frame(ax, title + (" (estimated)" if estimated else ""),
               x="% of requests on the strong tier", y="PGR %", legend="lower right")  # fmt: skip

    return on_axes(salt, build, 3.0)


def sweep(salt: str, rows: Sequence[dict[str, Any]], shipped: float | None) -> str:
    """The semantic cache's threshold sweep: hits and wrong hits per month, the shipped threshold."""

    def build(ax: Any) -> None:
        xs = [r["threshold"] for r in rows]
        ax.plot(xs, [r.get("hits_per_month") or 0 for r in rows], marker="o", markersize=3,
                color=HEAD, label="hits / month")  # fmt: skip
        ax.plot(xs, [r.get("wrong_hits_per_month") or 0 for r in rows], marker="x", markersize=4,
                color=UP, label="wrong hits / month (answer fails the fixture's expect)")  # fmt: skip
        if any(r.get("unjudged_hits_per_month") for r in rows):
            ax.plot(xs, [r.get("unjudged_hits_per_month") or 0 for r in rows], marker=".",
                    color="#888888", linestyle=":", label="unjudged hits / month")  # fmt: skip
        if shipped is not None:
            ax.axvline(shipped, color="#222222", linestyle="--", linewidth=1)
            ax.text(shipped, ax.get_ylim()[1] * 0.95, f" shipped {shipped:g}", fontsize=8,
                    ha="right" if shipped >= max(xs, default=shipped) else "left", va="top")  # fmt: skip
        _frame(ax, "Semantic cache threshold sweep", x="similarity threshold",
               y="requests / month", legend="upper right")  # fmt: skip

    return on_axes(salt, build, 2.8)


def frontier(salt: str, variants: Sequence[dict[str, Any]], recommended: str | None) -> str:
    """Variants on cost (x) and quality (y); the non-dominated set joined; the chosen one starred."""

    def build(ax: Any) -> None:
        plotted = [v for v in variants if v.get("quality") is not None]
        front = sorted(
            (v for v in plotted if v.get("on_frontier")), key=lambda v: v["cost_per_month"]
        )
        for v in plotted:
            est = bool(v.get("cost_estimated"))
            colour = HEAD if v.get("on_frontier") else "#9aa5b1"
            ax.scatter(v["cost_per_month"], 100 * v["quality"], s=36,
                       facecolors="none" if est else colour, edgecolors=colour, linewidths=1.4,
                       zorder=3)  # fmt: skip
            ax.annotate(v["name"], (v["cost_per_month"], 100 * v["quality"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")  # fmt: skip
        if front:
            ax.plot([v["cost_per_month"] for v in front], [100 * v["quality"] for v in front],
                    color=HEAD, linewidth=1, zorder=2, label="non-dominated set")  # fmt: skip
        chosen = next((v for v in plotted if v["name"] == recommended), None)
        if chosen is not None:
            ax.scatter(chosen["cost_per_month"], 100 * chosen["quality"], marker="*", s=220,
                       color="#e0a800", edgecolors="#222222", zorder=4,
                       label=f"chosen: {chosen['name']}")  # fmt: skip
        if any(v.get("cost_estimated") for v in plotted):
            ax.scatter(
                [], [], facecolors="none", edgecolors="#555555", label="hollow: cost estimated"
            )
        _frame(ax, "Cost–quality frontier of the stack variants", x="$/month", y="quality %",
               legend="lower right")  # fmt: skip

    return on_axes(salt, build, 3.4)


def latency_boxes(salt: str, metric: str, per_tier: dict[str, dict[str, float]]) -> str:
    """Box plots from stored percentiles (ms): box p25–p75, line p50, whiskers p5–p95, dot p99."""

    def build(ax: Any) -> None:
        stats = []
        for tier, q in per_tier.items():
            stats.append(
                {
                    "label": f"{tier} (n={int(q.get('count', 0))})",
                    "whislo": q["p5"],
                    "q1": q["p25"],
                    "med": q["p50"],
                    "q3": q["p75"],
                    "whishi": q["p95"],
                    "fliers": [q["p99"]],
                    "mean": q.get("mean"),
                }
            )
        ax.bxp(stats, orientation="horizontal", showfliers=True, showmeans=False,
               patch_artist=True, boxprops={"facecolor": "#dbe6f5", "edgecolor": HEAD},
               medianprops={"color": HEAD, "linewidth": 2},
               flierprops={"marker": "o", "markersize": 4, "markerfacecolor": UP,
                           "markeredgecolor": UP})  # fmt: skip
        _frame(
            ax, f"{metric}: box p25–p75, median, whiskers p5–p95, red dot p99", x=f"{metric} (ms)"
        )
        ax.set_xlim(left=0)

    return on_axes(salt, build, max(1.6, 0.5 * len(per_tier) + 1.0))
