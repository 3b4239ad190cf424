"""Routing metrics for policies: escalation rate, strong-tier share, router overhead, PGR and APGR.

They read the report's `routing` and `timing` sections (computed by `costguard.engine.routing.metrics`).
"""

from __future__ import annotations

from typing import Any

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule


def _routing(ctx: MetricContext) -> dict[str, Any]:
    return ctx.report.get("routing", {}) or {}


def _escalation_rate(ctx: MetricContext, rule: Rule) -> MetricValue:
    routing = _routing(ctx)
    note = None
    if routing.get("escalation_estimated"):
        note = "confidence estimated: " + str(routing.get("escalation", {}).get("method", ""))
    return MetricValue(
        routing.get("escalation_rate", 0.0), bool(routing.get("escalation_estimated")), note
    )


def _strong_tier_share(ctx: MetricContext, rule: Rule) -> MetricValue:
    routing = _routing(ctx)
    if "strong_share" not in routing:
        return MetricValue(
            None, note="the report has no routed shares (written by an older costguard)"
        )
    return MetricValue(routing["strong_share"])


def _router_overhead_p99(ctx: MetricContext, rule: Rule) -> MetricValue:
    """p99 of the CPU time of the routing work per request (min of repeated probes), which a
    busy runner does not inflate; the wall-clock p99 only for reports without CPU samples."""
    overhead = (ctx.report.get("timing") or {}).get("router_overhead") or {}
    notes = []
    value = overhead.get("cpu_p99_s")
    if value is not None:
        notes.append("CPU time of the routing work, min of repeated probes")
    else:
        value = overhead.get("p99_s")
        if value is not None:
            notes.append("wall clock (this report has no CPU-time samples)")
    if value is None:
        return MetricValue(
            None, note=f"router overhead not measured ({overhead.get('method', 'no router ran')})"
        )
    if overhead.get("source") == "stored":
        cond = overhead.get("conditions") or {}
        notes.append(
            f"measured in an earlier run ({cond.get('measured_at', '?')}, load average "
            f"{cond.get('load_average_1m', '?')}), not under this run's conditions"
        )
    return MetricValue(value, note="; ".join(notes))


def _router_row(ctx: MetricContext, key: str) -> MetricValue:
    comparison = _routing(ctx).get("comparison") or {}
    quality = comparison.get("quality") or {}
    if not quality.get("available"):
        return MetricValue(
            None,
            note=quality.get("reason")
            or comparison.get("reason")
            or "no routing quality in the report",
        )
    value = (comparison.get("baselines", {}).get("router") or {}).get(key)
    if value is None:
        reason = (
            quality.get("reason")
            or comparison["baselines"]["router"].get("sweep_reason")
            or "not available"
        )
        return MetricValue(None, note=reason)
    return MetricValue(value, estimated=False, note="quality from fixture labels")


METRICS: tuple[Metric, ...] = (
    Metric(
        "escalation_rate",
        "ratio",
        "share of requests the cascade escalated to a stronger tier",
        _escalation_rate,
    ),
    Metric(
        "strong_tier_share",
        "ratio",
        "share of requests the router sends to the strongest tier (before caches)",
        _strong_tier_share,
    ),
    Metric(
        "router_overhead_p99",  # CPU time of the routing work (README: Reliability)
        "seconds",
        "p99 CPU time of scoring one request (the routing work alone, min of repeated probes; "
        "wall clock only for older reports)",
        _router_overhead_p99,
    ),
    Metric(
        "routing_pgr",
        "ratio",
        "performance gap recovered at the shipped thresholds (labelled quality)",
        lambda ctx, rule: _router_row(ctx, "pgr"),
    ),
    Metric(
        "routing_apgr",
        "ratio",
        "mean PGR over an 11-point strong-share sweep (labelled quality; random = 50%)",
        lambda ctx, rule: _router_row(ctx, "apgr"),
    ),
)
