"""Budget metrics: spend, cost and tokens per request, per-suite and per-tier spend, shares, cache hits."""

from __future__ import annotations

from typing import Any

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule


def _suite_block(ctx: MetricContext, rule: Rule) -> dict[str, Any] | None:
    return ctx.report.suites.get(rule.suite or "")


def _monthly_spend(ctx: MetricContext, rule: Rule) -> MetricValue:
    t = ctx.report.totals
    return MetricValue(t["cost_per_month"], t.get("estimated", False))


def _cost_per_request(ctx: MetricContext, rule: Rule) -> MetricValue:
    t = ctx.report.totals
    return MetricValue(t["cost_per_request"][rule.stat or "p95"], t.get("estimated", False))


def _tokens_per_request(ctx: MetricContext, rule: Rule) -> MetricValue:
    kind = rule.kind or "total"
    dist = ctx.report.totals["tokens_per_request"][kind]
    provenance = ctx.report.get("provenance", {}).get("output_tokens", {})
    estimated = (
        kind in ("output", "total")
        and (provenance.get("expected", 0) + provenance.get("prior", 0)) > 0
    )
    return MetricValue(dist[rule.stat or "p95"], estimated)


def _suite_spend(ctx: MetricContext, rule: Rule) -> MetricValue:
    block = _suite_block(ctx, rule)
    if block is None:
        return MetricValue(None, note=f"suite {rule.suite!r} has no fixtures in this run")
    return MetricValue(block["cost_per_month"], block.get("estimated", False))


def _tier_share(ctx: MetricContext, rule: Rule) -> MetricValue:
    block = ctx.report.tiers.get(rule.tier or "")
    if block is None:
        return MetricValue(None, note=f"tier {rule.tier!r} is not in this stack")
    return MetricValue(block["share"])


def _tier_spend(ctx: MetricContext, rule: Rule) -> MetricValue:
    block = ctx.report.tiers.get(rule.tier or "")
    if block is None:
        return MetricValue(None, note=f"tier {rule.tier!r} is not in this stack")
    return MetricValue(block["cost_per_month"], block.get("estimated", False))


def _cache_hit_rate(ctx: MetricContext, rule: Rule) -> MetricValue:
    cache = ctx.report.get("cache", {})
    if rule.layer:
        layer = cache.get(rule.layer)
        if not isinstance(layer, dict) or "hit_rate" not in layer:
            return MetricValue(None, note=f"cache layer {rule.layer!r} reports no hit rate")
        return MetricValue(layer["hit_rate"])
    return MetricValue(cache.get("hit_rate", 0.0))


METRICS: tuple[Metric, ...] = (
    Metric("monthly_spend", "usd", "projected spend per month", _monthly_spend),
    Metric(
        "cost_per_request",
        "usd_per_request",
        "cost per request (stat: mean/p50/p95/p99/max)",
        _cost_per_request,
        ("stat",),
    ),
    Metric(
        "tokens_per_request",
        "tokens",
        "tokens per request (kind: input/cached/output/total; stat)",
        _tokens_per_request,
        ("kind", "stat"),
    ),
    Metric(
        "suite_spend",
        "usd",
        "projected spend per month of one suite",
        _suite_spend,
        ("suite",),
        ("suite",),
    ),
    Metric(
        "tier_share",
        "ratio",
        "share of requests served by a tier (0..1)",
        _tier_share,
        ("tier",),
        ("tier",),
    ),
    Metric(
        "tier_spend",
        "usd",
        "projected spend per month on one tier",
        _tier_spend,
        ("tier",),
        ("tier",),
    ),
    Metric(
        "cache_hit_rate",
        "ratio",
        "share of requests served from cache (layer: exact/semantic; prefix: share of calls reusing cached blocks)",
        _cache_hit_rate,
        ("layer",),
    ),
)
