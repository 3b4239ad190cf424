"""The RunReport as typed models: what stages hand each other and what renderers read.

The JSON a run writes (docs/report-format.md) validates into `RunReportModel`; every section
below is a field with a type, so a renderer writes `report.model.totals.cost_per_month`, never
`report["totals"]["cost_per_month"]`. Sections allow extra keys: a newer minor version may add
fields, and an older reader keeps them (and writes them back) instead of failing. The per-fixture
records are typed by `FixtureRecord` but are not part of `RunReportModel`: a report may hold 100k
of them, and where they are stored (inline, a sidecar) is the report's business, not a reader's.

`costguard schema` publishes the JSON Schema of these models beside the config schemas.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from costguard.report.model.base import Section
from costguard.report.model.caches import (
    Cache,
    CacheBypass,
    ExactCache,
    PiiBypass,
    PrefixCache,
    PrefixTier,
    SemanticCache,
    SemanticHits,
    SweepRow,
)
from costguard.report.model.outcomes import (
    Agreement,
    AgreementTier,
    ClientCounters,
    Latency,
    Quality,
    QualityBlock,
    Replay,
    ReplayLatency,
    ReplayRequests,
    ServerCounters,
    ServerMetrics,
)
from costguard.report.model.routing import (
    ComparisonQuality,
    Counterfactual,
    Escalation,
    RouterInfo,
    RouterOverhead,
    RouterThreshold,
    Routing,
    RoutingBaseline,
    RoutingComparison,
    Saving,
    Timing,
)
from costguard.report.model.usage import (
    Distribution,
    Stack,
    StackTier,
    SuiteUsage,
    TierPricing,
    TierUsage,
    TokensPerRequest,
    Totals,
    Usage,
)

__all__ = [
    "Agreement",
    "AgreementTier",
    "Cache",
    "CacheBypass",
    "Call",
    "ClientCounters",
    "ComparisonQuality",
    "Counterfactual",
    "Distribution",
    "Escalation",
    "ExactCache",
    "FixtureRecord",
    "Latency",
    "PiiBypass",
    "PrefixCache",
    "PrefixTier",
    "Quality",
    "QualityBlock",
    "Replay",
    "ReplayLatency",
    "ReplayRequests",
    "RouterInfo",
    "RouterOverhead",
    "RouterThreshold",
    "Routing",
    "RoutingBaseline",
    "RoutingComparison",
    "RunReportModel",
    "Saving",
    "Section",
    "SemanticCache",
    "SemanticHits",
    "ServerCounters",
    "ServerMetrics",
    "Stack",
    "StackTier",
    "SuiteUsage",
    "SweepRow",
    "TierPricing",
    "TierUsage",
    "Timing",
    "TokensPerRequest",
    "Totals",
    "Usage",
    "run_report_schema",
]


# ---- the report -----------------------------------------------------------------------------


class RunReportModel(Section):
    """Everything a RunReport says except its per-fixture records (see `FixtureRecord`)."""

    kind: Literal["run"] = "run"
    schema_version: str
    costguard_version: str | None = None
    created_at: str | None = None
    complete: bool = False
    incomplete_reason: str | None = None
    backend: str = "offline"
    stack: Stack | None = None
    traffic: dict[str, Any] = {}
    inputs: dict[str, Any] = Field(default_factory=dict, description="sha256 of every input")
    totals: Totals
    tiers: dict[str, TierUsage]
    suites: dict[str, SuiteUsage]
    cache: Cache = Cache()
    routing: Routing = Routing()
    counterfactual: Counterfactual | None = None
    provenance: dict[str, dict[str, int]] = {}
    warnings: list[str] = []
    timing: Timing = Timing()
    quality: Quality | None = None
    latency: Latency | None = None
    agreement: Agreement | None = None
    replay: Replay | None = None
    server_metrics: dict[str, ServerMetrics] = {}


class Call(Section):
    tier: str
    stage: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    input_source: str
    cached_source: str
    output_source: str
    cost_usd: float
    cost_estimated: bool = False
    estimated: bool = False
    latency_s: float | None = None
    confidence: float | None = None
    confidence_source: str | None = None


class FixtureRecord(Section):
    """One fixture's (or one recorded call's) outcome: a line of the report's `records`."""

    id: str
    suite: str | None = None
    location: str | None = None
    content_hash: str | None = None
    monthly_requests: float
    route: dict[str, Any] = {}
    cache: dict[str, Any] = {}
    served_by: str | None = None
    escalated: bool = False
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_per_month: float = 0.0
    saved_by_cache_usd: float = 0.0
    estimated: bool = False
    calls: list[Call] = []
    counterfactual: Call | None = None
    quality: dict[str, Any] | None = None
    extra: dict[str, Any] = {}


def run_report_schema() -> dict[str, Any]:
    """The RunReport's JSON Schema: the model plus `records` (a list of FixtureRecord)."""
    schema = RunReportModel.model_json_schema()
    record = FixtureRecord.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    defs.update(record.pop("$defs", {}))
    defs["FixtureRecord"] = record
    schema["properties"]["records"] = {
        "type": "array",
        "items": {"$ref": "#/$defs/FixtureRecord"},
        "description": "one per fixture, in arrival order",
    }
    schema["required"] = [*schema.get("required", []), "records"]
    schema["title"] = "costguard RunReport"
    return schema
