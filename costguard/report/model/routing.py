"""The routing section: router, escalation, the baselines comparison, router overhead, timing."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from costguard.report.model.base import Section

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
    sweep_reason: str | None = None  # why the quality sweep figures are absent


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
    samples_s: list[float] = []
    # CPU time of the routing work (min of repeated probes), when measured
    cpu_samples_s: list[float] = []
    cpu_p50_s: float | None = None
    cpu_p99_s: float | None = None
    repeats: int | None = None
    conditions: dict[str, Any] = {}  # when and under what load a stored measurement was taken
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
