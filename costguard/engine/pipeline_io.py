"""What the pipeline takes and gives beside its records: prompt token counts per tier, what the
cache layers did, planning a call, and the one function that prices a served call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from costguard.engine.backends import CallResult, PlannedCall
from costguard.engine.caches.semantic import SemanticHit
from costguard.engine.records import TierCall
from costguard.engine.traffic import (  # noqa: F401 (Progress, monthly_requests: re-exported)
    Progress,
    arrival_order,
    arrival_times,
    monthly_requests,
    shard_arrivals,
)
from costguard.model.config import TierConfig
from costguard.model.fixtures import Fixture
from costguard.model.pricing import TierPrice

if TYPE_CHECKING:
    import numpy as np


def price_call(price: TierPrice, tier: str, stage: str, result: CallResult) -> TierCall:
    """A served call with its cost: the one place a CallResult is priced (fixtures and observed calls)."""
    # Positional (in TierCall's field order): this runs twice per request of 100k-request runs,
    # and a call with 15 keywords costs three times as much.
    return TierCall(
        tier,
        stage,
        result.input_tokens,
        result.cached_tokens,
        result.output_tokens,
        result.input_source,
        result.cached_source,
        result.output_source,
        price.cost(result.input_tokens, result.cached_tokens, result.output_tokens),  # cost_usd
        price.estimated,  # cost_estimated
        result.latency_s,
        result.latency_source,
        result.confidence,
        "recorded" if result.confidence is not None else None,  # confidence_source
        result.response_ref,
    )


class SharedCalls:
    """Calls priced once per distinct call, and each shared call's one-call list as one list: a
    million requests projected offline make a few thousand distinct calls, and a record's
    calls are never changed once it is built, so records share them.

    A call is the same when its tier, stage and result's token counts and sources are (the
    price of a tier is the run's one price). Results with anything measured (latency, a
    confidence, a recorded reply) are priced each on their own; and once distinct calls
    outnumber half the calls seen (past the first `FREE`), no new ones are kept: the table
    would cost more than it saves.
    """

    FREE = 4096

    def __init__(self) -> None:
        self._calls: dict[tuple[Any, ...], TierCall] = {}
        self._lists: dict[int, list[TierCall]] = {}  # id of a kept call -> [that call]
        self._seen = 0

    def priced(self, price: TierPrice, tier: str, stage: str, result: CallResult) -> TierCall:
        """`price_call(price, tier, stage, result)`, or the equal call priced earlier."""
        self._seen += 1
        if (
            result.latency_s is not None
            or result.latency_source is not None
            or result.confidence is not None
            or result.response_ref is not None
        ):
            return price_call(price, tier, stage, result)
        key = (
            tier, stage, result.input_tokens, result.cached_tokens, result.output_tokens,
            result.input_source, result.cached_source, result.output_source,
        )  # fmt: skip
        known = self._calls.get(key)
        if known is not None:
            return known
        call = price_call(price, tier, stage, result)
        if len(self._calls) < self.FREE or 2 * len(self._calls) < self._seen:
            self._calls[key] = call
            self._lists[id(call)] = [call]
        return call

    def alone(self, call: TierCall) -> list[TierCall]:
        """[call]: one list for every record whose only call is the kept `call`."""
        kept = self._lists.get(id(call))
        return kept if kept is not None and kept[0] is call else [call]


@dataclass
class PromptTokens:
    """Prompt token counts (and ids where a stage needs them) per tier for every fixture."""

    counts: dict[str, list[int]]  # tier name -> count per fixture index
    sources: dict[str, str]  # tier name -> "exact" | "approximate"
    ids: dict[str, list[Sequence[int]]]  # tier name -> ids per fixture (kept only when needed)
    # tier name -> {fixture index: token ids of the reply a later fixture shows it getting}
    replies: dict[str, dict[int, Sequence[int] | np.ndarray]] = field(default_factory=dict)


@dataclass
class CacheSimulation:
    """What the cache layers did beyond the per-request records (the projection reads it)."""

    prefix: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # tier -> PrefixCacheFleet.summary()
    semantic_threshold: float | None = None
    semantic_sweep: dict[float, list[SemanticHit]] = field(
        default_factory=dict
    )  # judged hits per threshold
    semantic_candidates: int = 0  # fixtures that reached the semantic layer
    exact_expired: int = 0  # exact-cache lookups that found an expired entry
    # Not carried by shard reports: the run's own view of its fixtures. Requests per month of
    # every fixture (by fixture index), and the fixture indices a shard's records hold (None:
    # all), so a shard reports only its own semantic hits (the sweep covers every fixture).
    fixture_monthly: list[float] | None = None
    shard_fixtures: frozenset[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, carried by shard reports so `costguard merge` reports the caches like an unsharded run."""
        return {
            "prefix": self.prefix,
            "semantic_threshold": self.semantic_threshold,
            "semantic_sweep": [
                [t, [asdict(h) for h in hits]] for t, hits in self.semantic_sweep.items()
            ],
            "semantic_candidates": self.semantic_candidates,
            "exact_expired": self.exact_expired,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheSimulation:
        return cls(
            prefix=data.get("prefix", {}),
            semantic_threshold=data.get("semantic_threshold"),
            semantic_sweep={
                float(t): [SemanticHit(**h) for h in hits]
                for t, hits in data.get("semantic_sweep", [])
            },
            semantic_candidates=int(data.get("semantic_candidates", 0)),
            exact_expired=int(data.get("exact_expired", 0)),
        )


def plan_call(
    tokens: PromptTokens, index: int, fixture: Fixture, tier: TierConfig, stage: str
) -> PlannedCall:
    """A call of fixture `index` on `tier`, with its prompt token count (and ids, where kept)."""
    ids = tokens.ids.get(tier.name)
    # Positional (PlannedCall's field order: arrival_index, fixture, tier, stage, prompt_tokens,
    # input_source, prompt_ids): planned for every request of 100k-request runs, twice.
    return PlannedCall(
        -1,
        fixture,
        tier,
        stage,
        tokens.counts[tier.name][index],
        tokens.sources[tier.name],
        ids[index] if ids is not None else None,
    )
