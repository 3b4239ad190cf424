"""Usage blocks (totals, tiers, suites) and the stack the run projected."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from costguard.report.model.base import Section

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
