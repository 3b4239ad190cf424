"""Token-count exactness as a policy metric: a policy can demand exact prompt token counts.

`approximate_token_share` with `max: 0` fails a run whose prompt tokens were counted (on any
call, or on `tier:`) with a tokenizer that only stands in for the model's own.
"""

from __future__ import annotations

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule


def _approximate_token_share(ctx: MetricContext, rule: Rule) -> MetricValue:
    if rule.tier is not None:
        tiers = {t.get("name"): t for t in ctx.report.get("stack", {}).get("tiers", [])}
        tier = tiers.get(rule.tier)
        if tier is None:
            return MetricValue(None, note=f"tier {rule.tier!r} is not in this stack")
        exact = tier.get("tokenizer_exact")
        if exact is None:
            return MetricValue(None, note="the report does not say how tokens were counted")
        note = None if exact else f"tokenizer: {tier.get('tokenizer', '?')}"
        return MetricValue(0.0 if exact else 1.0, note=note)
    sources = ctx.report.get("provenance", {}).get("input_tokens", {})
    calls = sum(sources.values())
    if not calls:
        return MetricValue(None, note="no model calls in this run")
    approximate = sources.get("approximate", 0)
    note = f"{approximate} of {calls} call(s) counted approximately" if approximate else None
    return MetricValue(approximate / calls, note=note)


METRICS: tuple[Metric, ...] = (
    Metric(
        "approximate_token_share",
        "ratio",
        "share of model calls whose prompt tokens are approximate (a stand-in tokenizer); "
        "max: 0 requires exact counts (tier: to select one tier)",
        _approximate_token_share,
        ("tier",),
    ),
)
