"""The request pipeline: exact cache -> semantic cache -> router -> tier backend -> cascade.

One code path for every backend. Stages run over the whole fixture set in a seeded arrival
order (suites interleaved by traffic weight, each suite in file order so multi-turn
conversations stay in order); caches are stateful, the router scores in batches, and the
backend serves the planned calls. Prices are applied here, in one place.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from costguard.backends import Backend, CallResult, PlannedCall
from costguard.caches.exact import CacheOutcome, ExactResultCache
from costguard.config import StackConfig, TierConfig
from costguard.fixtures import Fixture
from costguard.pricing import TierPrice
from costguard.records import RequestRecord, TierCall
from costguard.router import RouteDecision, RouteInput, Router, router_tokenizer_tier

Progress = Callable[[str, int, int], None]


def arrival_order(fixtures: Sequence[Fixture], seed: int) -> list[int]:
    """Indices of `fixtures` in simulated arrival order.

    At each step a suite is drawn with probability proportional to its remaining weight and
    its next fixture (in file order) arrives. Deterministic for a seed.
    """
    queues: dict[str, list[int]] = {}
    for i, fx in enumerate(fixtures):
        queues.setdefault(fx.suite, []).append(i)
    remaining = {s: sum(fixtures[i].weight for i in q) for s, q in queues.items()}
    pos = {s: 0 for s in queues}
    rng = random.Random(seed)
    suites = sorted(queues)
    order: list[int] = []
    while len(order) < len(fixtures):
        live = [s for s in suites if pos[s] < len(queues[s])]
        total = sum(remaining[s] for s in live)
        pick = rng.random() * total
        chosen = live[-1]
        for s in live:
            pick -= remaining[s]
            if pick < 0:
                chosen = s
                break
        i = queues[chosen][pos[chosen]]
        pos[chosen] += 1
        remaining[chosen] -= fixtures[i].weight
        order.append(i)
    return order


def monthly_requests(fixtures: Sequence[Fixture], config: StackConfig) -> list[float]:
    """Each fixture's requests per month: total x suite share x the fixture's share of its suite.

    Suite shares come from `suites:` in the config, else from the fixtures' summed weights.
    """
    suite_weight: dict[str, float] = {}
    for fx in fixtures:
        suite_weight[fx.suite] = suite_weight.get(fx.suite, 0.0) + fx.weight
    declared = {name: s.share for name, s in config.suites.items() if s.share is not None}
    if declared:
        present = set(suite_weight)
        # Suites with a share but no fixtures carry no traffic here; renormalise over the present ones.
        total_share = sum(v for k, v in declared.items() if k in present)
        shares = {s: declared.get(s, 0.0) / total_share if total_share else 0.0 for s in present}
    else:
        total = sum(suite_weight.values())
        shares = {s: w / total for s, w in suite_weight.items()}
    per_month = config.traffic.requests_per_month
    return [per_month * shares[fx.suite] * fx.weight / suite_weight[fx.suite] for fx in fixtures]


def price_call(price: TierPrice, tier: str, stage: str, result: CallResult) -> TierCall:
    """A served call with its cost: the one place a CallResult is priced (fixtures and observed calls)."""
    return TierCall(
        tier=tier,
        stage=stage,
        input_tokens=result.input_tokens,
        cached_tokens=result.cached_tokens,
        output_tokens=result.output_tokens,
        input_source=result.input_source,
        cached_source=result.cached_source,
        output_source=result.output_source,
        cost_usd=price.cost(result.input_tokens, result.cached_tokens, result.output_tokens),
        cost_estimated=price.estimated,
        latency_s=result.latency_s,
        latency_source=result.latency_source,
        confidence=result.confidence,
        response_ref=result.response_ref,
    )


@dataclass
class PromptTokens:
    """Prompt token counts (and ids where a stage needs them) per tier for every fixture."""

    counts: dict[str, list[int]]  # tier name -> count per fixture index
    sources: dict[str, str]  # tier name -> "exact" | "approximate"
    ids: dict[str, list[Sequence[int]]]  # tier name -> ids per fixture (kept only when needed)


class Pipeline:
    def __init__(
        self,
        config: StackConfig,
        *,
        router: Router,
        backend: Backend,
        prices: dict[str, TierPrice],
        tokens: PromptTokens,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.backend = backend
        self.prices = prices
        self.tokens = tokens
        self.progress = progress or (lambda stage, done, total: None)
        self.incomplete_reason: str | None = None
        self.exact_cache = (
            ExactResultCache(max_temperature=config.caches.exact.max_temperature)
            if config.caches.exact.enabled
            else None
        )

    # -- stages -------------------------------------------------------------------------
    def _route(self, fixtures: Sequence[Fixture]) -> list[RouteDecision]:
        counts = self.tokens.counts[router_tokenizer_tier(self.config)]
        batch = [RouteInput(fx, counts[i]) for i, fx in enumerate(fixtures)]
        decisions = self.router.route(batch)
        if len(decisions) != len(fixtures):
            raise RuntimeError(f"router {self.router.kind} returned {len(decisions)} decisions for {len(fixtures)} requests")
        return decisions

    def _cache(self, fixture: Fixture) -> CacheOutcome:
        if self.exact_cache is None:
            return CacheOutcome("miss")
        return self.exact_cache.lookup(fixture)

    def _plan(self, index: int, fixture: Fixture, tier: TierConfig, stage: str) -> PlannedCall:
        ids = self.tokens.ids.get(tier.name)
        return PlannedCall(
            arrival_index=-1,
            fixture=fixture,
            tier=tier,
            stage=stage,
            prompt_tokens=self.tokens.counts[tier.name][index],
            input_source=self.tokens.sources[tier.name],
            prompt_ids=ids[index] if ids is not None else None,
        )

    def _priced(self, tier: str, stage: str, result: CallResult) -> TierCall:
        return price_call(self.prices[tier], tier, stage, result)

    # -- the run ------------------------------------------------------------------------
    def run(self, fixtures: Sequence[Fixture], *, shard: tuple[int, int] | None = None) -> list[RequestRecord]:
        """Records for every fixture, or for one shard's share of the arrival order.

        Routing and the result caches always run over the whole fixture set, so a shard's
        requests see the same cache outcomes as in an unsharded run; only the shard's calls
        are served. A backend that stops early leaves out the requests it has no reply for
        and sets `incomplete_reason`.
        """
        n = len(fixtures)
        order = arrival_order(fixtures, self.config.traffic.seed)
        monthly = monthly_requests(fixtures, self.config)
        self.progress("route", 0, n)
        decisions = self._route(fixtures)
        self.progress("route", n, n)

        outcomes: dict[int, CacheOutcome] = {}
        for i in order:
            outcomes[i] = self._cache(fixtures[i])
        arrivals = shard_arrivals(n, shard)
        planned: list[PlannedCall] = []
        for arrival in arrivals:
            i = order[arrival]
            call = self._plan(i, fixtures[i], self.config.tier(decisions[i].tier), "primary")
            call.arrival_index = arrival
            if outcomes[i].outcome in ("exact", "semantic"):
                call.answered_by = outcomes[i].outcome
            planned.append(call)
        results = self.backend.execute(planned)
        self.incomplete_reason = getattr(self.backend, "incomplete_reason", None)
        self.progress("serve", len(planned), len(planned))

        # The counterfactual: every request on the largest tier, no caches, no cascade.
        largest = self.config.largest
        served = [(pos, arrival) for pos, arrival in enumerate(arrivals) if results[pos] is not None]
        cf_planned = []
        for _, arrival in served:
            i = order[arrival]
            call = self._plan(i, fixtures[i], largest, "counterfactual")
            call.arrival_index = arrival
            cf_planned.append(call)
        cf_results = self._counterfactual_results(cf_planned)

        records: list[RequestRecord | None] = [None] * n
        for (pos, arrival), cf_result in zip(served, cf_results, strict=True):
            i = order[arrival]
            fx = fixtures[i]
            result = results[pos]
            assert result is not None
            decision = decisions[i]
            if result.tier is not None:  # an external router chose when it served the request
                decision = RouteDecision(result.tier, "external router (reply model)")
            outcome = outcomes[i]
            primary = self._priced(decision.tier, "primary", result)
            cf = self._priced(largest.name, "counterfactual", cf_result)
            records[i] = RequestRecord(
                fixture_id=fx.id,
                suite=fx.suite,
                location=fx.location,
                content_hash=fx.content_hash,
                weight=fx.weight,
                monthly_requests=monthly[i],
                arrival_index=arrival,
                route_tier=decision.tier,
                route_reason=decision.reason,
                route_score=decision.score,
                cache=outcome.outcome,
                cache_detail=outcome.detail,
                calls=[primary],
                counterfactual=cf,
            )
        return [r for r in records if r is not None]

    def _counterfactual_results(self, calls: list[PlannedCall]) -> list[CallResult]:
        """No caches: projected offline (recorded replies of the largest tier where there are
        any, else the expected/prior output), with no cached prompt tokens."""
        from costguard.backends.offline import OfflineBackend

        if isinstance(self.backend, OfflineBackend):
            counterfactual_backend = self.backend
        else:
            counterfactual_backend = OfflineBackend(self.config, getattr(self.backend, "recordings", None))
        results = []
        for r in counterfactual_backend.execute(calls):
            assert r is not None  # the offline backend answers every call
            r.cached_tokens = 0
            r.cached_source = "none"
            results.append(r)
        return results


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` (1-based) -> (i, n)."""
    from costguard.errors import UsageError

    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 2/4") from None
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text!r}: need 1 <= i <= n")
    return index, count


def shard_arrivals(n: int, shard: tuple[int, int] | None) -> range:
    """Arrival positions of one shard: a contiguous block of the arrival order, so requests that
    arrive close together (a conversation's turns, bursts that share prefixes) stay on one server."""
    if shard is None:
        return range(n)
    index, count = shard
    return range((index - 1) * n // count, index * n // count)
