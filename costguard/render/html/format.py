"""The HTML report's value formatting: money, durations, numbers, verdicts, inline SVG.

Every function takes a figure as the report stores it (possibly missing, None or not finite) and
returns text for the page; "—" stands for a figure the report does not have.
"""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def pct(value: Any) -> float | None:
    v = finite(value)
    return None if v is None else 100 * v


def money(value: Any, estimated: bool = False) -> str:
    v = finite(value)
    if v is None:
        return "—"
    text = f"${abs(v):,.2f}" if abs(v) >= 0.01 or v == 0 else f"${abs(v):.6f}".rstrip("0")
    return ("−" if v < 0 else "") + text + ("*" if estimated else "")


def ms(seconds: Any) -> str:
    v = finite(seconds)
    return "—" if v is None else f"{1000 * v:,.0f} ms"


def verdict_value(verdict: dict[str, Any]) -> str:
    """A policy verdict's measured value in its metric's unit (estimates starred)."""
    from costguard.policy.engine import format_value

    if verdict.get("actual") is None:
        return "—"
    return format_value(verdict["actual"], verdict["unit"]) + (
        "*" if verdict.get("estimated") else ""
    )


def num(value: Any, digits: int = 2) -> str:
    v = finite(value)
    return "—" if v is None else f"{v:,.{digits}f}"


def svg(markup: str) -> Any:
    from markupsafe import Markup

    return Markup(markup)  # produced by matplotlib's SVG writer, which escapes all text
