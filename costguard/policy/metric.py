"""What a policy metric is: a named value computed from a report (and its baseline), with a unit.

Metrics are plain data (`Metric`) with a pure `compute`; `costguard.policy.registry` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from costguard.model.policy_file import Rule
from costguard.report.run_report import RunReport


@dataclass
class MetricContext:
    report: RunReport
    baseline: RunReport | None = None
    diff: dict[str, Any] | None = None
    baseline_reason: str | None = None  # why there is no usable baseline, when there is none


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
