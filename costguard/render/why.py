"""Why a fixture's cost moved: the one set of rules behind the "why" column of the terminal's top
movers (`costguard.render.terminal`) and of the PR comment (`templates/comment.md.j2`, through the
`why` filter of `costguard.render.markdown`). Each renderer supplies only its typography: how a
name, a count and a template path are written, and the arrow between base and head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costguard.compare.model import FixtureChange
from costguard.report import format as fmt


def change_reasons(
    f: FixtureChange,
    *,
    name: Callable[[Any], str] = str,
    arrow: str = "->",
    count: Callable[[float | None], str] = fmt.count,
    template: Callable[[str], str] | None = None,
) -> list[str]:
    """The reasons a fixture's cost moved, in order: added or removed, its prompt or templates
    changed, another tier or cache outcome served it, the cascade, prefix-cached tokens; "traffic
    share" when nothing else explains a changed fixture whose requests per month moved."""
    reasons = []
    if f.status == "added":
        reasons.append("new fixture")
    if f.status == "removed":
        reasons.append("fixture removed")
    if f.prompt_changed:
        reasons.append("prompt changed")
    for path in f.templates_changed:
        reasons.append(f"template {template(path) if template else name(path)} changed")
    if f.status == "changed":
        if f.served_by.base != f.served_by.head:
            reasons.append(f"served by {name(f.served_by.base)} {arrow} {name(f.served_by.head)}")
        if f.cache.base != f.cache.head:
            reasons.append(f"cache {name(f.cache.base)} {arrow} {name(f.cache.head)}")
        if f.escalated.base != f.escalated.head:
            reasons.append("escalates" if f.escalated.head else "no longer escalates")
        if f.cached_tokens.delta:
            cached = f.cached_tokens
            reasons.append(
                f"prefix-cached tokens {count(cached.base)} {arrow} {count(cached.head)}"
            )
        if not reasons and f.monthly_requests.delta:
            reasons.append("traffic share")
    return reasons
