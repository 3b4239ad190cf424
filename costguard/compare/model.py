"""The DiffReport as typed models: base / head / delta at run, tier, suite and fixture level.

`costguard.compare.diff` computes every figure once; the terminal, the PR comment, the job
summary (and any other renderer) read these fields. Like the RunReport's sections they allow
extra keys, so a newer minor version's fields survive an older reader. `costguard schema`
publishes the JSON Schema (docs/report-format.md, "DiffReport").
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Section(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Change(Section):
    """One figure on both sides. A missing side is null; `delta_pct` is null when base is 0."""

    base: float | None = None
    head: float | None = None
    delta: float | None = Field(None, description="head - base (null without a baseline)")
    delta_pct: float | None = Field(None, description="100 * delta / base, in percent")


class Pair(Section, Generic[T]):
    """A non-numeric property on both sides (which tier served it, the cache outcome, ...)."""

    base: T | None = None
    head: T | None = None


Status = Literal["added", "removed", "changed", "unchanged", "head_only"]


class RunSummary(Section):
    """Which run a side is, or why there is none (`available` false, `reason` set)."""

    available: bool
    source: str
    reason: str | None = None
    stack: str | None = None
    backend: str | None = None
    created_at: str | None = None
    complete: bool = True
    incomplete_reason: str | None = None
    estimated: bool = False
    estimated_share: float = 0.0
    fixtures: int = 0
    warnings: list[str] = []
    approximate_token_tiers: list[str] = Field(
        default_factory=list, description="tiers whose prompt tokens a stand-in tokenizer counted"
    )


class UsageChanges(Section):
    requests_per_month: Change | None = None
    input_tokens_per_month: Change | None = None
    cached_tokens_per_month: Change | None = None
    output_tokens_per_month: Change | None = None
    cost_per_month: Change = Change()
    estimated: Pair[bool] = Pair[bool]()


class DiffTotals(UsageChanges):
    cost_per_request_mean: Change = Change()
    cost_per_request_p95: Change = Change()
    input_tokens_per_request_mean: Change = Change()
    output_tokens_per_request_mean: Change = Change()
    tokens_per_request_p95: Change = Change()


class NamedBlock(UsageChanges):
    """A tier or a suite on both sides."""

    status: Status
    share: Change | None = None
    cost_per_request: Change | None = None
    fixtures: Change | None = None
    model: Pair[str] | None = None


class FixtureChange(Section):
    id: str
    suite: str | None = None
    location: str | None = None
    status: Status
    prompt_changed: bool = False
    templates_changed: list[str] = []  # with prompt_changed: its template files that changed
    monthly_requests: Change
    input_tokens: Change
    cached_tokens: Change
    output_tokens: Change
    cost_usd: Change
    cost_per_month: Change
    served_by: Pair[str]
    cache: Pair[str]
    escalated: Pair[bool]
    estimated: Pair[bool]
    quality: Change | None = None


class FixtureChanges(Section):
    added: int
    removed: int
    changed: int
    unchanged: int
    total: int
    items: list[FixtureChange] = Field(description="added, removed and changed fixtures only")
    top_movers: list[str] = Field(description="ids, largest |delta $/month| first")


class CacheLayerChange(Section):
    hit_rate: Change | None = None
    hit_rate_tokens: Change | None = None
    saved_per_month: Change | None = None
    cached_tokens_per_month: Change | None = None
    false_hit_rate: Change | None = None


class CacheChanges(Section):
    hit_rate: Change = Change()
    layers: dict[str, CacheLayerChange] = {}


class RoutingChanges(Section):
    escalation_rate: Change = Change()
    escalation_cost_per_month: Change = Change()
    cache_share: Change = Change()
    shares: dict[str, Change] = {}


class QualityChanges(Section):
    score: Change
    suites: dict[str, Change] = {}
    fixtures: Change = Change()
    unmeasured: Change = Change()


class CounterfactualChanges(Section):
    cost_per_month: Change = Change()
    saving_per_month: Change = Change()
    saving_pct: Change = Change()
    label: str | None = None


class VerdictRecord(Section):
    """A policy rule's verdict as recorded in the DiffReport (policy.engine.Verdict)."""

    rule: str
    metric: str
    level: str
    status: Literal["pass", "fail", "warn", "skip"]
    actual: float | None = None
    limit: str = ""
    unit: str = ""
    message: str = ""
    estimated: bool = False
    file: str | None = None
    line: int | None = None
    waived_by: str | None = None


class Acknowledgement(Section):
    label: str
    by: str | None = None


class PolicyOutcome(Section):
    policy: str
    verdicts: list[VerdictRecord]
    acknowledgement: Acknowledgement | None = None
    verdict: Literal["pass", "fail", "warn"] | None = None


class DiffReportModel(Section):
    kind: Literal["diff"] = "diff"
    schema_version: str
    costguard_version: str | None = None
    created_at: str | None = None
    base: RunSummary
    head: RunSummary
    stack: str | None = None
    changed: bool = False
    estimated: bool = False
    totals: DiffTotals
    tiers: dict[str, NamedBlock]
    suites: dict[str, NamedBlock]
    cache: CacheChanges = CacheChanges()
    routing: RoutingChanges = RoutingChanges()
    quality: QualityChanges | None = None
    counterfactual: CounterfactualChanges = CounterfactualChanges()
    fixtures: FixtureChanges
    policy: PolicyOutcome | None = None


def diff_report_schema() -> dict[str, Any]:
    schema = DiffReportModel.model_json_schema()
    schema["title"] = "costguard DiffReport"
    return schema
