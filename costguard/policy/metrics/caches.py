"""Policy metrics over the cache layers: semantic false-hit rate, prefix hit rate per tier/suite.

(`cache_hit_rate` with `layer: exact | semantic | prefix` is a budget metric in `costguard.policy.metrics.budget`.)
"""

from __future__ import annotations

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule
from costguard.report.model import Cache


def _semantic_false_hit_rate(ctx: MetricContext, rule: Rule) -> MetricValue:
    block = (ctx.section("cache", Cache) or Cache()).semantic
    if not block.enabled:
        return MetricValue(None, note="the semantic cache is disabled")
    if not block.hits or block.false_hit_rate is None:
        # A floor or ceiling on a rate over zero events would pass vacuously.
        return MetricValue(None, note="no semantic hits, so no false-hit rate", vacuous=True)
    notes = []
    if block.unjudged_hits:
        notes.append(f"{block.unjudged_hits} hit(s) could not be judged and count as correct")
    # A cached answer that is the earlier fixture's reference (not a recorded response) is a
    # stand-in for what the model said: the judgement rests on it.
    estimated = bool(block.answer_sources.get("reference"))
    if estimated:
        notes.append("cached answers are expect.reference stand-ins, not recorded responses")
    return MetricValue(block.false_hit_rate, estimated, "; ".join(notes) or None)


def _prefix_hit_rate(ctx: MetricContext, rule: Rule) -> MetricValue:
    prefix = (ctx.section("cache", Cache) or Cache()).prefix
    if not prefix.enabled:
        return MetricValue(None, note="the prefix-cache simulation is off")
    if rule.tier is not None:
        block = prefix.tiers.get(rule.tier)
        if block is None:
            return MetricValue(None, note=f"tier {rule.tier!r} is not in this stack")
        if not block.simulated:
            return MetricValue(None, note=f"prefix caching is off on tier {rule.tier!r}")
        if not block.calls_per_month:
            return MetricValue(None, note=f"no requests reach tier {rule.tier!r}")
        return MetricValue(block.hit_rate_tokens, note="simulated")
    if rule.suite is not None:
        suite = prefix.suites.get(rule.suite)
        if suite is None:
            return MetricValue(None, note=f"suite {rule.suite!r} has no fixtures in this run")
        return MetricValue(suite["hit_rate_tokens"], note="simulated")
    return MetricValue(prefix.hit_rate_tokens, note="simulated")


METRICS: tuple[Metric, ...] = (
    Metric(
        "semantic_false_hit_rate",
        "ratio",
        "share of semantic-cache hits whose cached answer fails the new request's expectations (0..1)",
        _semantic_false_hit_rate,
    ),
    Metric(
        "prefix_hit_rate",
        "ratio",
        "share of prompt tokens served from vLLM's prefix cache, simulated (tier: or suite: to select)",
        _prefix_hit_rate,
        ("tier", "suite"),
    ),
)
