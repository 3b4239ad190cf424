"""What the pipeline takes and gives beside its records: prompt token counts per tier, what the
cache layers did, planning a call, the one function that prices a served call (and the table
that prices equal calls once), and helpers over results in arrival order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

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


T = TypeVar("T")


class Kept(Generic[T]):
    """Equal values of a run as one object (values never changed once made), by a key that
    says they are equal. Once distinct values outnumber half the values asked for (past the
    first `free`), no new ones are kept: the table would cost more than it saves."""

    def __init__(self, free: int) -> None:
        self._values: dict[Any, T] = {}
        self._asked = 0
        self._free = free

    def __len__(self) -> int:
        return len(self._values)

    def find(self, key: Any) -> T | None:
        """The value kept for `key` (one asked for), or None."""
        self._asked += 1
        return self._values.get(key)

    def keep(self, key: Any, value: T) -> bool:
        """Keep `value` for `key` when there is room; whether it was kept."""
        if len(self._values) < self._free or 2 * len(self._values) < self._asked:
            self._values[key] = value
            return True
        return False


class SharedCalls:
    """Calls priced once per distinct call, and each shared call's one-call list as one list: a
    million requests projected offline make a few thousand distinct calls, and a record's
    calls are never changed once it is built, so records share them.

    A call is the same when its tier, stage and result's token counts and sources are (the
    price of a tier is the run's one price). Results with anything measured (latency, a
    confidence, a recorded reply) are priced each on their own; the table is bounded (`Kept`).
    """

    FREE = 4096

    def __init__(self) -> None:
        self._calls: Kept[TierCall] = Kept(self.FREE)
        self._lists: dict[int, list[TierCall]] = {}  # id of a kept call -> [that call]

    def priced(self, price: TierPrice, tier: str, stage: str, result: CallResult) -> TierCall:
        """`price_call(price, tier, stage, result)`, or the equal call priced earlier."""
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
        known = self._calls.find(key)
        if known is not None:
            return known
        call = price_call(price, tier, stage, result)
        if self._calls.keep(key, call):
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


def interleave(
    n: int,
    arrivals: range,
    shard_results: Sequence[CallResult | None],
    others: Sequence[CallResult | None],
) -> list[CallResult | None]:
    """One result per arrival: the shard's from the backend, the rest (in order) from `others`."""
    out: list[CallResult | None] = []
    rest = iter(others)
    for a in range(n):
        out.append(shard_results[a - arrivals.start] if a in arrivals else next(rest))
    return out


def with_results(arrivals: range, results: Sequence[CallResult | None]) -> Sequence[int]:
    """The arrivals that have a result: the range itself when none is missing (the usual case:
    a list would hold a million ints)."""
    if all(results[a] is not None for a in arrivals):
        return arrivals
    return [a for a in arrivals if results[a] is not None]


def reply_at(results: Sequence[CallResult | None], pos: int) -> CallResult:
    """The reply at `pos`, which the caller knows was answered (no None)."""
    result = results[pos]
    assert result is not None
    return result
