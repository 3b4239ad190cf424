"""What a policy metric is: a named value computed from a report (and its baseline), with a unit.

Metrics are plain data (`Metric`) with a pure `compute`; `costguard.policy.registry` lists them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pydantic import TypeAdapter

from costguard.compare.model import DiffReportModel
from costguard.model.policy_file import Rule
from costguard.report.run_report import RunReport

T = TypeVar("T")


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


@dataclass
class MetricContext:
    report: RunReport
    baseline: RunReport | None = None
    diff: DiffReportModel | None = None  # the head against the baseline (made when first needed)
    baseline_reason: str | None = None  # why there is no usable baseline, when there is none
    _sections: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def section(self, name: str, kind: type[T]) -> T | None:
        """The report's section `name`, typed as `kind` (its type in `RunReportModel`,
        `costguard.report.model`); None when the report has no such section.

        Sections are read one at a time: a metric depends on its own sections only, so a
        report that holds just those (as a test's does) is enough to compute it.
        """
        if name not in self._sections:
            raw = self.report.get(name)
            self._sections[name] = (
                None if raw is None else _adapter(cast(Any, kind)).validate_python(raw)
            )
        value: T | None = self._sections[name]
        return value


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
