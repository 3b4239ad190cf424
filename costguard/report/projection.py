"""Projection: per-request records x monthly traffic -> totals per run, tier, suite and cache layer.

Pure functions over records; every figure a renderer shows is computed here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from costguard.engine.quality.assess import quality_section
from costguard.engine.records import RequestRecord
from costguard.engine.routing.metrics import router_overhead, routing_details
from costguard.engine.routing.router import RoutingRun
from costguard.model.config import StackConfig
from costguard.model.pricing import TierPrice
from costguard.model.stats import weighted_distribution
from costguard.report.latency import LatencySums

if TYPE_CHECKING:
    from costguard.engine.pipeline import CacheSimulation


def _usage_block() -> dict[str, Any]:
    return {
        "requests_per_month": 0.0,
        "input_tokens_per_month": 0.0,
        "cached_tokens_per_month": 0.0,
        "output_tokens_per_month": 0.0,
        "cost_per_month": 0.0,
        "estimated_cost_per_month": 0.0,
    }


class _PrefixTier:
    """A tier's prefix-cache sums beyond its usage block: $ saved, calls that reused a block."""

    __slots__ = ("simulated", "saved", "calls_with_hits")

    def __init__(self, simulated: bool) -> None:
        self.simulated = simulated
        self.saved = 0.0
        self.calls_with_hits = 0.0


class _PrefixSums:
    """The prefix caches' sums over the billed calls, per tier and suite and over the simulated tiers."""

    def __init__(self, config: StackConfig, simulation: CacheSimulation | None) -> None:
        simulated = simulation.prefix if simulation else {}
        self.tiers = {t.name: _PrefixTier(t.name in simulated) for t in config.tiers}
        self.suites: dict[str, float] = {}  # suite -> $ saved
        self.calls = 0.0  # billed calls on simulated tiers, per month
        self.calls_with_hits = 0.0  # ... that reused any cached block
        self.generated: dict[str, int] = {}  # records per kind of generated-block note


_HITS = ("exact", "semantic")  # result-cache outcomes that answer a request without a model call


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def aggregate(
    records: Sequence[RequestRecord],
    config: StackConfig,
    prices: dict[str, TierPrice],
    simulation: CacheSimulation | None = None,
    routing: RoutingRun | None = None,
) -> dict[str, Any]:
    """The report's aggregate sections: totals, tiers, suites, cache, routing, counterfactual,
    provenance, and when there is anything to say, latency and quality.

    `routing`: the run-level routing facts from the pipeline (router overhead, cascade method).
    """
    weights = [r.monthly_requests for r in records]
    total_requests = sum(weights)

    totals = _usage_block()
    tiers: dict[str, dict[str, Any]] = {}
    for t in config.tiers:
        block = _usage_block()
        block.update(
            {
                "calls_per_month": 0.0,
                "share": 0.0,
                "cost_basis": prices[t.name].basis,
                "price_source": prices[t.name].source,
                "model": t.model,
            }
        )
        tiers[t.name] = block
    suites: dict[str, dict[str, Any]] = {}
    served: dict[str, float] = {}
    cache_hits: dict[str, float] = {"exact": 0.0, "semantic": 0.0}
    cache_saved: dict[str, float] = {"exact": 0.0, "semantic": 0.0}
    bypassed = 0.0
    escalated = 0.0
    escalation_cost = 0.0
    cf_cost = 0.0
    prefix_saved = 0.0
    provenance = {
        "input_tokens": {"exact": 0, "approximate": 0, "measured": 0},
        "cached_tokens": {"none": 0, "simulated": 0, "measured": 0},
        "output_tokens": {"measured": 0, "expected": 0, "prior": 0},
    }

    # One walk over the records gathers every sum of every section (the per-record figures of
    # the distributions too): this runs for every record of 100k-request runs. Each sum adds the
    # same terms in the same order as the section's own definition.
    costs: list[float] = []
    input_tokens: list[float] = []
    cached_tokens: list[float] = []
    output_tokens: list[float] = []
    count_input = provenance["input_tokens"]
    count_cached = provenance["cached_tokens"]
    count_output = provenance["output_tokens"]
    cached_saving = {name: price.cached_saving for name, price in prices.items()}
    prefix = _PrefixSums(config, simulation)
    prefix_tiers = prefix.tiers
    all_input = 0.0  # prompt tokens of every request, served or answered by a result cache
    hit_input = {"exact": 0.0, "semantic": 0.0}
    bypass_reasons: dict[str, float] = {}
    pii: dict[str, float] = {}
    latency = LatencySums()
    for r in records:
        m = r.monthly_requests
        suite = suites.get(r.suite)
        if suite is None:
            suite = suites[r.suite] = {**_usage_block(), "fixtures": 0}
            prefix.suites[r.suite] = 0.0
        suite["fixtures"] += 1
        totals["requests_per_month"] += m
        suite["requests_per_month"] += m
        calls = r.calls
        outcome = r.cache
        hit = outcome in _HITS
        if hit:
            served_by = f"cache:{outcome}"
        else:
            served_by = calls[-1].tier if calls else r.route_tier
        served[served_by] = served.get(served_by, 0.0) + m
        one = calls[0] if len(calls) == 1 else None  # the usual case: no generator needed
        all_input_m = m * (one.input_tokens if one else sum(c.input_tokens for c in calls))
        all_input += all_input_m
        if hit:
            cache_hits[outcome] += m
            cache_saved[outcome] += m * sum(c.cost_usd for c in calls)
            hit_input[outcome] += all_input_m
        elif outcome == "bypass":
            bypassed += m
            extra = r.extra
            reason = "pii" if "pii" in extra else "temperature"
            bypass_reasons[reason] = bypass_reasons.get(reason, 0.0) + m
            for detector in extra.get("pii", ()):
                pii[detector] = pii.get(detector, 0.0) + m
        if (one.stage == "escalation") if one else any(c.stage == "escalation" for c in calls):
            escalated += m
            escalation_cost += m * sum(c.cost_usd for c in calls if c.stage == "escalation")
        if r.counterfactual is not None:
            cf_cost += m * r.counterfactual.cost_usd
        note = r.extra.get("prefix") if r.extra else None
        if note:
            kind = note["generated_blocks"]
            prefix.generated[kind] = prefix.generated.get(kind, 0) + 1
        cost: float = 0  # an int 0 when nothing is billed, as `sum` gives
        n_in = n_cached = n_out = 0
        if not hit:
            for call in calls:
                tier = tiers[call.tier]
                tier["calls_per_month"] += m
                estimated = call.estimated
                # The call's monthly figures, added to the run's, its suite's and its tier's.
                m_in, m_cached = m * call.input_tokens, m * call.cached_tokens
                m_out, m_cost = m * call.output_tokens, m * call.cost_usd
                for block in (totals, suite, tier):
                    block["input_tokens_per_month"] += m_in
                    block["cached_tokens_per_month"] += m_cached
                    block["output_tokens_per_month"] += m_out
                    block["cost_per_month"] += m_cost
                    if estimated:
                        block["estimated_cost_per_month"] += m_cost
                saved = m * cached_saving[call.tier](call.cached_tokens)
                prefix_saved += saved
                prefix.suites[r.suite] += saved
                sums = prefix_tiers[call.tier]
                sums.saved += saved
                if call.cached_tokens:
                    sums.calls_with_hits += m
                if sums.simulated:
                    prefix.calls += m
                    if call.cached_tokens:
                        prefix.calls_with_hits += m
                cost += call.cost_usd
                n_in += call.input_tokens
                n_cached += call.cached_tokens
                n_out += call.output_tokens
            if calls:
                latency.add(calls, m)
        costs.append(cost)
        input_tokens.append(float(n_in))
        cached_tokens.append(float(n_cached))
        output_tokens.append(float(n_out))
        for call in calls:
            count_input[call.input_source] = count_input.get(call.input_source, 0) + 1
            count_cached[call.cached_source] = count_cached.get(call.cached_source, 0) + 1
            count_output[call.output_source] = count_output.get(call.output_source, 0) + 1

    for name, block in tiers.items():
        block["requests_per_month"] = served.get(name, 0.0)
        block["share"] = served.get(name, 0.0) / total_requests if total_requests else 0.0
    for block in suites.values():
        req = block["requests_per_month"]
        block["share"] = req / total_requests if total_requests else 0.0
        block["cost_per_request"] = block["cost_per_month"] / req if req else 0.0
    for block in [totals, *tiers.values(), *suites.values()]:
        block["estimated"] = block["estimated_cost_per_month"] > 0

    totals["cost_per_request"] = weighted_distribution(costs, weights)
    totals["tokens_per_request"] = {
        "input": weighted_distribution(input_tokens, weights),
        "cached": weighted_distribution(cached_tokens, weights),
        "output": weighted_distribution(output_tokens, weights),
        "total": weighted_distribution(
            [i + o for i, o in zip(input_tokens, output_tokens, strict=True)], weights
        ),
    }
    totals["fixtures"] = len(records)
    totals["estimated_share"] = (
        totals["estimated_cost_per_month"] / totals["cost_per_month"]
        if totals["cost_per_month"]
        else 0.0
    )

    largest = config.largest.name
    saving = cf_cost - totals["cost_per_month"]
    counterfactual = {
        "label": f"everything on the largest tier ({largest}), no caches",
        "tier": largest,
        "cost_per_month": cf_cost,
        "saving_per_month": saving,
        "saving_pct": 100.0 * saving / cf_cost if cf_cost else 0.0,
    }
    cache = _cache_section(
        records, config, simulation, totals, tiers, suites, prefix,
        cache_hits=cache_hits, cache_saved=cache_saved, bypassed=bypassed,
        prefix_saved=prefix_saved, all_input=all_input, hit_input=hit_input,
        bypass_reasons=bypass_reasons, pii=pii,
    )  # fmt: skip
    routing_block = {
        "shares": {name: tiers[name]["share"] for name in tiers},
        "cache_share": sum(v for k, v in served.items() if k.startswith("cache:")) / total_requests
        if total_requests
        else 0.0,
        "escalation_rate": escalated / total_requests if total_requests else 0.0,
        "escalation_cost_per_month": escalation_cost,
        **routing_details(records, config, routing),
    }
    sections: dict[str, Any] = {
        "totals": totals,
        "tiers": tiers,
        "suites": dict(sorted(suites.items())),
        "cache": cache,
        "routing": routing_block,
        "counterfactual": counterfactual,
        "provenance": provenance,
        "timing": {"router_overhead": router_overhead(records, config, routing)},
    }
    latency_block = latency.section()
    if latency_block is not None:
        sections["latency"] = latency_block
    quality = quality_section(records)
    if quality is not None:
        sections["quality"] = quality
    return sections


def _cache_section(
    records: Sequence[RequestRecord],
    config: StackConfig,
    simulation: CacheSimulation | None,
    totals: dict[str, Any],
    tiers: dict[str, dict[str, Any]],
    suites: dict[str, dict[str, Any]],
    prefix_sums: _PrefixSums,
    *,
    cache_hits: dict[str, float],
    cache_saved: dict[str, float],
    bypassed: float,
    prefix_saved: float,
    all_input: float,
    hit_input: dict[str, float],
    bypass_reasons: dict[str, float],
    pii: dict[str, float],
) -> dict[str, Any]:
    """Hit rates in requests and tokens, $ saved per layer, bypass reasons, the semantic sweep and
    the prefix caches per tier and suite. Monthly figures weight each fixture by its traffic.
    `all_input`: the prompt tokens of every request (served or answered by a result cache), the
    token base of hit rates; `hit_input`: those of each result cache's hits."""
    caches = config.caches
    total_requests = totals["requests_per_month"]
    exact = {
        "enabled": caches.exact.enabled,
        "max_temperature": caches.exact.max_temperature,
        "ttl_s": caches.exact.ttl_s,
        "normalize": list(caches.exact.normalize),
        "hit_rate": _ratio(cache_hits["exact"], total_requests),
        "hit_rate_tokens": _ratio(hit_input["exact"], all_input),
        "hits_per_month": cache_hits["exact"],
        "saved_per_month": cache_saved["exact"],
        "bypassed_per_month": bypassed,
        "expired_lookups": simulation.exact_expired if simulation else 0,
    }
    semantic = _semantic_block(records, config, simulation, total_requests)
    semantic.update(
        {
            "hit_rate_tokens": _ratio(hit_input["semantic"], all_input),
            "saved_per_month": cache_saved["semantic"],
        }
    )
    prefix = _prefix_block(config, simulation, totals, tiers, suites, prefix_sums, prefix_saved)
    return {
        "exact": exact,
        "semantic": semantic,
        "prefix": prefix,
        "bypass": {
            "requests_per_month": bypassed,
            "reasons": bypass_reasons,
            "pii": {
                "enabled": caches.pii.enabled,
                "detectors": [*caches.pii.detectors, *caches.pii.custom],
                "requests_per_month": pii,
            },
        },
        "hit_rate": _ratio(cache_hits["exact"] + cache_hits["semantic"], total_requests),
        "saved_per_month": cache_saved["exact"] + cache_saved["semantic"] + prefix_saved,
    }


def _semantic_block(
    records: Sequence[RequestRecord],
    config: StackConfig,
    simulation: CacheSimulation | None,
    total_requests: float,
) -> dict[str, Any]:
    semantic = config.caches.semantic
    block: dict[str, Any] = {
        "enabled": semantic.enabled,
        "threshold": semantic.threshold,
        "scope": "requested model + system prompt; embeds the last user message",
        "suites_off": sorted(name for name, s in config.suites.items() if not s.semantic_cache),
    }
    sweep = simulation.semantic_sweep if simulation else {}
    if not semantic.enabled or not sweep:
        block.update(
            {
                "hit_rate": 0.0,
                "hits_per_month": 0.0,
                "wrong_hits_per_month": 0.0,
                "unjudged_hits_per_month": 0.0,
                "false_hit_rate": None,  # no hits: a rate over zero events is n/a, not 0%
                "hits": 0,
                "wrong_hits": 0,
                "unjudged_hits": 0,
                "answer_sources": {},
                "sweep": [],
            }
        )
        return block
    assert simulation is not None  # a sweep comes from one
    # Hits name fixture indices: this run's per-fixture traffic (a merged report's records are
    # every fixture's, in fixture order). A shard reports the hits among its own fixtures.
    monthly = simulation.fixture_monthly or [r.monthly_requests for r in records]
    own = simulation.shard_fixtures
    if own is not None:
        sweep = {t: [h for h in hits if h.index in own] for t, hits in sweep.items()}

    def summarise(hits: Sequence[Any]) -> dict[str, Any]:
        per_month = sum(monthly[h.index] for h in hits)
        wrong = [h for h in hits if h.correct is False]
        unjudged = [h for h in hits if h.correct is None]
        wrong_per_month = sum(monthly[h.index] for h in wrong)
        return {
            "hits": len(hits),
            "wrong_hits": len(wrong),
            "unjudged_hits": len(unjudged),
            "hits_per_month": per_month,
            "wrong_hits_per_month": wrong_per_month,
            "unjudged_hits_per_month": sum(monthly[h.index] for h in unjudged),
            "hit_rate": _ratio(per_month, total_requests),
            # over zero hits there is nothing to be wrong about: n/a (null), never 0%
            "false_hit_rate": _ratio(wrong_per_month, per_month) if hits else None,
        }

    shipped = sweep[semantic.threshold]
    sources: dict[str, int] = {}
    for h in shipped:
        key = h.answer_source or "unknown"
        sources[key] = sources.get(key, 0) + 1
    block.update(summarise(shipped))
    block["answer_sources"] = sources
    block["candidates"] = simulation.semantic_candidates
    block["sweep"] = [
        {"threshold": t, "shipped": t == semantic.threshold, **summarise(hits)}
        for t, hits in sorted(sweep.items())
    ]
    return block


def _prefix_block(
    config: StackConfig,
    simulation: CacheSimulation | None,
    totals: dict[str, Any],
    usage_tiers: dict[str, dict[str, Any]],
    usage_suites: dict[str, dict[str, Any]],
    sums: _PrefixSums,
    prefix_saved: float,
) -> dict[str, Any]:
    """Per tier and suite: the billed calls' prompt and cached tokens (the usage blocks' own sums)
    and what the cached tokens saved."""
    simulated = simulation.prefix if simulation else {}
    tiers: dict[str, dict[str, Any]] = {}
    for t in config.tiers:
        sim = simulated.get(t.name)
        usage, tier_sums = usage_tiers[t.name], sums.tiers[t.name]
        tiers[t.name] = {
            "simulated": sim is not None,
            **(sim or {}),
            "calls_per_month": usage["calls_per_month"],
            "calls_with_hits_per_month": tier_sums.calls_with_hits,
            "input_tokens_per_month": usage["input_tokens_per_month"],
            "cached_tokens_per_month": usage["cached_tokens_per_month"],
            "saved_per_month": tier_sums.saved,
        }
    suites = {
        name: {
            "input_tokens_per_month": usage["input_tokens_per_month"],
            "cached_tokens_per_month": usage["cached_tokens_per_month"],
            "saved_per_month": sums.suites[name],
        }
        for name, usage in usage_suites.items()
    }
    calls_with_hits, calls_total, generated = sums.calls_with_hits, sums.calls, sums.generated
    for block in tiers.values():
        block["hit_rate_tokens"] = _ratio(
            block["cached_tokens_per_month"], block["input_tokens_per_month"]
        )
        block["hit_rate_requests"] = _ratio(
            block["calls_with_hits_per_month"], block["calls_per_month"]
        )
    for block in suites.values():
        block["hit_rate_tokens"] = _ratio(
            block["cached_tokens_per_month"], block["input_tokens_per_month"]
        )
    hit_rate_tokens = _ratio(totals["cached_tokens_per_month"], totals["input_tokens_per_month"])
    return {
        "enabled": bool(simulated),
        "replica_routing": config.caches.prefix.replica_routing,
        "cached_tokens_per_month": totals["cached_tokens_per_month"],
        "hit_rate_tokens": hit_rate_tokens,
        # Like the other layers' hit_rate, a share of requests: calls that reused any cached block.
        "hit_rate": _ratio(calls_with_hits, calls_total),
        "hit_rate_requests": _ratio(calls_with_hits, calls_total),
        "saved_per_month": prefix_saved,
        "generated_blocks": generated,
        "tiers": tiers,
        "suites": dict(sorted(suites.items())),
    }
