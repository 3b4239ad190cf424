"""Quality, latency and agreement; what live runs add (replay, server metrics)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from costguard.report.model.base import Section
from costguard.report.model.usage import Distribution

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
