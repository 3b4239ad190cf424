"""Routing metrics for policies: escalation rate, strong-tier share, router overhead, PGR and APGR.

They read the report's `routing` and `timing` sections (computed by `costguard.engine.routing.metrics`).
"""

from __future__ import annotations

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule
from costguard.report.model import RouterOverhead, Routing, Timing


def _routing(ctx: MetricContext) -> Routing:
    return ctx.section("routing", Routing) or Routing()


def _escalation_rate(ctx: MetricContext, rule: Rule) -> MetricValue:
    routing = _routing(ctx)
    note = None
    if routing.escalation_estimated:
        note = "confidence estimated: " + (routing.escalation.method or "")
    return MetricValue(routing.escalation_rate, routing.escalation_estimated, note)


def _strong_tier_share(ctx: MetricContext, rule: Rule) -> MetricValue:
    routing = _routing(ctx)
    if "strong_share" not in routing.model_fields_set:
        return MetricValue(
            None, note="the report has no routed shares (written by an older costguard)"
        )
    return MetricValue(routing.strong_share)


def _router_overhead_p99(ctx: MetricContext, rule: Rule) -> MetricValue:
    """p99 of the CPU time of the routing work per request (min of repeated probes), which a
    busy runner does not inflate; the wall-clock p99 only for reports without CPU samples."""
    timing = ctx.section("timing", Timing) or Timing()
    overhead = timing.router_overhead or RouterOverhead()
    method = overhead.method if "method" in overhead.model_fields_set else "no router ran"
    notes = []
    value = overhead.cpu_p99_s
    if value is not None:
        notes.append("CPU time of the routing work, min of repeated probes")
    else:
        value = overhead.p99_s
        if value is not None:
            notes.append("wall clock (this report has no CPU-time samples)")
    if value is None:
        return MetricValue(None, note=f"router overhead not measured ({method})")
    if overhead.source == "stored":
        cond = overhead.conditions
        notes.append(
            f"measured in an earlier run ({cond.get('measured_at', '?')}, load average "
            f"{cond.get('load_average_1m', '?')}), not under this run's conditions"
        )
    return MetricValue(value, note="; ".join(notes))


def _router_row(ctx: MetricContext, key: str) -> MetricValue:
    comparison = _routing(ctx).comparison
    quality = comparison.quality
    if not quality.available:
        return MetricValue(
            None, note=quality.reason or comparison.reason or "no routing quality in the report"
        )
    router = comparison.baselines.get("router")
    value = getattr(router, key) if router is not None else None
    if value is None:
        sweep_reason = router.sweep_reason if router else None
        return MetricValue(None, note=quality.reason or sweep_reason or "not available")
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
