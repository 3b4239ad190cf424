"""Policies: named rules over report metrics (budgets, shares, floors, regressions), each fail or warn.

```yaml
version: 1
rules:
  monthly_spend:            # the rule's name (pytest node id, annotations, PR comment)
    metric: monthly_spend
    max: 25000
    level: fail             # fail | warn
```
Metrics are registered in `METRICS`; other modules (routing, caches, quality, diff) register
theirs with `register_metric`. Evaluation is a pure function of the report (and baseline).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from costguard.errors import ConfigError
from costguard.model.yamlio import StrictModel, line_of, load_yaml, validate
from costguard.report.run_report import RunReport

STATS = ("mean", "p50", "p95", "p99", "max")
TOKEN_KINDS = ("input", "cached", "output", "total")
SELECTORS = ("suite", "tier", "stat", "kind", "layer")


class Rule(StrictModel):
    metric: str
    max: float | None = None
    min: float | None = None
    level: Literal["fail", "warn"] = "fail"
    suite: str | None = None
    tier: str | None = None
    stat: Literal["mean", "p50", "p95", "p99", "max"] | None = None
    kind: Literal["input", "cached", "output", "total"] | None = None
    layer: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _bound(self) -> Rule:
        if self.max is None and self.min is None:
            raise ValueError("a rule needs max:, min: or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Waiver(StrictModel):
    """A time-boxed exception: the named rule warns instead of failing until `expires`."""

    rule: str = Field(description="name of the rule under `rules:` that this waiver covers")
    reason: str = Field(min_length=1, description="why (shown in the PR comment and the terminal)")
    expires: _dt.date = Field(
        description="last day the waiver applies (YYYY-MM-DD); after it the rule fails again"
    )
    approved_by: str | None = Field(default=None, description="who approved the exception")

    @model_validator(mode="after")
    def _reason_given(self) -> Waiver:
        if not self.reason.strip():
            raise ValueError("a waiver needs a reason")
        return self

    def describe(self) -> str:
        who = f", approved by {self.approved_by}" if self.approved_by else ""
        return f"waiver until {self.expires.isoformat()}{who}: {self.reason.strip()}"


class QualityPolicy(StrictModel):
    """How quality rules treat fixtures whose quality was not measured (no response to score)."""

    on_unmeasured: Literal["fail", "warn", "ignore"] = Field(
        default="warn",
        description="fail: a quality rule with unmeasured fixtures in its scope is broken; warn: it warns "
        "(and fails only on the measured value); ignore: it is judged on the measured fixtures alone",
    )


class PolicyFile(StrictModel):
    version: Literal[1] = 1
    description: str | None = None
    on_no_baseline: Literal["fail", "warn", "skip"] = Field(
        default="skip",
        description="what a regression rule does when there is no usable baseline (none given, "
        "none found, or an incomplete one): skip it (the default: a repository's first run), "
        "warn, or fail",
    )
    quality: QualityPolicy = Field(default_factory=QualityPolicy)
    rules: dict[str, Rule] = Field(min_length=1)
    waivers: list[Waiver] = Field(
        default_factory=list, description="time-boxed exceptions to rules"
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="settings owned by extensions")


@dataclass
class MetricContext:
    report: RunReport
    baseline: RunReport | None = None
    diff: dict[str, Any] | None = None
    baseline_reason: str | None = None  # why there is no usable baseline, when there is none


@dataclass(frozen=True)
class Acknowledgement:
    """A reviewer accepted this change's regressions (e.g. by a PR label): regression rules warn."""

    label: str
    by: str | None = None

    def describe(self) -> str:
        who = f" (added by {self.by})" if self.by else ""
        return f"acknowledged by the label {self.label!r}{who}"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "by": self.by}


@dataclass(frozen=True)
class MetricValue:
    value: float | None  # None: not available (e.g. no baseline); the rule is skipped, saying why
    estimated: bool = False
    note: str | None = None
    unmeasured: int = (
        0  # fixtures in the rule's scope the value could not cover (see on_unmeasured)
    )
    vacuous: bool = (
        False  # value None: a rate over zero events (n/a); the rule follows on_unmeasured
    )


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # "usd", "usd_per_request", "tokens", "ratio", "pct", "points", "seconds"
    description: str
    compute: Callable[[MetricContext, Rule], MetricValue]
    selectors: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    needs_baseline: bool = False
    check: Callable[[Rule], str | None] | None = None  # a rule's selectors that cannot go together


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    METRICS[metric.name] = metric
    return metric


# -- core budget metrics ---------------------------------------------------------------------


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


for _m in (
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
):
    register_metric(_m)


# -- loading ------------------------------------------------------------------------------------


@dataclass
class Policy:
    path: Path
    rules: dict[str, Rule]
    lines: dict[str, int | None]
    extra: dict[str, Any] = field(default_factory=dict)
    waivers: list[Waiver] = field(default_factory=list)
    waiver_lines: list[int | None] = field(default_factory=list)
    on_unmeasured: str = "warn"  # quality.on_unmeasured: fail | warn | ignore
    on_no_baseline: str = "skip"  # fail | warn | skip: regression rules without a usable baseline


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with `rules:`", file=path, line=1)
    parsed = validate(PolicyFile, raw, file=path)
    lines = {name: line_of(raw, ("rules", name)) for name in parsed.rules}
    for name, rule in parsed.rules.items():
        metric = METRICS.get(rule.metric)
        where = {"file": path, "line": lines[name]}
        if metric is None:
            import difflib

            close = difflib.get_close_matches(rule.metric, list(METRICS), n=1)
            hint = (
                f" (did you mean {close[0]!r}?)"
                if close
                else f" (known: {', '.join(sorted(METRICS))})"
            )
            raise ConfigError(
                f"unknown metric {rule.metric!r}{hint}", key=f"rules.{name}.metric", **where
            )
        for sel in SELECTORS:
            if getattr(rule, sel) is not None and sel not in metric.selectors:
                raise ConfigError(
                    f"metric {rule.metric!r} takes no {sel!r}"
                    + (f" (it takes: {', '.join(metric.selectors)})" if metric.selectors else ""),
                    key=f"rules.{name}.{sel}",
                    **where,
                )
        for sel in metric.required:
            if getattr(rule, sel) is None:
                raise ConfigError(
                    f"metric {rule.metric!r} needs {sel}:", key=f"rules.{name}", **where
                )
        problem = metric.check(rule) if metric.check is not None else None
        if problem:
            raise ConfigError(problem, key=f"rules.{name}", **where)
    waiver_lines = [line_of(raw, ("waivers", i)) for i in range(len(parsed.waivers))]
    for i, waiver in enumerate(parsed.waivers):
        if waiver.rule not in parsed.rules:
            raise ConfigError(
                f"waiver for unknown rule {waiver.rule!r} (rules: {', '.join(parsed.rules)})",
                file=path,
                line=line_of(raw, ("waivers", i, "rule")) or waiver_lines[i],
                key=f"waivers[{i}].rule",
            )
    return Policy(
        path=path,
        rules=dict(parsed.rules),
        lines=lines,
        extra=parsed.extra,
        waivers=list(parsed.waivers),
        waiver_lines=waiver_lines,
        on_unmeasured=parsed.quality.on_unmeasured,
        on_no_baseline=parsed.on_no_baseline,
    )


# -- evaluation ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    rule: str
    metric: str
    level: str
    status: str  # "pass" | "fail" | "warn" | "skip"
    actual: float | None
    limit: str
    unit: str
    message: str
    estimated: bool = False
    file: str | None = None
    line: int | None = None
    waived_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PolicyResult:
    policy: str
    verdicts: list[Verdict]
    acknowledgement: Acknowledgement | None = None

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "fail"]

    @property
    def warned(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "warn"]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else ("warn" if self.warned else "pass")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "verdict": self.verdict,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "acknowledgement": self.acknowledgement.to_dict() if self.acknowledgement else None,
        }


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "usd":
        return f"${value:,.2f}"
    if unit == "usd_delta":
        return f"{'-' if value < 0 else '+'}${abs(value):,.2f}"
    if unit == "usd_per_request":
        return f"${value:,.6f}"
    if unit == "ratio":
        return f"{100 * value:.1f}%"
    if unit == "pct":
        return f"{value:+.1f}%"
    if unit == "points":
        return f"{value:+.1f} pts"
    if unit == "tokens":
        return f"{value:,.0f}"
    if unit == "seconds":
        return f"{value * 1000:,.1f} ms"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:g}"


def _limit_text(rule: Rule, unit: str) -> str:
    parts = []
    if rule.min is not None:
        parts.append(f">= {format_value(rule.min, unit)}")
    if rule.max is not None:
        parts.append(f"<= {format_value(rule.max, unit)}")
    return " and ".join(parts)


def evaluate(
    policy: Policy,
    ctx: MetricContext,
    *,
    acknowledgement: Acknowledgement | None = None,
    today: _dt.date | None = None,
) -> PolicyResult:
    """Every rule's verdict. An incomplete report fails every rule: it never passes a policy.

    A broken `fail` rule becomes a warning when a waiver for it is still valid on `today`
    (UTC date by default), or, for regression rules (metrics that need a baseline), when the
    change was acknowledged. An expired waiver never softens anything: the verdict says so.
    """
    today = today or _dt.datetime.now(_dt.timezone.utc).date()
    verdicts = []
    for name, rule in policy.rules.items():
        metric = METRICS[rule.metric]
        limit = _limit_text(rule, metric.unit)
        base = {
            "rule": name,
            "metric": rule.metric,
            "level": rule.level,
            "limit": limit,
            "unit": metric.unit,
            "file": str(policy.path),
            "line": policy.lines.get(name),
        }
        if not ctx.report.complete:
            verdicts.append(
                Verdict(
                    **base,
                    status="fail",
                    actual=None,
                    message="the run is incomplete; an incomplete run never passes a policy",
                )
            )
            continue
        if metric.needs_baseline and ctx.baseline is None:
            why = ctx.baseline_reason or "no baseline yet: nothing to compare with"
            if policy.on_no_baseline == "skip":
                verdicts.append(Verdict(**base, status="skip", actual=None, message=why))
                continue
            status = rule.level if policy.on_no_baseline == "fail" else "warn"
            verdict = Verdict(
                **base,
                status=status,
                actual=None,
                message=f"{why} (on_no_baseline: {policy.on_no_baseline})",
            )
            _soften(verdict, policy, metric, acknowledgement, today)
            verdicts.append(verdict)
            continue
        mv = metric.compute(ctx, rule)
        if mv.value is None and mv.vacuous:
            why = f"n/a: {mv.note or 'nothing to measure'} (on_unmeasured: {policy.on_unmeasured})"
            if policy.on_unmeasured == "ignore":
                verdicts.append(Verdict(**base, status="skip", actual=None, message=why))
            else:
                status = rule.level if policy.on_unmeasured == "fail" else "warn"
                verdict = Verdict(**base, status=status, actual=None, message=why)
                _soften(verdict, policy, metric, acknowledgement, today)
                verdicts.append(verdict)
            continue
        mode = policy.on_unmeasured if mv.unmeasured else "ignore"
        unmeasured = f"{mv.unmeasured} fixture(s) in scope have no measured quality (on_unmeasured: {policy.on_unmeasured})"
        if mv.value is None:
            if mode == "ignore":
                verdicts.append(
                    Verdict(**base, status="skip", actual=None, message=mv.note or "not available")
                )
            else:
                status = rule.level if mode == "fail" else "warn"
                message = f"nothing measured: {unmeasured}"
                verdict = Verdict(**base, status=status, actual=None, message=message)
                _soften(verdict, policy, metric, acknowledgement, today)
                verdicts.append(verdict)
            continue
        broken = (rule.max is not None and mv.value > rule.max) or (
            rule.min is not None and mv.value < rule.min
        )
        actual = format_value(mv.value, metric.unit)
        est = " (estimated)" if mv.estimated else ""
        if broken:
            status = rule.level
            message = f"{actual}{est} breaks {limit}"
        else:
            status = "pass"
            message = f"{actual}{est} within {limit}"
        if mv.note:
            message += f"; {mv.note}"
        if mv.unmeasured:
            message += f"; {unmeasured}"
            if mode == "fail":
                status = rule.level
            elif mode == "warn" and status == "pass":
                status = "warn"
        verdict = Verdict(
            **base, status=status, actual=mv.value, message=message, estimated=mv.estimated
        )
        _soften(verdict, policy, metric, acknowledgement, today)
        verdicts.append(verdict)
    return PolicyResult(policy=str(policy.path), verdicts=verdicts, acknowledgement=acknowledgement)


def _soften(
    verdict: Verdict, policy: Policy, metric: Metric, ack: Acknowledgement | None, today: _dt.date
) -> None:
    """Apply waivers and the acknowledgement to one verdict (in place)."""
    waivers = [w for w in policy.waivers if w.rule == verdict.rule]
    valid = [w for w in waivers if w.expires >= today]
    expired = [w for w in waivers if w.expires < today]
    if verdict.status == "fail" and valid:
        waiver = max(valid, key=lambda w: w.expires)
        verdict.status = "warn"
        verdict.waived_by = waiver.describe()
        verdict.message += f"; waived ({waiver.describe()})"
        return
    if expired and not valid:
        latest = max(expired, key=lambda w: w.expires)
        if verdict.status == "fail":
            verdict.message += (
                f"; the waiver expired on {latest.expires.isoformat()} ({latest.reason.strip()})"
            )
        elif verdict.status == "pass":
            verdict.message += f"; note: the waiver for this rule expired on {latest.expires.isoformat()}: remove it"
    if ack is not None:
        _acknowledge(verdict, metric, ack)


def _acknowledge(verdict: Verdict, metric: Metric, ack: Acknowledgement) -> None:
    if verdict.status == "fail" and metric.needs_baseline:
        verdict.status = "warn"
        verdict.waived_by = ack.describe()
        verdict.message += f"; {ack.describe()}"


def acknowledge(result: dict[str, Any], ack: Acknowledgement) -> dict[str, Any]:
    """A recorded PolicyResult dict (e.g. inside a DiffReport) with `ack` applied to it."""
    verdicts = []
    for data in result.get("verdicts", []):
        verdict = Verdict(**data)
        metric = METRICS.get(verdict.metric)
        if metric is not None:
            _acknowledge(verdict, metric, ack)
        verdicts.append(verdict)
    return PolicyResult(result.get("policy", ""), verdicts, ack).to_dict()


# Metrics defined in their own modules register themselves on import (they import this module).
from costguard.engine.routing import metrics as _routing_metrics  # noqa: E402,F401
from costguard.policy.metrics import caches as _cache_metrics  # noqa: E402,F401
from costguard.policy.metrics import quality as _floors  # noqa: E402,F401
from costguard.policy.metrics import regression as _regression  # noqa: E402,F401
from costguard.policy.metrics import tokens as _tokens  # noqa: E402,F401
