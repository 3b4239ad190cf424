"""Projection: per-request records x monthly traffic -> totals per run, tier, suite and cache layer.

Pure functions over records; every figure a renderer shows is computed here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from costguard.config import StackConfig
from costguard.pricing import TierPrice
from costguard.quality import quality_section
from costguard.records import RequestRecord


def weighted_percentile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values` where each value stands for `weight` requests."""
    if not values:
        return 0.0
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(w for _, w in pairs)
    if total <= 0:
        return pairs[-1][0]
    threshold = q * total
    acc = 0.0
    for value, weight in pairs:
        acc += weight
        if acc >= threshold - 1e-12 * total:
            return value
    return pairs[-1][0]


def _dist(values: Sequence[float], weights: Sequence[float]) -> dict[str, float]:
    total = sum(weights)
    mean = sum(v * w for v, w in zip(values, weights, strict=True)) / total if total else 0.0
    return {
        "mean": mean,
        "p50": weighted_percentile(values, weights, 0.50),
        "p95": weighted_percentile(values, weights, 0.95),
        "p99": weighted_percentile(values, weights, 0.99),
        "max": max(values) if values else 0.0,
    }


def _usage_block() -> dict[str, float]:
    return {
        "requests_per_month": 0.0,
        "input_tokens_per_month": 0.0,
        "cached_tokens_per_month": 0.0,
        "output_tokens_per_month": 0.0,
        "cost_per_month": 0.0,
        "estimated_cost_per_month": 0.0,
    }


def latency_section(records: Sequence[RequestRecord]) -> dict[str, Any] | None:
    """End-to-end latency of the requests a model served, where every call's latency was measured.

    Cache hits are left out (no model call; their latency is not measured), and so are requests
    with a call of unknown latency; `coverage` is the measured share of model-served traffic.
    None when no latency was measured at all (offline without recorded responses).
    """
    served = [r for r in records if r.billed_calls]
    measured = [r for r in served if all(c.latency_s is not None for c in r.billed_calls)]
    if not measured:
        return None
    values = [sum(c.latency_s or 0.0 for c in r.billed_calls) for r in measured]
    weights = [r.monthly_requests for r in measured]
    served_traffic = sum(r.monthly_requests for r in served)
    return {
        "e2e_s": _dist(values, weights),
        "measured_requests": len(measured),
        "model_requests": len(served),
        "coverage": sum(weights) / served_traffic if served_traffic else 0.0,
    }


def aggregate(records: Sequence[RequestRecord], config: StackConfig, prices: dict[str, TierPrice]) -> dict[str, Any]:
    """The report's aggregate sections: totals, tiers, suites, cache, routing, counterfactual,
    provenance, and when there is anything to say, latency and quality."""
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

    for r in records:
        m = r.monthly_requests
        suite = suites.setdefault(r.suite, {**_usage_block(), "fixtures": 0})
        suite["fixtures"] += 1
        for block in (totals, suite):
            block["requests_per_month"] += m
        served[r.served_by] = served.get(r.served_by, 0.0) + m
        if r.cache_hit:
            cache_hits[r.cache] += m
            cache_saved[r.cache] += m * r.saved_by_cache_usd
        elif r.cache == "bypass":
            bypassed += m
        if r.escalated:
            escalated += m
            escalation_cost += m * sum(c.cost_usd for c in r.calls if c.stage == "escalation")
        if r.counterfactual is not None:
            cf_cost += m * r.counterfactual.cost_usd
        for call in r.billed_calls:
            tier = tiers[call.tier]
            tier["calls_per_month"] += m
            for block in (totals, suite, tier):
                block["input_tokens_per_month"] += m * call.input_tokens
                block["cached_tokens_per_month"] += m * call.cached_tokens
                block["output_tokens_per_month"] += m * call.output_tokens
                block["cost_per_month"] += m * call.cost_usd
                if call.estimated:
                    block["estimated_cost_per_month"] += m * call.cost_usd
            prefix_saved += m * prices[call.tier].cached_saving(call.cached_tokens)
        for call in r.calls:
            provenance["input_tokens"][call.input_source] = provenance["input_tokens"].get(call.input_source, 0) + 1
            provenance["cached_tokens"][call.cached_source] = provenance["cached_tokens"].get(call.cached_source, 0) + 1
            provenance["output_tokens"][call.output_source] = provenance["output_tokens"].get(call.output_source, 0) + 1

    for name, block in tiers.items():
        block["requests_per_month"] = served.get(name, 0.0)
        block["share"] = served.get(name, 0.0) / total_requests if total_requests else 0.0
    for block in suites.values():
        req = block["requests_per_month"]
        block["share"] = req / total_requests if total_requests else 0.0
        block["cost_per_request"] = block["cost_per_month"] / req if req else 0.0
    for block in [totals, *tiers.values(), *suites.values()]:
        block["estimated"] = block["estimated_cost_per_month"] > 0

    costs = [r.cost_usd for r in records]
    totals["cost_per_request"] = _dist(costs, weights)
    totals["tokens_per_request"] = {
        kind: _dist([float(r.tokens(kind)) for r in records], weights) for kind in ("input", "cached", "output")
    }
    totals["tokens_per_request"]["total"] = _dist(
        [float(r.tokens("input") + r.tokens("output")) for r in records], weights
    )
    totals["fixtures"] = len(records)
    totals["estimated_share"] = (
        totals["estimated_cost_per_month"] / totals["cost_per_month"] if totals["cost_per_month"] else 0.0
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
    cache = {
        "exact": {
            "enabled": config.caches.exact.enabled,
            "hit_rate": cache_hits["exact"] / total_requests if total_requests else 0.0,
            "hits_per_month": cache_hits["exact"],
            "saved_per_month": cache_saved["exact"],
            "bypassed_per_month": bypassed,
        },
        "prefix": {
            "cached_tokens_per_month": totals["cached_tokens_per_month"],
            "hit_rate_tokens": (
                totals["cached_tokens_per_month"] / totals["input_tokens_per_month"]
                if totals["input_tokens_per_month"]
                else 0.0
            ),
            "saved_per_month": prefix_saved,
        },
        "hit_rate": (cache_hits["exact"] + cache_hits["semantic"]) / total_requests if total_requests else 0.0,
    }
    routing = {
        "shares": {name: tiers[name]["share"] for name in tiers},
        "cache_share": sum(v for k, v in served.items() if k.startswith("cache:")) / total_requests
        if total_requests
        else 0.0,
        "escalation_rate": escalated / total_requests if total_requests else 0.0,
        "escalation_cost_per_month": escalation_cost,
    }
    sections: dict[str, Any] = {
        "totals": totals,
        "tiers": tiers,
        "suites": dict(sorted(suites.items())),
        "cache": cache,
        "routing": routing,
        "counterfactual": counterfactual,
        "provenance": provenance,
    }
    latency = latency_section(records)
    if latency is not None:
        sections["latency"] = latency
    quality = quality_section(records)
    if quality is not None:
        sections["quality"] = quality
    return sections
