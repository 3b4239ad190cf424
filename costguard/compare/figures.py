"""One figure on both sides (a `Change`), and reading numbers out of a report's JSON.

Every base / head / delta of the DiffReport is made by `figure` here, once.
"""

from __future__ import annotations

import math
from typing import Any

from costguard.compare.model import Change, Pair


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def between(base: float | None, head: float | None) -> Change:
    """One figure on both sides of a comparison that has a baseline.

    A side that does not exist (a suite added by the PR) is null; the delta then counts the
    missing side as 0, and `delta_pct` is null whenever the base is 0 or missing (no percentage
    of nothing).
    """
    if base is None and head is None:
        return Change(base=None, head=None, delta=None, delta_pct=None)
    b = float(base) if base is not None else None
    h = float(head) if head is not None else None
    delta = (h or 0.0) - (b or 0.0)
    if b is not None and h is not None and _close(b, h):
        delta = 0.0
    pct = 100.0 * delta / b if b else None
    return Change(base=b, head=h, delta=delta, delta_pct=pct)


def figure(base: float | None, head: float | None, has_base: bool) -> Change:
    """`between(base, head)`, or without a baseline at all only the head (base and delta null)."""
    if has_base:
        return between(base, head)
    return Change(base=None, head=None if head is None else float(head), delta=None, delta_pct=None)


def change(base: float | None, head: float | None) -> dict[str, float | None]:
    """One figure as {base, head, delta, delta_pct}: the JSON form of `between`."""
    return between(base, head).model_dump()


def moved(c: Change) -> bool:
    return bool(c.delta)


def estimated_pair(base: dict[str, Any] | None, head: dict[str, Any] | None) -> Pair[bool]:
    """Whether each side's block rests on an estimate (null: the side has no such block)."""
    return Pair[bool](
        base=bool(base.get("estimated", False)) if base is not None else None,
        head=bool(head.get("estimated", False)) if head is not None else None,
    )


def get(data: dict[str, Any] | None, *path: str) -> Any:
    """The value at `path` in nested dicts, None where a step is missing or not a dict."""
    cur: Any = data
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def num(value: Any) -> float | None:
    """A number as a float; None for anything else (booleans included)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def quality_score(data: dict[str, Any] | None, suite: str | None = None) -> float | None:
    """The report's quality score (0..1), overall or for one suite; None when the run has none.

    Read from `quality.score` and `quality.suites.NAME.score` (the quality section is optional).
    """
    if suite is None:
        return num(get(data, "quality", "score"))
    return num(get(data, "quality", "suites", suite, "score"))
