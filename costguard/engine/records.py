"""Per-request records: what one fixture cost, on which tier, and how each number was obtained.

Every token count and cost carries its source, so renderers can label what is measured,
counted exactly, simulated or estimated — and never present an estimate as a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Sources of a number. "exact" = counted with the tier's real tokenizer; "measured" = reported
# by a live server / recorded response; "simulated" = cache simulator; the rest are estimates.
INPUT_SOURCES = ("exact", "approximate", "measured")
# "unreported": the server's usage had no prompt_tokens_details, so the cached share is unknown.
CACHED_SOURCES = ("none", "simulated", "measured", "unreported")
OUTPUT_SOURCES = ("measured", "expected", "prior")  # expected/prior are estimates
ESTIMATED_OUTPUT = ("expected", "prior")


@dataclass(slots=True)
class TierCall:
    """One model call on one tier (a cascaded request has two)."""

    tier: str
    stage: str  # "primary" | "escalation" | "counterfactual"
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    input_source: str
    cached_source: str
    output_source: str
    cost_usd: float = 0.0
    cost_estimated: bool = False  # GPU-time pricing from declared throughput
    latency_s: float | None = None
    latency_source: str | None = None
    confidence: float | None = None
    confidence_source: str | None = (
        None  # "recorded" (the tier's own answer) | "estimated" (cascade)
    )
    response_ref: str | None = None  # recorded-response key, when one was used

    @property
    def estimated(self) -> bool:
        return (
            self.output_source in ESTIMATED_OUTPUT
            or self.input_source == "approximate"
            or self.cost_estimated
        )

    def to_dict(self) -> dict[str, Any]:
        # Hand-written rather than dataclasses.asdict: this runs for every call of 100k-request runs.
        out = {
            "tier": self.tier,
            "stage": self.stage,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "input_source": self.input_source,
            "cached_source": self.cached_source,
            "output_source": self.output_source,
            "cost_usd": self.cost_usd,
            "cost_estimated": self.cost_estimated,
            "estimated": self.estimated,
        }
        # The optional fields, in this order, where set (offline calls have none of them).
        if self.latency_s is not None:
            out["latency_s"] = self.latency_s
        if self.latency_source is not None:
            out["latency_source"] = self.latency_source
        if self.confidence is not None:
            out["confidence"] = self.confidence
        if self.confidence_source is not None:
            out["confidence_source"] = self.confidence_source
        if self.response_ref is not None:
            out["response_ref"] = self.response_ref
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TierCall:
        """The inverse of `to_dict` (merging shard reports rebuilds records from their JSON)."""
        return cls(**{name: data[name] for name in cls.__slots__ if name in data})


@dataclass(slots=True)
class RouteAlternatives:
    """The request priced on every tier (no caches, no cascade): the routing baselines' input.

    Written with the record (`alternatives`) so merged shard reports recompute the baselines.
    The costs are a tuple in the order of `tiers`, a tuple that the records of a run share (a
    dict per record would be most of a record's memory in million-request runs).
    """

    prompt_tokens: int  # counted with the router's tokenizer tier: the length baseline's input
    tiers: tuple[str, ...]
    costs: tuple[float, ...]  # the request's cost on each of `tiers`
    estimated: bool  # output tokens expected/prior, or GPU-time prices from declared throughput

    @classmethod
    def of(
        cls, prompt_tokens: int, tier_cost_usd: dict[str, float], estimated: bool
    ) -> RouteAlternatives:
        """From each tier's cost, in the dict's order."""
        tiers = tuple(tier_cost_usd)
        return cls(
            prompt_tokens, _TIERS.setdefault(tiers, tiers), tuple(tier_cost_usd.values()), estimated
        )

    @property
    def tier_cost_usd(self) -> dict[str, float]:
        return dict(zip(self.tiers, self.costs, strict=True))

    def cost_on(self, tier: str) -> float:
        """The request's cost on `tier` (KeyError: not priced on it)."""
        try:
            return self.costs[self.tiers.index(tier)]
        except ValueError:
            raise KeyError(tier) from None


_TIERS: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct tier list


@dataclass(slots=True)
class RequestRecord:
    """The outcome of one fixture through the stack, with its share of monthly traffic."""

    fixture_id: str
    suite: str
    location: str
    content_hash: str
    weight: float
    monthly_requests: float
    arrival_index: int
    route_tier: str
    route_reason: str
    route_score: float | None = None
    route_label: str | None = None  # the fixture's `label:` (simple / complex / a tier name)
    arrival_s: float | None = None  # simulated arrival time (traffic model), seconds from the start
    cache: str = "miss"  # "miss" | "exact" | "semantic" | "bypass"
    cache_detail: str | None = None
    # What serving it on the stack costs. Records of a run may share calls and call lists
    # (`pipeline_io.SharedCalls`): read them, never change them.
    calls: list[TierCall] = field(default_factory=list)
    counterfactual: TierCall | None = None  # the same request on the largest tier, no caches
    quality: dict[str, Any] | None = None
    # What else there is to say (pii, semantic, prefix, templates). Records of a run may share
    # one dict (a million records say the same few things): replace it, never change it.
    extra: dict[str, Any] = field(default_factory=dict)
    alternatives: RouteAlternatives | None = None

    @property
    def cache_hit(self) -> bool:
        return self.cache in ("exact", "semantic")

    @property
    def billed_calls(self) -> list[TierCall]:
        return [] if self.cache_hit else self.calls

    @property
    def served_by(self) -> str:
        if self.cache_hit:
            return f"cache:{self.cache}"
        return self.calls[-1].tier if self.calls else self.route_tier

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.billed_calls)

    @property
    def saved_by_cache_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls) if self.cache_hit else 0.0

    @property
    def escalated(self) -> bool:
        return any(c.stage == "escalation" for c in self.calls)

    @property
    def estimated(self) -> bool:
        return any(c.estimated for c in self.billed_calls)

    def tokens(self, kind: str) -> int:
        return sum(getattr(c, f"{kind}_tokens") for c in self.billed_calls)

    def to_dict(self) -> dict[str, Any]:
        # The derived figures from one pass over the billed calls (same sums, same order, as the
        # properties): this runs for every record of 100k-request runs.
        hit = self.cache_hit
        calls = self.calls
        billed = () if hit else calls
        if len(billed) == 1:  # the usual case: the sums over one call (0 + x, as `sum` adds)
            (c,) = billed
            n_in, n_cached, n_out = c.input_tokens, c.cached_tokens, c.output_tokens
            cost, estimated = 0 + c.cost_usd, c.estimated
        else:
            n_in = sum(c.input_tokens for c in billed)
            n_cached = sum(c.cached_tokens for c in billed)
            n_out = sum(c.output_tokens for c in billed)
            cost, estimated = sum(c.cost_usd for c in billed), any(c.estimated for c in billed)
        out: dict[str, Any] = {
            "id": self.fixture_id,
            "suite": self.suite,
            "location": self.location,
            "content_hash": self.content_hash,
            "weight": self.weight,
            "monthly_requests": self.monthly_requests,
            "arrival_index": self.arrival_index,
            "arrival_s": self.arrival_s,
            "route": self._route_dict(),
            "cache": {"outcome": self.cache, "detail": self.cache_detail},
            "served_by": self.served_by,
            "escalated": self.escalated,
            "input_tokens": n_in,
            "cached_tokens": n_cached,
            "output_tokens": n_out,
            "cost_usd": cost,
            "saved_by_cache_usd": sum(c.cost_usd for c in calls) if hit else 0.0,
            "estimated": estimated,
            "calls": [c.to_dict() for c in calls],
            "counterfactual": self.counterfactual.to_dict() if self.counterfactual else None,
        }
        if self.quality is not None:
            out["quality"] = self.quality
        if self.extra:
            out["extra"] = self.extra
        if self.alternatives is not None:
            alt = self.alternatives
            out["alternatives"] = {
                "prompt_tokens": alt.prompt_tokens,
                "tier_cost_usd": alt.tier_cost_usd,
                "estimated": alt.estimated,
            }
        return out

    def _route_dict(self) -> dict[str, Any]:
        route: dict[str, Any] = {
            "tier": self.route_tier,
            "reason": self.route_reason,
            "score": self.route_score,
        }
        if self.route_label is not None:
            route["label"] = self.route_label
        return route

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        """The inverse of `to_dict`."""
        cf = data.get("counterfactual")
        route = data["route"]
        alt = data.get("alternatives")
        return cls(
            fixture_id=data["id"],
            suite=data["suite"],
            location=data["location"],
            content_hash=data["content_hash"],
            weight=data["weight"],
            monthly_requests=data["monthly_requests"],
            arrival_index=data["arrival_index"],
            route_tier=route["tier"],
            route_reason=route["reason"],
            route_score=route.get("score"),
            route_label=route.get("label"),
            arrival_s=data.get("arrival_s"),
            cache=data["cache"]["outcome"],
            cache_detail=data["cache"].get("detail"),
            calls=[TierCall.from_dict(c) for c in data["calls"]],
            counterfactual=TierCall.from_dict(cf) if cf else None,
            quality=data.get("quality"),
            extra=data.get("extra") or {},
            alternatives=RouteAlternatives.of(
                alt["prompt_tokens"], dict(alt["tier_cost_usd"]), bool(alt["estimated"])
            )
            if alt
            else None,
        )
