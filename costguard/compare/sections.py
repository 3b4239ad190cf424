"""The DiffReport's sections above the fixtures: totals, tiers and suites, caches, routing,
quality, the counterfactual, and which run each side is.

Each function takes the two reports' JSON (`base` None: no baseline) and returns its typed
section of `costguard.compare.model`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from costguard.compare.figures import estimated_pair, figure, get, moved, num, quality_score
from costguard.compare.model import (
    CacheChanges,
    CacheLayerChange,
    Change,
    CounterfactualChanges,
    DiffTotals,
    NamedBlock,
    Pair,
    QualityChanges,
    RoutingChanges,
    RunSummary,
    Status,
)
from costguard.report.run_report import RunReport

# Aggregate figures compared at every level (tier, suite, total) when present in both reports.
USAGE_FIELDS = (
    "requests_per_month",
    "input_tokens_per_month",
    "cached_tokens_per_month",
    "output_tokens_per_month",
    "cost_per_month",
)
# Per-request figures of the totals: (name in the diff, path in the RunReport's totals).
PER_REQUEST = (
    ("cost_per_request_mean", ("cost_per_request", "mean")),
    ("cost_per_request_p95", ("cost_per_request", "p95")),
    ("input_tokens_per_request_mean", ("tokens_per_request", "input", "mean")),
    ("output_tokens_per_request_mean", ("tokens_per_request", "output", "mean")),
    ("tokens_per_request_p95", ("tokens_per_request", "total", "p95")),
)
CACHE_LAYER_FIGURES = (
    "hit_rate",
    "hit_rate_tokens",
    "saved_per_month",
    "cached_tokens_per_month",
    "false_hit_rate",
)


def _usage(
    base: dict[str, Any] | None, head: dict[str, Any] | None, fields: Iterable[str], has_base: bool
) -> dict[str, Change]:
    """The figures among `fields` that either side has as a number."""
    out: dict[str, Change] = {}
    for f in fields:
        b = (base or {}).get(f)
        h = (head or {}).get(f)
        if not isinstance(b, (int, float)) and not isinstance(h, (int, float)):
            continue
        out[f] = figure(b, h, has_base)
    return out


def _pair(base: dict[str, Any] | None, head: dict[str, Any] | None, *path: str) -> Change:
    return figure(num(get(base, *path)), num(get(head, *path)), base is not None)


def totals(base: dict[str, Any] | None, head: dict[str, Any]) -> DiffTotals:
    has_base = base is not None
    figures: dict[str, Any] = _usage(base, head, USAGE_FIELDS, has_base)
    for label, path in PER_REQUEST:
        figures[label] = figure(num(get(base, *path)), num(get(head, *path)), has_base)
    return DiffTotals(**figures, estimated=estimated_pair(base, head))


def _status(base: Any, head: Any, figures: dict[str, Change]) -> Status:
    if base is None:
        return "added"
    if head is None:
        return "removed"
    return "changed" if any(moved(c) for c in figures.values()) else "unchanged"


def named_blocks(
    base: dict[str, dict[str, Any]] | None,
    head: dict[str, dict[str, Any]],
    fields: tuple[str, ...],
    extra: tuple[str, ...] = (),
) -> dict[str, NamedBlock]:
    """Tiers or suites: base order first, then names only the head has."""
    has_base = base is not None
    names = list(base or {}) + [n for n in head if n not in (base or {})]
    out: dict[str, NamedBlock] = {}
    for name in names:
        b = (base or {}).get(name)
        h = head.get(name)
        figures: dict[str, Any] = _usage(b, h, fields + extra, has_base)
        status = _status(b, h, figures) if has_base else "head_only"
        model_b, model_h = (b or {}).get("model"), (h or {}).get("model")
        if model_b is not None or model_h is not None:
            figures["model"] = Pair[str](base=model_b, head=model_h)
            if has_base and b is not None and h is not None and model_b != model_h:
                status = "changed"
        out[name] = NamedBlock(status=status, **figures, estimated=estimated_pair(b, h))
    return out


def cache(base: dict[str, Any] | None, head: dict[str, Any]) -> CacheChanges:
    """Hit rates and savings per cache layer, whatever layers the reports carry."""
    layers = [k for k, v in (head.get("cache") or {}).items() if isinstance(v, dict)]
    layers += [
        k
        for k, v in ((base or {}).get("cache") or {}).items()
        if isinstance(v, dict) and k not in layers
    ]
    blocks: dict[str, CacheLayerChange] = {}
    for layer in layers:
        figures: dict[str, Any] = {}
        for key in CACHE_LAYER_FIGURES:
            c = _pair(base, head, "cache", layer, key)
            if c.base is not None or c.head is not None:
                figures[key] = c
        if figures:
            blocks[layer] = CacheLayerChange(**figures)
    return CacheChanges(hit_rate=_pair(base, head, "cache", "hit_rate"), layers=blocks)


def routing(base: dict[str, Any] | None, head: dict[str, Any]) -> RoutingChanges:
    shares_b = get(base, "routing", "shares") or {}
    shares_h = get(head, "routing", "shares") or {}
    tiers = list(shares_b) + [t for t in shares_h if t not in shares_b]
    return RoutingChanges(
        escalation_rate=_pair(base, head, "routing", "escalation_rate"),
        escalation_cost_per_month=_pair(base, head, "routing", "escalation_cost_per_month"),
        cache_share=_pair(base, head, "routing", "cache_share"),
        shares={
            t: figure(num(shares_b.get(t)), num(shares_h.get(t)), base is not None) for t in tiers
        },
    )


def quality(base: dict[str, Any] | None, head: dict[str, Any]) -> QualityChanges | None:
    """Quality scores overall and per suite; None when neither run has any."""
    has_base = base is not None
    overall_b, overall_h = quality_score(base), quality_score(head)
    suites_b = get(base, "quality", "suites") or {}
    suites_h = get(head, "quality", "suites") or {}
    if overall_b is None and overall_h is None and not suites_b and not suites_h:
        return None
    names = list(suites_b) + [s for s in suites_h if s not in suites_b]

    def count(data: dict[str, Any] | None, *keys: str) -> float | None:
        values = [num(get(data, "quality", k)) for k in keys]
        return None if all(v is None for v in values) else sum(v or 0.0 for v in values)

    return QualityChanges(
        score=figure(overall_b, overall_h, has_base),
        suites={s: figure(quality_score(base, s), quality_score(head, s), has_base) for s in names},
        fixtures=figure(count(base, "fixtures"), count(head, "fixtures"), has_base),
        # not (fully) measured: no answer to score, or some assertion without a measurement
        unmeasured=figure(
            count(base, "unmeasured", "partial"), count(head, "unmeasured", "partial"), has_base
        ),
    )


def counterfactual(base: dict[str, Any] | None, head: dict[str, Any]) -> CounterfactualChanges:
    return CounterfactualChanges(
        cost_per_month=_pair(base, head, "counterfactual", "cost_per_month"),
        saving_per_month=_pair(base, head, "counterfactual", "saving_per_month"),
        saving_pct=_pair(base, head, "counterfactual", "saving_pct"),
        label=get(head, "counterfactual", "label"),
    )


def run_summary(report: RunReport | None, source: str, reason: str | None = None) -> RunSummary:
    """Which run a side is, or (`report` None) why there is none."""
    if report is None:
        return RunSummary(available=False, source=source, reason=reason)
    return RunSummary(
        available=True,
        source=source,
        reason=None,
        stack=get(report.data, "stack", "name"),
        backend=report.get("backend"),
        created_at=report.get("created_at"),
        complete=report.complete,
        incomplete_reason=report.get("incomplete_reason"),
        estimated=bool(report.totals.get("estimated", False)),
        estimated_share=report.totals.get("estimated_share", 0.0),
        fixtures=report.totals.get("fixtures", len(report.records)),
        warnings=list(report.get("warnings", [])),
        # Tiers whose prompt tokens are counted with a stand-in or fallback tokenizer.
        approximate_token_tiers=[
            t.get("name")
            for t in (get(report.data, "stack", "tiers") or [])
            if isinstance(t, dict) and t.get("tokenizer_exact") is False
        ],
    )


def changed(
    totals: DiffTotals, blocks: Iterable[NamedBlock], fixtures_moved: bool, has_base: bool
) -> bool:
    """Whether anything moved: a fixture, a total, a tier or a suite (never without a baseline)."""
    figures = [v for v in totals.__dict__.values() if isinstance(v, Change)]
    return has_base and (
        fixtures_moved
        or any(moved(c) for c in figures)
        or any(block.status != "unchanged" for block in blocks)
    )
