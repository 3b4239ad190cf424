"""Routing metrics: how the router splits traffic, what that saves, and what it costs in quality.

Pure functions over the request records, called once by `projection.aggregate`:

- routed share per tier (the router's decisions, before caches), escalation rate and cost;
- router overhead (per-request scoring latency, and $ when the router is priced): a wall-clock
  figure, so the report keeps it under `timing` with the run's duration;
- the same fixtures re-routed by baselines, each request priced on one tier with no caches and no
  cascade: everything on the largest tier, everything on the smallest, a random router with the
  same tier shares (expected value), and a length router with the same tier shares (the
  known-bad baseline); savings against each, labelled with the baseline;
- RouteLLM's quality metrics where fixtures say which tier answers them well: PGR at the shipped
  thresholds, APGR over an 11-point strong-share sweep (0%, 10%, ..., 100%), CPT(50%) and
  CPT(80%). Quality comes from fixture labels (`simple` = the weakest tier suffices, `complex` =
  only the strongest tier does, a tier name = that tier or stronger) and is labelled as such.

The routing policy metrics over this section (escalation_rate, strong_tier_share, ...) are
in `costguard.policy.metrics.routing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from costguard.engine.records import RequestRecord, RouteAlternatives
from costguard.engine.routing.router import RoutingRun, sufficient_rank, tiers_by_strength
from costguard.model.config import EmbeddingRouterConfig, StackConfig
from costguard.model.stats import percentile

SWEEP_POINTS = [i / 10 for i in range(11)]
QUALITY_SOURCE = "labels"
QUALITY_NOTE = (
    "quality from fixture labels, not measured answers: simple = the weakest tier answers well, "
    "complex = only the strongest tier does, a tier name = that tier or a stronger one"
)


def routing_details(
    records: Sequence[RequestRecord], config: StackConfig, run: RoutingRun | None
) -> dict[str, Any]:
    """The routing section's fields beyond served shares and the escalation totals."""
    order = tiers_by_strength(config)
    strong, weak = order[-1], order[0]
    total = sum(r.monthly_requests for r in records)
    routed = {t: 0.0 for t in order}
    for r in records:
        routed[r.route_tier] = routed.get(r.route_tier, 0.0) + r.monthly_requests
    routed_shares = {
        t: (routed[t] / total if total else 0.0) for t in (t.name for t in config.tiers)
    }
    out: dict[str, Any] = {
        "router": {
            "kind": run.kind if run else (config.router.kind if config.router else "single"),
            "description": run.description if run else None,
            "score_range": list(run.score_range) if run and run.score_range else None,
            **_cut_points(config),
        },
        "tier_order": order,
        "weak_tier": weak,
        "strong_tier": strong,
        "routed_shares": routed_shares,
        "strong_share": routed_shares.get(strong, 0.0),
        "escalation": _escalation(records, run, total),
        "comparison": comparison(records, config, order),
    }
    out["escalation_estimated"] = bool(out["escalation"].get("estimated"))
    return out


def _cut_points(config: StackConfig) -> dict[str, Any]:
    """The router's thresholds on its score (for the HTML report's histogram), when it has them."""
    router = config.router
    thresholds = getattr(router, "thresholds", None)
    if router is None or not thresholds:
        return {}
    cuts = [
        {
            "max_score": float(getattr(t, "max_score", getattr(t, "max_prompt_tokens", 0))),
            "tier": t.tier,
        }
        for t in thresholds
    ]
    return {
        "thresholds": sorted(cuts, key=lambda c: c["max_score"]),
        "default_tier": getattr(router, "default_tier", None),
        "score_unit": "prompt tokens" if router.kind == "length" else "score",
    }


def _escalation(
    records: Sequence[RequestRecord], run: RoutingRun | None, total: float
) -> dict[str, Any]:
    if run is None or run.cascade is None:
        return {"enabled": False}
    escalated = sum(r.monthly_requests for r in records if r.escalated)
    cost = sum(
        r.monthly_requests * c.cost_usd for r in records for c in r.calls if c.stage == "escalation"
    )
    sources = run.cascade.get("confidence_sources", {})
    return {
        "enabled": True,
        **run.cascade,
        "rate": escalated / total if total else 0.0,
        "cost_per_month": cost,
        "estimated": sources.get("estimated", 0) > 0,
    }


def router_overhead(
    records: Sequence[RequestRecord], config: StackConfig, run: RoutingRun | None
) -> dict[str, Any]:
    """Per-request scoring latency (and cost, when the router is priced).

    A wall-clock measurement that differs between runs, so the report keeps it under `timing`.
    """
    routed_requests = sum(r.monthly_requests for r in records if not r.cache_hit)
    if run is None or run.overhead is None:
        return {
            "source": "not_measured",
            "method": "no router ran",
            "samples": 0,
            "p50_s": None,
            "p99_s": None,
            "mean_s": None,
        }
    ov = run.overhead
    samples = ov.samples_s
    block: dict[str, Any] = {
        "source": ov.source,
        "method": ov.method,
        "samples": len(samples),
        "samples_s": [round(x, 6) for x in samples],
        "p50_s": percentile(samples, 0.50) if samples else None,
        "p99_s": percentile(samples, 0.99) if samples else None,
        "mean_s": sum(samples) / len(samples) if samples else None,
        "requests_per_month": routed_requests,
    }
    cpu = ov.cpu_samples_s
    if cpu:
        # CPU time of the routing work (min of repeated probes): what policies gate on, since
        # it does not grow with what else the machine runs the way wall-clock time does.
        block.update(
            cpu_samples_s=[round(x, 6) for x in cpu],
            cpu_p50_s=percentile(cpu, 0.50),
            cpu_p99_s=percentile(cpu, 0.99),
            repeats=ov.repeats,
        )
    if ov.conditions:
        block["conditions"] = dict(ov.conditions)
    pricing = config.router.pricing if isinstance(config.router, EmbeddingRouterConfig) else None
    if pricing is not None:
        if pricing.per_million_requests_usd is not None:
            per_request: float | None = pricing.per_million_requests_usd / 1e6
            block.update(
                price_basis=f"${pricing.per_million_requests_usd:g} per 1M routed requests",
                cost_estimated=False,
            )
        else:
            assert pricing.instance_hour_usd is not None
            mean = block["mean_s"]
            per_request = pricing.instance_hour_usd / 3600 * mean if mean is not None else None
            block.update(
                price_basis=f"${pricing.instance_hour_usd:g}/hour x mean scoring time, one request at a time",
                cost_estimated=True,
            )
        block["cost_per_request_usd"] = per_request
        block["cost_per_month"] = per_request * routed_requests if per_request is not None else None
    return block


def routing_run_from_reports(reports: Sequence[Any]) -> RoutingRun | None:
    """The run-level routing facts of shard reports, for merging them: the router and its overhead
    as the first shard measured them, the cascade's confidence sources summed over the shards."""
    from costguard.engine.routing.router import RouterOverhead

    first = reports[0]
    routing = first.get("routing") or {}
    router = routing.get("router") or {}
    if not router.get("kind"):
        return None
    overhead = None
    block = (first.get("timing") or {}).get("router_overhead") or {}
    if block.get("source"):
        overhead = RouterOverhead(
            list(block.get("samples_s") or []),
            block["source"],
            block.get("method", ""),
            cpu_samples_s=list(block.get("cpu_samples_s") or []),
            repeats=int(block.get("repeats") or 1),
            conditions=dict(block.get("conditions") or {}),
        )
    cascade = None
    escalation = routing.get("escalation") or {}
    if escalation.get("enabled"):
        keys = ("from_tier", "to_tier", "threshold", "estimate", "method")
        cascade = {k: escalation[k] for k in keys if k in escalation}
        totals = {"recorded": 0, "estimated": 0, "none": 0}
        for report in reports:
            sources = ((report.get("routing") or {}).get("escalation") or {}).get(
                "confidence_sources"
            ) or {}
            for k in totals:
                totals[k] += int(sources.get(k, 0))
        cascade["confidence_sources"] = totals
    score_range = router.get("score_range")
    return RoutingRun(
        kind=router["kind"],
        description=router.get("description") or router["kind"],
        score_range=(float(score_range[0]), float(score_range[1])) if score_range else None,
        overhead=overhead,
        cascade=cascade,
    )


# -- baselines and RouteLLM quality metrics --------------------------------------------------------


def pgr_curve(rows: Sequence[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """The exact (strong share, PGR) curve of a scorer swept over every threshold.

    `rows`: (score, weight, gain) per request, gain = q(strong) - q(weak). The highest scores
    go to the strong tier first; tied scores move together. Shares and PGR run from 0 to 1.
    """
    total_w = sum(w for _, w, _ in rows)
    total_gain = sum(w * g for _, w, g in rows)
    if total_w <= 0 or total_gain <= 0:
        return []
    ordered = sorted(rows, key=lambda r: -r[0])
    points = [(0.0, 0.0)]
    acc_w = acc_g = 0.0
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            acc_w += ordered[j][1]
            acc_g += ordered[j][1] * ordered[j][2]
            j += 1
        points.append((acc_w / total_w, acc_g / total_gain))
        i = j
    return points


def pgr_at(curve: Sequence[tuple[float, float]], share: float) -> float:
    """PGR at a strong share, linear between the curve's points."""
    for (s0, p0), (s1, p1) in zip(curve, curve[1:], strict=False):
        if s0 <= share <= s1:
            return p0 if s1 == s0 else p0 + (p1 - p0) * (share - s0) / (s1 - s0)
    return curve[-1][1]


def apgr(curve: Sequence[tuple[float, float]]) -> float:
    """Mean PGR over the 11-point strong-share sweep (trapezoids, as RouteLLM): random = 0.5."""
    values = [pgr_at(curve, s) for s in SWEEP_POINTS]
    inner = sum(values[1:-1]) + (values[0] + values[-1]) / 2
    return inner / (len(values) - 1)


def cpt(curve: Sequence[tuple[float, float]], target: float) -> float:
    """The smallest strong share whose PGR reaches `target` (on the exact curve)."""
    for share, pgr in curve:
        if pgr >= target - 1e-12:
            return share
    return 1.0


def _sweep(curve: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "apgr": apgr(curve),
        "cpt50": cpt(curve, 0.5),
        "cpt80": cpt(curve, 0.8),
        "sweep": [{"strong_share": s, "pgr": pgr_at(curve, s)} for s in SWEEP_POINTS],
    }


def _length_assignment(
    records: Sequence[RequestRecord], order: Sequence[str], shares: dict[str, float]
) -> list[str]:
    """Tiers for `records` by prompt length alone, shortest on the weakest tier, at `shares`."""
    total = sum(r.monthly_requests for r in records)
    bounds, acc = [], 0.0
    for t in order:
        acc += shares.get(t, 0.0)
        bounds.append(acc)
    out = [order[-1]] * len(records)
    prompts = [_alternatives(r).prompt_tokens for r in records]
    ranked = sorted(range(len(records)), key=prompts.__getitem__)  # stable: ties by index
    seen = 0.0
    # The mid-points rise along `ranked` (weights are not negative), so the first tier whose
    # bound holds one never comes before the previous one's.
    k = 0
    for i in ranked:
        m = records[i].monthly_requests
        mid = (seen + m / 2) / total if total else 0.0
        seen += m
        while k < len(bounds) and not mid <= bounds[k] + 1e-12:
            k += 1
        if k < len(bounds):
            out[i] = order[k]
    return out


def comparison(
    records: Sequence[RequestRecord], config: StackConfig, order: Sequence[str]
) -> dict[str, Any]:
    """The router against its baselines on the same fixtures: cost, savings and (labelled) quality."""
    rs = [r for r in records if r.alternatives is not None]
    if not rs:
        return {"available": False, "reason": "no fixture records to compare (observed calls only)"}
    weak, strong = order[0], order[-1]
    total = sum(r.monthly_requests for r in rs)
    shares = {t: 0.0 for t in order}
    for r in rs:
        shares[r.route_tier] += r.monthly_requests / total if total else 0.0
    length_tiers = _length_assignment(rs, order, shares)

    monthly = [r.monthly_requests for r in rs]
    alternatives = [_alternatives(r) for r in rs]
    # Each tier's cost of every request (lists of the records' own floats, one per tier).
    tier_costs = {t: [alt.cost_on(t) for alt in alternatives] for t in order}
    del alternatives
    routed = [r.route_tier for r in rs]

    def cost(tiers: Sequence[str]) -> float:
        """$/month with request i on tiers[i]."""
        return sum(
            m * tier_costs[t][k] for k, (m, t) in enumerate(zip(monthly, tiers, strict=True))
        )

    def constant(tier: str) -> list[str]:
        return [tier] * len(rs)

    random_cost = sum(
        m * sum(shares[t] * tier_costs[t][k] for t in order) for k, m in enumerate(monthly)
    )
    rows: dict[str, dict[str, Any]] = {
        "router": {
            "label": "this router",
            "cost_per_month": cost(routed),
            "strong_share": shares[strong],
        },
        "all_largest": {
            "label": f"everything on the largest tier ({strong})",
            "cost_per_month": cost(constant(strong)),
            "strong_share": 1.0,
        },
        "all_smallest": {
            "label": f"everything on the smallest tier ({weak})",
            "cost_per_month": cost(constant(weak)),
            "strong_share": 0.0,
        },
        "random": {
            "label": "random router with the same tier shares (expected value)",
            "cost_per_month": random_cost,
            "strong_share": shares[strong],
        },
        "length": {
            "label": "length router with the same tier shares (shortest prompts on the weakest tier)",
            "cost_per_month": cost(length_tiers),
            "strong_share": shares[strong],
        },
    }
    router_cost = rows["router"]["cost_per_month"]
    savings = {}
    for name in ("all_largest", "random", "length", "all_smallest"):
        base = rows[name]["cost_per_month"]
        savings[f"vs_{name}"] = {
            "baseline": name,
            "label": rows[name]["label"],
            "baseline_cost_per_month": base,
            "saving_per_month": base - router_cost,
            "saving_pct": 100.0 * (base - router_cost) / base if base else 0.0,
        }
    out: dict[str, Any] = {
        "available": True,
        "basis": "each request priced on one tier with no caches and no cascade, at the projected output tokens",
        "estimated": any(r.alternatives.estimated for r in rs),  # type: ignore[union-attr]
        "tier_shares": shares,
        "baselines": rows,
        "savings": savings,
    }
    out["quality"] = _quality(rs, order, shares, length_tiers, rows)
    return out


def _quality(
    rs: Sequence[RequestRecord],
    order: Sequence[str],
    shares: dict[str, float],
    length_tiers: Sequence[str],
    rows: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    ranks = [sufficient_rank(r.route_label, order) for r in rs]
    labelled = [i for i, rank in enumerate(ranks) if rank is not None]
    weight = sum(rs[i].monthly_requests for i in labelled)
    total = sum(r.monthly_requests for r in rs)
    if not labelled or weight <= 0:
        return {
            "available": False,
            "reason": "no fixture has a label (simple, complex or a tier name); PGR/APGR/CPT need quality "
            "for both the weak and the strong tier",
        }
    position = {t: k for k, t in enumerate(order)}

    def q(i: int, tier: str) -> float:
        rank = ranks[i]
        return 1.0 if rank is not None and position[tier] >= rank else 0.0

    labelled_monthly = [rs[i].monthly_requests for i in labelled]
    labelled_ranks = [rank for rank in ranks if rank is not None]  # in `labelled` order

    def mean_quality(tiers: Sequence[str]) -> float:
        """The labelled requests' mean quality with the k-th labelled request on tiers[k]."""
        return (
            sum(
                m * (1.0 if position[t] >= rank else 0.0)
                for m, rank, t in zip(labelled_monthly, labelled_ranks, tiers, strict=True)
            )
            / weight
        )

    def constant(tier: str) -> list[str]:
        return [tier] * len(labelled)

    weak, strong = order[0], order[-1]
    q_weak = mean_quality(constant(weak))
    q_strong = mean_quality(constant(strong))
    per_tier = {t: mean_quality(constant(t)) for t in order}
    values = {
        "router": mean_quality([rs[i].route_tier for i in labelled]),
        "all_largest": q_strong,
        "all_smallest": q_weak,
        "random": sum(shares[t] * per_tier[t] for t in order),
        "length": mean_quality([length_tiers[i] for i in labelled]),
    }
    gap = q_strong - q_weak
    block: dict[str, Any] = {
        "available": True,
        "source": QUALITY_SOURCE,
        "note": QUALITY_NOTE,
        "labelled_fixtures": len(labelled),
        "labelled_share": weight / total if total else 0.0,
        "weak_tier": weak,
        "strong_tier": strong,
        "weak_quality": q_weak,
        "strong_quality": q_strong,
    }
    for name, value in values.items():
        rows[name]["quality"] = value
        rows[name]["pgr"] = (value - q_weak) / gap if gap > 0 else None
    if gap <= 0:
        block["reason"] = (
            "the labels give the weak and the strong tier the same quality: PGR is undefined"
        )
        return block
    gains = [(i, q(i, strong) - q(i, weak)) for i in labelled]
    scores = [rs[i].route_score for i, _ in gains]
    known = [s for s in scores if s is not None]
    if len(known) == len(scores):
        curve = pgr_curve(
            [(float(s), rs[i].monthly_requests, g) for (i, g), s in zip(gains, known, strict=True)]
        )
        rows["router"].update(_sweep(curve))
    else:
        rows["router"]["sweep_reason"] = "the router gives no scores to sweep a threshold over"
    length_curve = pgr_curve(
        [(float(_alternatives(rs[i]).prompt_tokens), rs[i].monthly_requests, g) for i, g in gains]
    )
    rows["length"].update(_sweep(length_curve))
    rows["random"].update(
        apgr=0.5, cpt50=0.5, cpt80=0.8, sweep=[{"strong_share": s, "pgr": s} for s in SWEEP_POINTS]
    )
    return block


def _alternatives(record: RequestRecord) -> RouteAlternatives:
    """The record's priced alternatives (the routing comparison only takes records that have them)."""
    assert record.alternatives is not None
    return record.alternatives
