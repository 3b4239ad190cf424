"""Number formats shared by the renderers (terminal, Markdown): one way to write a token count."""

from __future__ import annotations


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
