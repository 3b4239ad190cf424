"""How costguard writes its numbers: the one formatter for money, percentages, token counts,
durations and rates, used by the terminal, the Markdown comment, policy messages and the pytest
summary (it sits beside the report model so every layer that prints a report figure can reach it).

Each function's argument carries its unit in its name (`duration_ms` takes milliseconds,
`duration_s` seconds, `percent` a fraction 0..1, `percent_change` a percentage), so a figure is
never scaled twice. None means "no figure" and comes back as `MISSING`; the Markdown renderer
swaps in its own typography (em dash, Unicode minus, escaped `*`).
"""

from __future__ import annotations

import math

MISSING = "n/a"
EST = "*"  # marks a figure that rests on estimates; every renderer prints a legend for it


def money(value: float | None, estimated: bool = False) -> str:
    """US dollars: cents from $1 up ($1,234.56); below, three significant digits and at least
    cents ($0.50, $0.0153, $0.000123), so a per-request price or limit is never rounded away."""
    if value is None:
        return MISSING
    v = abs(value)
    if v == 0 or v >= 1:
        text = f"${v:,.2f}"
    else:
        digits = f"{v:.{min(12, 2 - math.floor(math.log10(v)))}f}".rstrip("0")
        whole, _, frac = digits.partition(".")
        text = f"${whole}.{frac.ljust(2, '0')}"
    return ("-" if value < 0 else "") + text + (EST if estimated else "")


def money_delta(value: float | None) -> str:
    """A change in dollars, always signed: +$12.00, -$3.50, ±$0.00."""
    if value is None:
        return MISSING
    if value == 0:
        return "±$0.00"
    return ("+" if value > 0 else "-") + money(abs(value))


def percent(fraction: float | None, estimated: bool = False) -> str:
    """A rate or share (0..1) as a percentage: 0.123 -> 12.3%."""
    if fraction is None:
        return MISSING
    return f"{100 * fraction:.1f}%" + (EST if estimated else "")


def percentage(pct: float | None) -> str:
    """A share already in percent (0..100), e.g. a saving's `saving_pct`: 72.3%."""
    return MISSING if pct is None else f"{pct:.1f}%"


def percent_change(pct: float | None) -> str:
    """A relative change already in percent, signed: +12.3%, -4.0%, ±0.0%."""
    if pct is None:
        return MISSING
    if pct == 0:
        return "±0.0%"
    return f"{'+' if pct > 0 else '-'}{abs(pct):,.1f}%"


def points(fraction_delta: float | None) -> str:
    """A change of a rate (0..1) in percentage points: +1.5 pts."""
    if fraction_delta is None:
        return MISSING
    pts = 100 * fraction_delta
    if abs(pts) < 0.05:
        return "±0.0 pts"
    return f"{'+' if pts > 0 else '-'}{abs(pts):.1f} pts"


def tokens(value: float | None) -> str:
    """Tokens or requests, compact: 1.23B, 4.56M, 35.0k, 812 (sign kept)."""
    if value is None:
        return MISSING
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v >= 1e9:
        return f"{sign}{v / 1e9:,.2f}B"
    if v >= 1e6:
        return f"{sign}{v / 1e6:,.2f}M"
    if v >= 1e3:
        return f"{sign}{v / 1e3:,.1f}k"
    return f"{sign}{v:,.0f}"


def count(value: float | None) -> str:
    """An exact count (tokens per request, fixtures, blocks): 2,538."""
    return MISSING if value is None else f"{value:,.0f}"


def count_delta(value: float | None) -> str:
    """A change of a count, signed: +120, -3, ±0."""
    if value is None:
        return MISSING
    if value == 0:
        return "±0"
    return ("+" if value > 0 else "") + count(value)


def duration_ms(milliseconds: float | None) -> str:
    """A latency given in milliseconds (the report's `*_ms` keys): 35.2 ms."""
    return MISSING if milliseconds is None else f"{milliseconds:,.1f} ms"


def duration_s(seconds: float | None) -> str:
    """A latency given in seconds (the report's `*_s` keys), written like `duration_ms`."""
    return MISSING if seconds is None else duration_ms(1000 * seconds)


def rate(value: float | None, unit: str) -> str:
    """A throughput: 12.3 req/s, 1,234.5 tok/s."""
    return MISSING if value is None else f"{value:,.1f} {unit}"


def score(value: float | None) -> str:
    """A quality score or pass rate (0..1), or n/a when nothing was measured."""
    return percent(value)


def format_value(value: float | None, unit: str) -> str:
    """A policy metric's value in its metric's unit (`Metric.unit`)."""
    if value is None:
        return MISSING
    if unit in ("usd", "usd_per_request"):
        return money(value)
    if unit == "usd_delta":
        return money_delta(value)
    if unit == "ratio":
        return percent(value)
    if unit == "pct":
        return percent_change(value)
    if unit == "points":
        return f"{value:+.1f} pts"
    if unit in ("tokens", "count"):
        return count(value)
    if unit == "seconds":
        return duration_s(value)
    return f"{value:g}"
