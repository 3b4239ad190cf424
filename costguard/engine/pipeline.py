"""The request pipeline: PII guard -> exact cache -> semantic cache -> router -> tier backend
-> prefix caches -> cascade.

One code path for every backend. Stages run over the whole fixture set in a seeded arrival
order (suites interleaved by traffic weight, each suite in file order so multi-turn
conversations stay in order) at seeded Poisson arrival times; caches are stateful, the router
scores in batches, and the backend serves the planned calls. Prices are applied here, in one place.

What the pipeline takes and gives beside records (prompt token counts, the cache simulation,
priced calls) is `pipeline_io`; its names are importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from costguard.engine.alternatives import (
    counterfactual_results,
    project_offline,
    route_alternatives,
)
from costguard.engine.answers import score_answers
from costguard.engine.backends import Backend, CallResult, PlannedCall
from costguard.engine.backends.offline import OfflineBackend
from costguard.engine.caches.exact import CacheOutcome
from costguard.engine.caches.semantic import SemanticHit, judge, semantic_scope, semantic_text
from costguard.engine.escalation import escalate
from costguard.engine.forked import Forked, fork_usable
from costguard.engine.pipeline_io import (  # noqa: F401 (re-exported)
    CacheSimulation,
    PromptTokens,
    SharedCalls,
    interleave,
    plan_call,
    price_call,
    reply_at,
    with_results,
)
from costguard.engine.quality.assess import QualityScorer
from costguard.engine.records import RequestRecord, TierCall
from costguard.engine.result_caches import ResultCaches, StartedPass
from costguard.engine.routing.router import (
    RouteDecision,
    RouteInput,
    Router,
    RoutingRun,
    measure_overhead,
    overhead_probes,
    router_tokenizer_tier,
)
from costguard.engine.traffic import (  # noqa: F401 (Progress, monthly_requests: re-exported)
    Progress,
    arrival_order,
    arrival_times,
    monthly_requests,
    shard_arrivals,
)
from costguard.model.config import StackConfig
from costguard.model.fixtures import Fixture
from costguard.model.heap import release_freed_memory
from costguard.model.pricing import TierPrice

if TYPE_CHECKING:
    import numpy as np

    from costguard.engine.caches.prefix_fleet import PrefixCacheFleet


Embed = Callable[[list[str]], "np.ndarray"]  # texts -> L2-normalised embeddings, one row each


class Pipeline:
    def __init__(
        self,
        config: StackConfig,
        *,
        router: Router,
        backend: Backend,
        prices: dict[str, TierPrice],
        tokens: PromptTokens,
        prefix: PrefixCacheFleet | None = None,
        embed: Embed | None = None,
        progress: Progress | None = None,
        quality: QualityScorer | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.backend = backend
        self.prices = prices
        self.tokens = tokens
        self.quality = quality
        self.prefix = prefix
        self.embed = embed
        self.progress = progress or (lambda stage, done, total: None)
        self.incomplete_reason: str | None = None
        self.result_caches = ResultCaches(config)  # the PII guard and the exact cache
        self.semantic = self.result_caches.semantic
        if self.semantic is not None and embed is None:
            raise ValueError("the semantic cache is enabled but no embedding function was given")
        self.simulation = CacheSimulation()
        self.stage_seconds: dict[str, float] = {}
        self.routing: RoutingRun | None = None  # set by run(): overhead, cascade method
        self._offline_backend: OfflineBackend | None = None
        self._ran = False  # a pipeline runs once: it lets go of token ids and caches as it goes

    # -- stages -------------------------------------------------------------------------
    def _route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]:
        decisions = self.router.route(batch)
        if len(decisions) != len(batch):
            raise RuntimeError(
                f"router {self.router.kind} returned {len(decisions)} decisions for {len(batch)} requests"
            )
        return decisions

    def _route_batch(self, fixtures: Sequence[Fixture]) -> list[RouteInput]:
        counts = self.tokens.counts[router_tokenizer_tier(self.config)]
        return [RouteInput(fx, counts[i]) for i, fx in enumerate(fixtures)]

    def _semantic_cache(
        self, fixtures: Sequence[Fixture], candidates: list[tuple[int, float]]
    ) -> dict[float, list[SemanticHit]]:
        """Run the semantic layer at the configured threshold and every sweep threshold (unjudged hits)."""
        from costguard.engine.caches.semantic import SemanticCacheSimulation

        assert self.semantic is not None and self.embed is not None
        thresholds = sorted({self.semantic.threshold, *self.semantic.sweep})
        if not candidates:
            return {t: [] for t in thresholds}
        indices = [i for i, _ in candidates]
        embeddings = self.embed([semantic_text(fixtures[i]) for i in indices])
        simulation = SemanticCacheSimulation(
            indices,
            embeddings,
            [semantic_scope(fixtures[i]) for i in indices],
            [t for _, t in candidates],
            ttl_s=self.semantic.ttl_s,
            floor=thresholds[0],
        )
        return {t: simulation.run(t) for t in thresholds}

    def _prefix_caches(
        self,
        order: Sequence[int],
        outcomes: dict[int, CacheOutcome],
        planned: list[PlannedCall],
        results: list[CallResult | None],
        served: Sequence[int],
    ) -> list[dict[str, Any] | None]:
        """Admit every call that reaches a tier to that tier's instance, in arrival order.

        Results whose cached tokens the backend already knows (measured) are left alone.
        Requests answered by a result cache never reach a tier: their would-be call is priced
        with what the instance would have reused at that moment (a lookup that changes nothing).
        Returns per fixture index what the record should say about its instance, as the
        record's `extra` ({"prefix": note}, shared by the records of one instance and kind; None:
        nothing to say).

        Tiers share no instance, so each tier's calls are simulated on their own: with two or
        more tiers to simulate and at least PREFIX_FORK_MIN prompt tokens, some tiers run in a
        forked process while this one runs the others (`prefix_split`); the outcome is the same.
        """
        fleet = self.prefix
        assert fleet is not None
        work: dict[str, list[int]] = {}  # tier -> arrivals it simulates, in arrival order
        for arrival in served:
            call, result = planned[arrival], results[arrival]
            assert result is not None
            tier = call.tier.name
            if not fleet.simulates(tier) or result.cached_source != "none":
                continue
            if call.prompt_ids is None:
                raise RuntimeError(f"no prompt token ids kept for tier {tier!r}")
            work.setdefault(tier, []).append(arrival)

        def simulate(tiers: Sequence[str]) -> tuple[dict[int, tuple[int, int, str]], Any]:
            return fleet.simulate(
                {t: work[t] for t in tiers}, order=order, planned=planned, results=results,
                outcomes=outcomes, replies=self.tokens.replies,
            )  # fmt: skip

        here, there = prefix_split(
            {t: sum(planned[a].prompt_tokens for a in arrivals) for t, arrivals in work.items()}
        )
        elsewhere = Forked(lambda: simulate(there), fork=bool(there))
        done, summary = simulate(here)
        done_there, summary_there = elsewhere.result() if there else ({}, {})
        elsewhere.close()
        done.update(done_there)
        # Every simulated tier, in the fleet's order (a tier with no calls: its empty counters).
        self.simulation.prefix = {**fleet.summary(), **summary, **summary_there}
        self.prefix = None  # what the simulators hold is not read again

        notes: list[dict[str, Any] | None] = [None] * len(order)  # by fixture index
        shared: dict[tuple[Any, str], dict[str, Any]] = {}
        for arrival, (cached, instance, kind) in done.items():
            result = results[arrival]
            assert result is not None
            result.cached_tokens = cached
            result.cached_source = "simulated"
            if instance < 0:
                continue
            extra = shared.get((instance, kind))
            if extra is None:  # records share one (read-only) `extra` per instance and kind
                note = {"instance": instance, "generated_blocks": kind}
                extra = shared[(instance, kind)] = {"prefix": note}
            notes[order[arrival]] = extra
        return notes

    def _offline(self) -> OfflineBackend:
        """The offline backend that projects what this run's backend does not serve (the run's own
        when it is offline; else one over the same recordings, whose counts are not the run's)."""
        if isinstance(self.backend, OfflineBackend):
            return self.backend
        if self._offline_backend is None:
            self._offline_backend = OfflineBackend(
                self.config, getattr(self.backend, "recordings", None)
            )
        return self._offline_backend

    def _counterfactuals(
        self, served: Sequence[int], order: Sequence[int], fixtures: Sequence[Fixture]
    ) -> Iterator[CallResult]:
        """Each served request on the largest tier, no caches, no cascade, in the order served:
        projected a chunk of requests at a time (as one batch would be), so that only a
        chunk's planned calls and results are held while their records are built."""
        largest, offline = self.config.largest, self._offline()
        for start in range(0, len(served), RECORD_CHUNK):
            calls = []
            for arrival in served[start : start + RECORD_CHUNK]:
                i = order[arrival]
                call = plan_call(self.tokens, i, fixtures[i], largest, "counterfactual")
                call.arrival_index = arrival
                calls.append(call)
            yield from counterfactual_results(offline, calls)

    def _priced(self, tier: str, stage: str, result: CallResult) -> TierCall:
        return price_call(self.prices[tier], tier, stage, result)

    def _timed(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0.0) + now - started, 4)
        return now

    # -- the run ------------------------------------------------------------------------
    def run(
        self,
        fixtures: Sequence[Fixture],
        *,
        shard: tuple[int, int] | None = None,
        result_caches: StartedPass | None = None,
    ) -> list[RequestRecord]:
        """Records for every fixture, or for one shard's share of the arrival order.

        Routing and the result caches always run over the whole fixture set, so a shard's
        requests see the same cache outcomes as in an unsharded run; only the shard's calls
        are served (and admitted to the prefix-cache simulators). A backend that stops early
        leaves out the requests it has no reply for and sets `incomplete_reason`.
        `result_caches`: the result-cache pass over these fixtures, already started
        (`result_caches.start_pass`); else it runs here, after routing.
        """
        if self._ran:
            raise RuntimeError("a Pipeline runs once (it lets go of what it ran on as it goes)")
        self._ran = True
        n = len(fixtures)
        clock = time.perf_counter()
        monthly = monthly_requests(fixtures, self.config)
        self.progress("route", 0, n)
        batch = self._route_batch(fixtures)
        decisions = self._route(batch)
        self.progress("route", n, n)
        clock = self._timed("route", clock)
        overhead = measure_overhead(self.router, overhead_probes(batch)) if batch else None
        clock = self._timed("router_overhead", clock)

        passed = (
            result_caches.result()
            if result_caches is not None
            else self.result_caches.run(fixtures)
        )
        order, times, outcomes = passed.order, passed.times, passed.outcomes
        pii, semantic_candidates = passed.pii, passed.semantic_candidates
        if passed.exact_expired is not None:
            self.simulation.exact_expired = passed.exact_expired
        clock = self._timed("exact_cache", clock)

        sweep: dict[float, list[SemanticHit]] = {}
        if self.semantic is not None:
            sweep = self._semantic_cache(fixtures, semantic_candidates)
            for hit in sweep[self.semantic.threshold]:
                source = fixtures[hit.source].id
                outcomes[hit.index] = CacheOutcome(
                    "semantic", f"similar to {source} (cosine {hit.similarity:.3f})", hit.source
                )
            clock = self._timed("semantic_cache", clock)

        arrivals = shard_arrivals(n, shard)
        self.simulation.fixture_monthly = monthly
        if shard is not None:
            self.simulation.shard_fixtures = frozenset(order[a] for a in arrivals)
        planned: list[PlannedCall] = []
        for arrival in range(n):
            i = order[arrival]
            call = plan_call(
                self.tokens, i, fixtures[i], self.config.tier(decisions[i].tier), "primary"
            )
            call.arrival_index = arrival
            if outcomes[i].outcome in ("exact", "semantic"):
                call.answered_by = outcomes[i].outcome
            planned.append(call)
        # Only this shard's calls are served; the others are projected offline so the cache
        # simulators see the whole arrival sequence, exactly as in an unsharded run.
        results: list[CallResult | None] = list(
            project_offline(self._offline(), [planned[a] for a in range(n) if a not in arrivals])
        )
        shard_results = self.backend.execute([planned[a] for a in arrivals])
        results = interleave(n, arrivals, shard_results, results)
        self.incomplete_reason = getattr(self.backend, "incomplete_reason", None)
        self.progress("serve", len(arrivals), len(arrivals))
        clock = self._timed("serve", clock)
        # Arrivals (= positions in `planned` and `results`) of every call answered, and of those
        # of this shard
        answered = with_results(range(n), results)
        served = with_results(arrivals, results)

        # By fixture index: {"prefix": note}, or None
        prefix_notes: list[dict[str, Any] | None] = [None] * n
        if self.prefix is not None:
            prefix_notes = self._prefix_caches(order, outcomes, planned, results, answered)
            clock = self._timed("prefix_cache", clock)
        # Prompt token ids feed the prefix caches only (4 bytes a token, the run's largest
        # holding): let them go before the records are built, with the planned calls (only
        # their results are read from here on).
        self.tokens = replace(self.tokens, ids={}, replies={})
        del planned
        release_freed_memory()  # their many small buffers, before the records are built

        # Judge semantic hits now that recorded responses (if any) are known.
        semantic_notes: dict[int, SemanticHit] = {}
        if self.semantic is not None:
            responses: list[str | None] = [None] * n
            for arrival in answered:
                responses[order[arrival]] = reply_at(results, arrival).text
            judged = {t: [judge(h, fixtures, responses) for h in hits] for t, hits in sweep.items()}
            self.simulation.semantic_threshold = self.semantic.threshold
            self.simulation.semantic_sweep = judged
            self.simulation.semantic_candidates = len(semantic_candidates)
            semantic_notes = {h.index: h for h in judged[self.semantic.threshold]}

        # Who answered what (fixture index -> tier, reply): cache hits are answered with these
        # (quality scoring reads them).
        replies: dict[int, tuple[str, CallResult]] = {}
        if self.quality is not None:
            for arrival in answered:
                reply = reply_at(results, arrival)
                replies[order[arrival]] = (reply.tier or decisions[order[arrival]].tier, reply)

        escalations, tally = escalate(
            self.config, self.router, self.backend, self.tokens, self.prices,
            fixtures, order, decisions, outcomes, results, served,
        )  # fmt: skip
        for i, (second, second_result) in escalations.items():
            # an escalated request is answered by the second tier
            if self.quality is not None:
                replies[i] = (second.tier, second_result)
        clock = self._timed("cascade", clock)
        alternatives = route_alternatives(
            self.config, getattr(self.backend, "recordings", None), self.prices, self.tokens,
            fixtures, batch, {order[arrival] for arrival in served},
        )  # fmt: skip
        del batch

        largest = self.config.largest
        records: list[RequestRecord | None] = [None] * n
        no_extra: dict[str, Any] = {}
        shared = SharedCalls()  # equal calls as one object (read-only once in a record)
        prices, largest_price = self.prices, self.prices[largest.name]
        scored: list[tuple[RequestRecord, int, CacheOutcome]] = []
        counterfactuals = self._counterfactuals(served, order, fixtures)
        # Each reply is let go once priced: the records take the place of the replies.
        for arrival, cf_result in zip(served, counterfactuals, strict=True):
            i = order[arrival]
            fx = fixtures[i]
            result = results[arrival]
            results[arrival] = None
            assert result is not None
            decision = decisions[i]
            if result.tier is not None:  # an external router chose when it served the request
                decision = RouteDecision(result.tier, "external router (reply model)")
            outcome = outcomes[i]
            if tally is not None and i in tally.confidences:
                primary = self._priced(decision.tier, "primary", result)
                primary.confidence, primary.confidence_source = tally.confidences[i]
            else:
                primary = shared.priced(prices[decision.tier], decision.tier, "primary", result)
            cf = shared.priced(largest_price, largest.name, "counterfactual", cf_result)
            # Most records' `extra` is one of a few shared dicts: nothing, or their prefix note.
            extra = prefix_notes[i] or no_extra
            if i in pii or i in semantic_notes:
                own: dict[str, Any] = {}
                if i in pii:
                    own["pii"] = pii[i]
                if i in semantic_notes:
                    hit = semantic_notes[i]
                    own["semantic"] = {
                        "source": fixtures[hit.source].id,
                        "similarity": hit.similarity,
                        "answer_source": hit.answer_source,
                        "correct": hit.correct,
                    }
                extra = {**own, **extra}  # (the prefix note last, as it was always written)
            # Positional, in RequestRecord's field order (one per request of 100k-request runs;
            # matching 19 keywords cost more than building the record).
            record = records[i] = RequestRecord(
                fx.id,  # fixture_id
                fx.suite,
                fx.location,
                fx.content_hash,
                fx.weight,
                monthly[i],  # monthly_requests
                arrival,  # arrival_index
                decision.tier,  # route_tier
                decision.reason,  # route_reason
                decision.score,  # route_score
                fx.label,  # route_label
                round(times[arrival], 3),  # arrival_s
                outcome.outcome,  # cache
                outcome.detail,  # cache_detail
                [primary, escalations[i][0]] if i in escalations else shared.alone(primary),
                cf,  # counterfactual
                None,  # quality
                extra,
                alternatives[i],
            )
            if self.quality is not None:
                scored.append((record, i, outcome))
        clock = self._timed("records", clock)
        if self.quality is not None:
            score_answers(
                self.quality, fixtures, scored, replies,
                backend=self.backend.name, progress=self.progress,
            )  # fmt: skip
        self._timed("quality", clock)
        self.routing = RoutingRun(
            kind=self.router.kind,
            description=getattr(self.router, "description", f"{self.router.kind} router"),
            score_range=getattr(self.router, "score_range", None),
            overhead=overhead,
            cascade=tally.summary() if tally is not None else None,
        )
        return [r for r in records if r is not None]


# Requests whose counterfactual is projected at a time (their planned calls and results are
# held only while their records are built).
RECORD_CHUNK = 1 << 16

# Fewer prompt tokens to simulate than this run in this process alone: a fork pays for itself
# only when the simulation takes longer than starting one and sending its outcomes back.
PREFIX_FORK_MIN = 4_000_000


def prefix_split(work: dict[str, int]) -> tuple[list[str], list[str]]:
    """(tiers simulated here, tiers simulated in a forked process), from each tier's prompt
    tokens to simulate: two groups of about the same size, the larger here; all here when there
    is one tier, fewer than PREFIX_FORK_MIN tokens, or no second core."""
    tiers = sorted(work, key=lambda t: (-work[t], t))
    if len(tiers) < 2 or sum(work.values()) < PREFIX_FORK_MIN or not fork_usable():
        return tiers, []
    here: list[str] = []
    there: list[str] = []
    load = [0, 0]
    for tier in tiers:  # the largest first, each to the lighter group
        side = 0 if load[0] <= load[1] else 1
        (here if side == 0 else there).append(tier)
        load[side] += work[tier]
    return here, there
