"""Regression rules: policy metrics that compare the head with the baseline, read from the DiffReport.

```yaml
rules:
  spend_increase:     {metric: monthly_spend_increase, max: 500}         # $ per month
  spend_increase_pct: {metric: monthly_spend_increase_pct, max: 10}      # percent
  support_increase:   {metric: suite_spend_increase_pct, suite: support, max: 15}
  any_suite_increase: {metric: suite_spend_increase, max: 200}           # worst suite
  quality_drop:       {metric: quality_drop, max: 1.0}                   # points (0-100 scale)
  escalation:         {metric: escalation_rate_increase, max: 5, level: warn}  # points
```
Every metric here `needs_baseline`: with no baseline the rule is skipped, saying "no baseline
yet". An acknowledged change (the PR label) turns their failures into warnings.
"""

from __future__ import annotations

from costguard.compare.diff import Baseline, diff_reports
from costguard.compare.model import DiffReportModel, NamedBlock, UsageChanges
from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule


def diff_of(ctx: MetricContext) -> DiffReportModel:
    """The DiffReport for this context (computed once and kept on the context)."""
    if ctx.diff is None:
        assert ctx.baseline is not None  # evaluate() skips baseline metrics without one
        ctx.diff = diff_reports(Baseline(ctx.baseline, "baseline"), ctx.report).model
    return ctx.diff


def _estimated(block: UsageChanges) -> bool:
    return bool(block.estimated.base or block.estimated.head)


def _monthly_spend_increase(ctx: MetricContext, rule: Rule) -> MetricValue:
    totals = diff_of(ctx).totals
    return MetricValue(totals.cost_per_month.delta, _estimated(totals))


def _monthly_spend_increase_pct(ctx: MetricContext, rule: Rule) -> MetricValue:
    totals = diff_of(ctx).totals
    if totals.cost_per_month.delta_pct is None:
        return MetricValue(
            None, note="the base spend is $0: no percentage (use monthly_spend_increase)"
        )
    return MetricValue(totals.cost_per_month.delta_pct, _estimated(totals))


def _suite_increase(ctx: MetricContext, rule: Rule, key: str) -> MetricValue:
    """One suite's increase, or (no `suite:`) the worst suite's, named in the note."""
    suites: dict[str, NamedBlock] = diff_of(ctx).suites
    if rule.suite is not None:
        block = suites.get(rule.suite)
        if block is None:
            return MetricValue(None, note=f"suite {rule.suite!r} is in neither run")
        value = getattr(block.cost_per_month, key)
        if value is None:
            return MetricValue(
                None, note=f"suite {rule.suite!r} had no spend in the base: no percentage"
            )
        return MetricValue(value, _estimated(block))
    worst: tuple[float, str] | None = None
    for name, block in suites.items():
        value = getattr(block.cost_per_month, key)
        if value is not None and (worst is None or value > worst[0]):
            worst = (value, name)
    if worst is None:
        return MetricValue(None, note="no suite has a comparable spend")
    return MetricValue(worst[0], _estimated(suites[worst[1]]), note=f"largest: suite {worst[1]}")


def _suite_spend_increase(ctx: MetricContext, rule: Rule) -> MetricValue:
    return _suite_increase(ctx, rule, "delta")


def _suite_spend_increase_pct(ctx: MetricContext, rule: Rule) -> MetricValue:
    return _suite_increase(ctx, rule, "delta_pct")


def _quality_drop(ctx: MetricContext, rule: Rule) -> MetricValue:
    quality = diff_of(ctx).quality
    if quality is None:
        return MetricValue(None, note="neither run has quality scores")
    block = quality.score if rule.suite is None else quality.suites.get(rule.suite)
    what = "the run" if rule.suite is None else f"suite {rule.suite!r}"
    if block is None or block.base is None or block.head is None:
        return MetricValue(None, note=f"{what} has no quality score in both runs")
    return MetricValue(100.0 * (block.base - block.head))


def _escalation_rate_increase(ctx: MetricContext, rule: Rule) -> MetricValue:
    rate = diff_of(ctx).routing.escalation_rate
    if rate.base is None or rate.head is None or rate.delta is None:
        return MetricValue(None, note="a run reports no escalation rate")
    return MetricValue(100.0 * rate.delta)


METRICS: tuple[Metric, ...] = (
    Metric(
        "monthly_spend_increase",
        "usd_delta",
        "increase of projected spend per month against the baseline ($)",
        _monthly_spend_increase,
        needs_baseline=True,
    ),
    Metric(
        "monthly_spend_increase_pct",
        "pct",
        "increase of projected spend per month against the baseline (%)",
        _monthly_spend_increase_pct,
        needs_baseline=True,
    ),
    Metric(
        "suite_spend_increase",
        "usd_delta",
        "increase of one suite's spend per month ($; no suite: the largest)",
        _suite_spend_increase,
        ("suite",),
        needs_baseline=True,
    ),
    Metric(
        "suite_spend_increase_pct",
        "pct",
        "increase of one suite's spend per month (%; no suite: the largest)",
        _suite_spend_increase_pct,
        ("suite",),
        needs_baseline=True,
    ),
    Metric(
        "quality_drop",
        "points",
        "drop of the quality score against the baseline (points, 0-100 scale)",
        _quality_drop,
        ("suite",),
        needs_baseline=True,
    ),
    Metric(
        "escalation_rate_increase",
        "points",
        "increase of the cascade escalation rate (percentage points)",
        _escalation_rate_increase,
        needs_baseline=True,
    ),
)
