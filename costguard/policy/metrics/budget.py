"""Budget metrics: spend, cost and tokens per request, per-suite and per-tier spend, shares, cache hits."""

from __future__ import annotations

from pydantic import BaseModel

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule
from costguard.report.model import Cache, SuiteUsage, TierUsage, Totals


def _totals(ctx: MetricContext) -> Totals:
    totals = ctx.section("totals", Totals)
    assert totals is not None  # every RunReport has its totals
    return totals


def _tier(ctx: MetricContext, rule: Rule) -> TierUsage | None:
    return (ctx.section("tiers", dict[str, TierUsage]) or {}).get(rule.tier or "")


def _monthly_spend(ctx: MetricContext, rule: Rule) -> MetricValue:
    t = _totals(ctx)
    return MetricValue(t.cost_per_month, t.estimated)


def _cost_per_request(ctx: MetricContext, rule: Rule) -> MetricValue:
    t = _totals(ctx)
    return MetricValue(getattr(t.cost_per_request, rule.stat or "p95"), t.estimated)


def _tokens_per_request(ctx: MetricContext, rule: Rule) -> MetricValue:
    kind = rule.kind or "total"
    dist = getattr(_totals(ctx).tokens_per_request, kind)
    provenance = (ctx.section("provenance", dict[str, dict[str, int]]) or {}).get(
        "output_tokens", {}
    )
    estimated = (
        kind in ("output", "total")
        and (provenance.get("expected", 0) + provenance.get("prior", 0)) > 0
    )
    return MetricValue(getattr(dist, rule.stat or "p95"), estimated)


def _suite_spend(ctx: MetricContext, rule: Rule) -> MetricValue:
    block = (ctx.section("suites", dict[str, SuiteUsage]) or {}).get(rule.suite or "")
    if block is None:
        return MetricValue(None, note=f"suite {rule.suite!r} has no fixtures in this run")
    return MetricValue(block.cost_per_month, block.estimated)


def _tier_share(ctx: MetricContext, rule: Rule) -> MetricValue:
    block = _tier(ctx, rule)
    if block is None:
        return MetricValue(None, note=f"tier {rule.tier!r} is not in this stack")
    return MetricValue(block.share)


def _tier_spend(ctx: MetricContext, rule: Rule) -> MetricValue:
    block = _tier(ctx, rule)
    if block is None:
        return MetricValue(None, note=f"tier {rule.tier!r} is not in this stack")
    return MetricValue(block.cost_per_month, block.estimated)


def _cache_hit_rate(ctx: MetricContext, rule: Rule) -> MetricValue:
    cache = ctx.section("cache", Cache) or Cache()
    if rule.layer:
        # only a layer the report has, with a hit rate it reports (not a default)
        layer = getattr(cache, rule.layer, None) if rule.layer in cache.model_fields_set else None
        reported = layer.model_dump(exclude_unset=True) if isinstance(layer, BaseModel) else layer
        if not isinstance(reported, dict) or "hit_rate" not in reported:
            return MetricValue(None, note=f"cache layer {rule.layer!r} reports no hit rate")
        return MetricValue(reported["hit_rate"])
    return MetricValue(cache.hit_rate)


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
