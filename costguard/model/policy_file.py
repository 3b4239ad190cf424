"""The policy file's grammar (rules, waivers, quality settings): what `policy.yaml` may say.

Which metrics exist and what they mean is the policy layer's (`costguard.policy.registry`);
this module is only the file format, so the config schemas can be written without it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from pydantic import Field, model_validator

from costguard.model.yamlio import StrictModel

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
