"""Formats shared by the renderers (terminal, Markdown): one way to write a token count, one
way to say why a fixture's cost moved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def compact_count(value: float) -> str:
    """Tokens or requests, compact: 1.23B, 4.56M, 35.0k, 812 (sign kept)."""
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v >= 1e9:
        return f"{sign}{v / 1e9:,.2f}B"
    if v >= 1e6:
        return f"{sign}{v / 1e6:,.2f}M"
    if v >= 1e3:
        return f"{sign}{v / 1e3:,.1f}k"
    return f"{sign}{v:,.0f}"


def change_reasons(
    fixture: dict,
    *,
    arrow: str = "->",
    value: Callable[[Any], str] = lambda v: "-" if v is None else str(v),
) -> list[str]:
    """Why a fixture's cost moved between base and head (the "why" column of every diff view),
    read from its DiffReport entry; `value` writes a tier or cache outcome (Markdown escapes it)."""
    status = fixture["status"]
    reasons = []
    if status == "added":
        reasons.append("new fixture")
    if status == "removed":
        reasons.append("fixture removed")
    if fixture.get("prompt_changed"):
        reasons.append("prompt changed")
    if status == "changed":
        for key, label in (("served_by", "served by"), ("cache", "cache")):
            pair = fixture.get(key) or {}
            if pair.get("base") != pair.get("head"):
                reasons.append(
                    f"{label} {value(pair.get('base'))} {arrow} {value(pair.get('head'))}"
                )
        escalated = fixture.get("escalated") or {}
        if escalated.get("base") != escalated.get("head"):
            reasons.append("escalates" if escalated.get("head") else "no longer escalates")
        if not reasons and (fixture.get("monthly_requests") or {}).get("delta"):
            reasons.append("traffic share")
    return reasons
