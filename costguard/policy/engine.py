"""Policies: named rules over report metrics (budgets, shares, floors, regressions), each fail or warn.

```yaml
version: 1
rules:
  monthly_spend:            # the rule's name (pytest node id, annotations, PR comment)
    metric: monthly_spend
    max: 25000
    level: fail             # fail | warn
```
A rule names a metric from `costguard.policy.registry` (built-ins plus the `costguard.metrics`
entry-point group). Evaluation is a pure function of the report (and baseline).
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError
from costguard.model.policy_file import (  # noqa: F401 (the policy file's grammar, re-exported)
    SELECTORS,
    STATS,
    TOKEN_KINDS,
    PolicyFile,
    QualityPolicy,
    Rule,
    Waiver,
)
from costguard.model.yamlio import line_of, load_yaml, validate
from costguard.policy.metric import Metric, MetricContext, MetricValue  # noqa: F401 (re-exported)
from costguard.policy.registry import METRICS, register_metric  # noqa: F401 (re-exported)


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
    metrics: Mapping[str, Metric] = field(
        default_factory=lambda: METRICS, repr=False
    )  # named by rules


def load_policy(path: str | Path, *, metrics: Mapping[str, Metric] = METRICS) -> Policy:
    """Read and check a policy file: every rule names a known metric with the selectors it takes."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with `rules:`", file=path, line=1)
    parsed = validate(PolicyFile, raw, file=path)
    lines = {name: line_of(raw, ("rules", name)) for name in parsed.rules}
    for name, rule in parsed.rules.items():
        metric = metrics.get(rule.metric)
        line = lines[name]
        if metric is None:
            import difflib

            close = difflib.get_close_matches(rule.metric, list(metrics), n=1)
            hint = (
                f" (did you mean {close[0]!r}?)"
                if close
                else f" (known: {', '.join(sorted(metrics))})"
            )
            raise ConfigError(
                f"unknown metric {rule.metric!r}{hint}",
                key=f"rules.{name}.metric",
                file=path,
                line=line,
            )
        for sel in SELECTORS:
            if getattr(rule, sel) is not None and sel not in metric.selectors:
                raise ConfigError(
                    f"metric {rule.metric!r} takes no {sel!r}"
                    + (f" (it takes: {', '.join(metric.selectors)})" if metric.selectors else ""),
                    key=f"rules.{name}.{sel}",
                    file=path,
                    line=line,
                )
        for sel in metric.required:
            if getattr(rule, sel) is None:
                raise ConfigError(
                    f"metric {rule.metric!r} needs {sel}:",
                    key=f"rules.{name}",
                    file=path,
                    line=line,
                )
        problem = metric.check(rule) if metric.check is not None else None
        if problem:
            raise ConfigError(problem, key=f"rules.{name}", file=path, line=line)
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
        metrics=metrics,
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


# How a metric's value reads, by its unit (anything else: `{:g}`).
_FORMATS: dict[str, Callable[[float], str]] = {
    "usd": lambda v: f"${v:,.2f}",
    "usd_delta": lambda v: f"{'-' if v < 0 else '+'}${abs(v):,.2f}",
    "usd_per_request": lambda v: f"${v:,.6f}",
    "ratio": lambda v: f"{100 * v:.1f}%",
    "pct": lambda v: f"{v:+.1f}%",
    "points": lambda v: f"{v:+.1f} pts",
    "tokens": lambda v: f"{v:,.0f}",
    "seconds": lambda v: f"{v * 1000:,.1f} ms",
    "count": lambda v: f"{v:,.0f}",
}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return _FORMATS.get(unit, lambda v: f"{v:g}")(value)


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
        metric = policy.metrics[rule.metric]
        limit = _limit_text(rule, metric.unit)
        status: str  # the verdict's status: pass | fail | warn | skip
        base = functools.partial(
            Verdict,
            rule=name,
            metric=rule.metric,
            level=rule.level,
            limit=limit,
            unit=metric.unit,
            file=str(policy.path),
            line=policy.lines.get(name),
        )
        if not ctx.report.complete:
            verdicts.append(
                base(
                    status="fail",
                    actual=None,
                    message="the run is incomplete; an incomplete run never passes a policy",
                )
            )
            continue
        if metric.needs_baseline and ctx.baseline is None:
            why = ctx.baseline_reason or "no baseline yet: nothing to compare with"
            if policy.on_no_baseline == "skip":
                verdicts.append(base(status="skip", actual=None, message=why))
                continue
            status = rule.level if policy.on_no_baseline == "fail" else "warn"
            verdict = base(
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
                verdicts.append(base(status="skip", actual=None, message=why))
            else:
                status = rule.level if policy.on_unmeasured == "fail" else "warn"
                verdict = base(status=status, actual=None, message=why)
                _soften(verdict, policy, metric, acknowledgement, today)
                verdicts.append(verdict)
            continue
        mode = policy.on_unmeasured if mv.unmeasured else "ignore"
        unmeasured = f"{mv.unmeasured} fixture(s) in scope have no measured quality (on_unmeasured: {policy.on_unmeasured})"
        if mv.value is None:
            if mode == "ignore":
                verdicts.append(
                    base(status="skip", actual=None, message=mv.note or "not available")
                )
            else:
                status = rule.level if mode == "fail" else "warn"
                message = f"nothing measured: {unmeasured}"
                verdict = base(status=status, actual=None, message=message)
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
        verdict = base(status=status, actual=mv.value, message=message, estimated=mv.estimated)
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
