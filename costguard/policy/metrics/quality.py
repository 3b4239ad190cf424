"""Quality floors: policy metrics over the report's `quality` section.

```yaml
quality:
  on_unmeasured: warn          # fail | warn | ignore: fixtures with no measured quality in a rule's scope
rules:
  quality:          {metric: quality_score, min: 0.90}                  # overall (0..1)
  support_quality:  {metric: quality_score, suite: support, min: 0.95}  # one suite
  small_quality:    {metric: quality_score, tier: small, min: 0.85}     # answers of one tier
  pass_rate:        {metric: quality_pass_rate, min: 0.80}              # share of fixtures passing every assertion
  all_measured:     {metric: quality_unmeasured, max: 0}                # fixtures without measured quality
  small_agrees:     {metric: tier_agreement, tier: small, min: 0.8}     # small vs largest tier, same requests
```
A floor is judged on the measured fixtures of its scope; how the unmeasured ones count is the
policy's `quality.on_unmeasured` (see `costguard.policy.engine.evaluate`). The drop against the
baseline is the regression metric `quality_drop` (`costguard.policy.metrics.regression`).
"""

from __future__ import annotations

from costguard.policy.metric import Metric, MetricContext, MetricValue, Rule
from costguard.report.model import Agreement, Quality, QualityBlock


def _one_scope(rule: Rule) -> str | None:
    if rule.suite is not None and rule.tier is not None:
        return "give suite: or tier:, not both (quality is reported per suite and per tier)"
    return None


def quality_scope(ctx: MetricContext, rule: Rule) -> tuple[QualityBlock | None, str]:
    """The quality block a rule looks at (overall, one suite or one tier) and its name."""
    quality = ctx.section("quality", Quality)
    block: QualityBlock | None
    if rule.suite is not None:
        what = f"suite {rule.suite!r}"
        block = quality.suites.get(rule.suite) if quality is not None else None
    elif rule.tier is not None:
        what = f"tier {rule.tier!r}"
        block = quality.tiers.get(rule.tier) if quality is not None else None
    else:
        what, block = "the run", quality
    return block, what


def _unmeasured(block: QualityBlock) -> int:
    return block.unmeasured + block.partial


def _value(ctx: MetricContext, rule: Rule, key: str) -> MetricValue:
    block, what = quality_scope(ctx, rule)
    if block is None:
        return MetricValue(None, note=f"{what} has no fixtures with quality assertions")
    coverage = f"{block.measured} of {block.fixtures} fixtures measured"
    return MetricValue(getattr(block, key), note=coverage, unmeasured=_unmeasured(block))


def _quality_score(ctx: MetricContext, rule: Rule) -> MetricValue:
    return _value(ctx, rule, "score")


def _quality_pass_rate(ctx: MetricContext, rule: Rule) -> MetricValue:
    return _value(ctx, rule, "pass_rate")


def _quality_unmeasured(ctx: MetricContext, rule: Rule) -> MetricValue:
    block, what = quality_scope(ctx, rule)
    if block is None:
        return MetricValue(None, note=f"{what} has no fixtures with quality assertions")
    return MetricValue(
        float(_unmeasured(block)), note=f"of {block.fixtures} fixtures with assertions"
    )


_FLOORS = (
    Metric(
        "quality_score",
        "ratio",
        "quality score (0..1): mean fixture score over measured fixtures, "
        "weighted by traffic (overall, suite: or tier:)",
        _quality_score,
        ("suite", "tier"),
        check=_one_scope,
    ),
    Metric(
        "quality_pass_rate",
        "ratio",
        "share of measured fixtures passing every assertion, weighted by traffic",
        _quality_pass_rate,
        ("suite", "tier"),
        check=_one_scope,
    ),
    Metric(
        "quality_unmeasured",
        "count",
        "fixtures with assertions whose quality was not (fully) measured",
        _quality_unmeasured,
        ("suite", "tier"),
        check=_one_scope,
    ),
)


def _tier_agreement(ctx: MetricContext, rule: Rule) -> MetricValue:
    """Mean similarity of a tier's answers to the largest tier's (no tier: the lowest tier, named)."""
    section = ctx.section("agreement", Agreement)
    if section is None or not section.tiers:
        return MetricValue(
            None, note="no fixture has recorded responses on the largest tier and another tier"
        )
    tiers = section.tiers
    reference = section.reference_tier
    if rule.tier is not None:
        block = tiers.get(rule.tier)
        if block is None:
            return MetricValue(
                None, note=f"tier {rule.tier!r} has no fixtures recorded on it and on {reference}"
            )
        return MetricValue(block.mean, note=f"over {block.fixtures} fixtures, against {reference}")
    name, block = min(tiers.items(), key=lambda kv: kv[1].mean)
    return MetricValue(
        block.mean,
        note=f"lowest: tier {name} over {block.fixtures} fixtures, against {reference}",
    )


METRICS: tuple[Metric, ...] = (
    *_FLOORS,
    Metric(
        "tier_agreement",
        "ratio",
        "mean similarity of a tier's recorded answers to the largest tier's (no tier: the lowest)",
        _tier_agreement,
        ("tier",),
    ),
)
