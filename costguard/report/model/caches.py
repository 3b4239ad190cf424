"""The cache section: exact, semantic (with its threshold sweep), prefix, bypass."""

from __future__ import annotations

from pydantic import Field

from costguard.report.model.base import Section

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
