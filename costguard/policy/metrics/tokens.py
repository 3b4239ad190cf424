"""Token-count exactness as a policy metric: a policy can demand exact prompt token counts.

`approximate_token_share` with `max: 0` fails a run whose prompt tokens were counted (on any
call, or on `tier:`) with a tokenizer that only stands in for the model's own.
"""

from __future__ import annotations

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule
from costguard.report.model import Stack


def _approximate_token_share(ctx: MetricContext, rule: Rule) -> MetricValue:
    if rule.tier is not None:
        stack = ctx.section("stack", Stack)
        tiers = {t.name: t for t in stack.tiers} if stack is not None else {}
        tier = tiers.get(rule.tier)
        if tier is None:
            return MetricValue(None, note=f"tier {rule.tier!r} is not in this stack")
        if "tokenizer_exact" not in tier.model_fields_set:
            return MetricValue(None, note="the report does not say how tokens were counted")
        exact = tier.tokenizer_exact
        note = None if exact else f"tokenizer: {tier.tokenizer or '?'}"
        return MetricValue(0.0 if exact else 1.0, note=note)
    provenance = ctx.section("provenance", dict[str, dict[str, int]]) or {}
    sources = provenance.get("input_tokens", {})
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
