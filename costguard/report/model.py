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

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A report section: typed fields, extra keys kept (minor versions add fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ---- usage: totals, tiers, suites -----------------------------------------------------------


class Distribution(Section):
    """A traffic-weighted distribution (costguard.model.stats.weighted_distribution)."""

    mean: float
    p50: float
    p95: float
    p99: float
    max: float


class TokensPerRequest(Section):
    input: Distribution
    cached: Distribution | None = None
    output: Distribution
    total: Distribution


class Usage(Section):
    """The usage block of the totals, each tier and each suite (monthly projections, USD)."""

    requests_per_month: float
    input_tokens_per_month: float = Field(description="prompt tokens, cached ones included")
    cached_tokens_per_month: float
    output_tokens_per_month: float
    cost_per_month: float
    estimated_cost_per_month: float = Field(0.0, description="the part resting on an estimate")
    estimated: bool = False


class Totals(Usage):
    fixtures: int
    cost_per_request: Distribution
    tokens_per_request: TokensPerRequest
    estimated_share: float = Field(0.0, description="estimated_cost_per_month / cost_per_month")


class TierUsage(Usage):
    share: float
    calls_per_month: float = 0.0
    cost_basis: str = ""
    price_source: str = ""
    model: str | None = None


class SuiteUsage(Usage):
    share: float
    fixtures: int
    cost_per_request: float


# ---- stack ----------------------------------------------------------------------------------


class TierPricing(Section):
    kind: Literal["token", "gpu_time"]
    basis: str
    source: str


class StackTier(Section):
    name: str
    model: str
    quantization: str | None = None
    gpus: int = 1
    gpu: str | None = None
    tokenizer: str | None = None
    tokenizer_exact: bool = True
    tokenizer_exactness: str | None = Field(
        None, description="how the count was made when not exact: `stand-in` or `fallback`"
    )
    pricing: TierPricing


class Stack(Section):
    name: str
    variant: str | None = None
    tiers: list[StackTier] = []
    router: str = "single"
    router_tokenizer_tier: str | None = None
    largest_tier: str | None = None
    caches: dict[str, Any] = Field(default_factory=dict, description="the config's caches block")


# ---- caches ---------------------------------------------------------------------------------


class ExactCache(Section):
    enabled: bool = False
    max_temperature: float = 0.0
    ttl_s: float | None = None
    normalize: list[str] = []
    hit_rate: float = 0.0
    hit_rate_tokens: float = 0.0
    hits_per_month: float = 0.0
    saved_per_month: float = 0.0
    bypassed_per_month: float = 0.0
    expired_lookups: int = 0


class SemanticHits(Section):
    """Judged hits of the semantic cache at one threshold."""

    hits: int = 0
    wrong_hits: int = 0
    unjudged_hits: int = 0
    hits_per_month: float = 0.0
    wrong_hits_per_month: float = 0.0
    unjudged_hits_per_month: float = 0.0
    hit_rate: float = 0.0
    false_hit_rate: float | None = Field(0.0, description="null when there were no hits")


class SweepRow(SemanticHits):
    threshold: float
    shipped: bool


class SemanticCache(SemanticHits):
    enabled: bool = False
    threshold: float = 0.0
    scope: str = ""
    suites_off: list[str] = []
    hit_rate_tokens: float = 0.0
    saved_per_month: float = 0.0
    answer_sources: dict[str, int] = {}
    candidates: int = 0
    sweep: list[SweepRow] = []


class PrefixTier(Section):
    simulated: bool
    instances: int = 1
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    capacity_tokens: float | None = None
    capacity_source: str | None = None
    evicted_blocks: int = 0
    calls_per_month: float = 0.0
    input_tokens_per_month: float = 0.0
    cached_tokens_per_month: float = 0.0
    hit_rate_tokens: float = 0.0
    hit_rate_requests: float = 0.0
    saved_per_month: float = 0.0


class PrefixCache(Section):
    enabled: bool = False
    replica_routing: str = ""
    cached_tokens_per_month: float = 0.0
    hit_rate_tokens: float = 0.0
    hit_rate: float = 0.0
    hit_rate_requests: float = 0.0
    saved_per_month: float = 0.0
    tiers: dict[str, PrefixTier] = {}
    suites: dict[str, dict[str, float]] = {}


class PiiBypass(Section):
    enabled: bool = False
    detectors: list[str] = []
    requests_per_month: dict[str, float] = {}


class CacheBypass(Section):
    requests_per_month: float = 0.0
    reasons: dict[str, float] = {}
    pii: PiiBypass = PiiBypass()


class Cache(Section):
    hit_rate: float = Field(0.0, description="share answered by a result cache (exact + semantic)")
    saved_per_month: float = 0.0
    exact: ExactCache = ExactCache()
    semantic: SemanticCache = SemanticCache()
    prefix: PrefixCache = PrefixCache()
    bypass: CacheBypass = CacheBypass()


# ---- routing --------------------------------------------------------------------------------


class RouterThreshold(Section):
    max_score: float
    tier: str


class RouterInfo(Section):
    kind: str = "?"
    description: str | None = None
    score_range: list[float] | None = None
    thresholds: list[RouterThreshold] = []  # routers that cut a score (embedding, length)
    default_tier: str | None = None
    score_unit: str | None = None


class Escalation(Section):
    enabled: bool = False
    from_tier: str | None = None
    to_tier: str | None = None
    threshold: float | None = None
    estimate: str | None = None
    method: str | None = None
    confidence_sources: dict[str, int] = {}
    rate: float = 0.0
    cost_per_month: float = 0.0
    estimated: bool = False


class RoutingBaseline(Section):
    label: str
    cost_per_month: float
    strong_share: float
    quality: float | None = None
    pgr: float | None = None
    apgr: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None


class Saving(Section):
    baseline: str | None = None
    label: str | None = None
    baseline_cost_per_month: float | None = None
    saving_per_month: float
    saving_pct: float


class ComparisonQuality(Section):
    available: bool = False
    reason: str | None = None
    note: str | None = None
    labelled_fixtures: int = 0
    labelled_share: float = 0.0


class RoutingComparison(Section):
    available: bool = False
    reason: str | None = None
    estimated: bool = False
    baselines: dict[str, RoutingBaseline] = {}
    savings: dict[str, Saving] = {}
    quality: ComparisonQuality = ComparisonQuality()


class Routing(Section):
    shares: dict[str, float] = {}
    cache_share: float = 0.0
    escalation_rate: float = 0.0
    escalation_cost_per_month: float = 0.0
    escalation_estimated: bool = False
    escalation: Escalation = Escalation()
    router: RouterInfo = RouterInfo()
    tier_order: list[str] = []
    weak_tier: str | None = None
    strong_tier: str | None = None
    routed_shares: dict[str, float] = {}
    strong_share: float | None = None
    comparison: RoutingComparison = RoutingComparison()


class RouterOverhead(Section):
    source: str = "not_measured"
    method: str = ""
    samples: int = 0
    p50_s: float | None = None
    p99_s: float | None = None
    mean_s: float | None = None
    requests_per_month: float | None = None
    price_basis: str | None = None
    cost_per_request_usd: float | None = None
    cost_per_month: float | None = None
    cost_estimated: bool = False


class Timing(Section):
    seconds: float | None = None
    stages: dict[str, float] = {}
    router_overhead: RouterOverhead | None = None


class Counterfactual(Section):
    label: str
    tier: str | None = None
    cost_per_month: float
    saving_per_month: float
    saving_pct: float = Field(description="percent (0..100) of the counterfactual cost")


# ---- quality, latency, agreement ------------------------------------------------------------


class QualityBlock(Section):
    fixtures: int = 0
    measured: int = 0
    unmeasured: int = 0
    partial: int = 0
    passed: int = 0
    failed: int = 0
    score: float | None = None
    pass_rate: float | None = None


class Quality(QualityBlock):
    unmeasured_reasons: dict[str, int] = {}
    assertions: dict[str, dict[str, int]] = {}
    suites: dict[str, QualityBlock] = {}
    tiers: dict[str, QualityBlock] = {}


class Latency(Section):
    e2e_s: Distribution
    measured_requests: int
    model_requests: int
    coverage: float


class AgreementTier(Section):
    fixtures: int
    mean: float
    p10: float
    min: float


class Agreement(Section):
    reference_tier: str
    tiers: dict[str, AgreementTier] = {}
    lowest: list[dict[str, Any]] = []


# ---- live runs ------------------------------------------------------------------------------


class ReplayRequests(Section):
    planned: int = 0
    answered_by_cache: int = 0
    sent: int = 0
    completed: int = 0
    failed: int = 0
    retries: int = 0


class ReplayLatency(Section):
    """`vllm bench serve`'s latency figures, in milliseconds (null without streaming)."""

    mean_ttft_ms: float | None = None
    median_ttft_ms: float | None = None
    p99_ttft_ms: float | None = None
    mean_tpot_ms: float | None = None
    median_tpot_ms: float | None = None
    p99_tpot_ms: float | None = None
    mean_itl_ms: float | None = None
    median_itl_ms: float | None = None
    p99_itl_ms: float | None = None
    mean_e2el_ms: float | None = None
    median_e2el_ms: float | None = None
    p99_e2el_ms: float | None = None


class Replay(Section):
    concurrency: int
    request_rate_per_s: float | None = None
    stream: bool = False
    duration_s: float
    requests: ReplayRequests
    request_throughput: float = Field(description="requests per second")
    input_throughput: float = 0.0
    output_throughput: float = 0.0
    latency: dict[str, ReplayLatency] = Field(default_factory=dict, description="`all` and tiers")
    distribution: dict[str, dict[str, dict[str, float] | None]] = Field(
        default_factory=dict,
        description="`all` and tiers: ttft/tpot/itl/e2el percentiles p0..p100, count, mean (ms)",
    )
    stopped: str | None = None


class ServerCounters(Section):
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0


class ClientCounters(Section):
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0


class ServerMetrics(Section):
    available: bool
    reason: str | None = None
    server: ServerCounters | None = None
    client: ClientCounters | None = None
    discrepancies: list[str] = []


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
