"""The HTML report's sections of routing (the router's scores, shares, cascade and baselines with
PGR / APGR / CPT) and caches (hit rates, savings, the semantic threshold sweep).

Like `sections`, each returns a view model with figures, rows, notes and `missing`.
"""

from __future__ import annotations

from typing import Any

from costguard.render import plots
from costguard.render.html.format import finite, money, pct, svg
from costguard.render.markdown import rate

DEFINITIONS = {
    "PGR": "performance gap recovered: (quality of the router − quality of the weak tier alone) ÷ "
    "(quality of the strong tier alone − quality of the weak tier alone).",
    "APGR": "the mean PGR over a sweep of the router's threshold from 0% to 100% of requests on "
    "the strong tier (a random router scores 0.5).",
    "CPT(50%)": "the smallest share of requests on the strong tier at which the router recovers "
    "50% of the quality gap (CPT(80%): 80%); lower is better.",
}


def routing_section(run: dict[str, Any] | None, data: dict[str, Any], diff: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"figures": [], "notes": [], "baselines": [], "definitions": DEFINITIONS}
    routing = (run or {}).get("routing") or {}
    router = routing.get("router") or {}
    out["router"] = router.get("description") or router.get("kind")
    # the score histogram per label, thresholds drawn
    records = (run or {}).get("records") or []
    scores: dict[str, list[float]] = {}
    for r in records:
        route = r.get("route") or {}
        score = finite(route.get("score"))
        if score is not None:
            scores.setdefault(str(route.get("label") or "unlabelled"), []).append(score)
    thresholds = [
        (float(t["max_score"]), str(t["tier"]))
        for t in router.get("thresholds") or []
        if finite(t.get("max_score")) is not None
    ]
    if scores:
        rng = router.get("score_range")
        out["figures"].append(
            svg(
                plots.score_histogram(
                    "route-scores",
                    scores,
                    thresholds,
                    router.get("default_tier"),
                    (float(rng[0]), float(rng[1])) if rng else None,
                    unit=router.get("score_unit") or "router score",
                )
            )
        )
        if not thresholds:
            out["notes"].append(
                "the report does not say the router's thresholds, so none are drawn"
            )
    elif run is not None:
        out["notes"].append(
            f"no router scores in the report (router {router.get('kind') or 'none'}): no score histogram"
        )
    else:
        out["notes"].append(
            "no RunReport at hand (a DiffReport keeps no records): no score histogram"
        )
    # shares before and after caches and cascade
    if diff:
        tiers = list((data.get("routing") or {}).get("shares") or {})
        if tiers:
            shares = data["routing"]["shares"]
            cache = (data.get("routing") or {}).get("cache_share") or {}
            cats = [*tiers, "result cache"]
            series = []
            if data["base"]["available"]:
                series.append(
                    (
                        "base: served",
                        [shares[t].get("base") for t in tiers] + [cache.get("base")],
                        plots.BASE,
                    )
                )
            series.append(
                (
                    "head: served",
                    [shares[t].get("head") for t in tiers] + [cache.get("head")],
                    plots.HEAD,
                )
            )
            if routing.get("routed_shares"):
                series.append(
                    (
                        "head: routed (before caches and cascade)",
                        [routing["routed_shares"].get(t) for t in tiers] + [None],
                        "#e0812f",
                    )
                )
            out["figures"].append(svg(plots.share_groups("route-shares", "Share of requests per tier", cats, series)))  # fmt: skip
    elif routing.get("shares"):
        tiers = list(routing.get("routed_shares") or routing["shares"])
        cats = [*tiers, "result cache"]
        series = [
            ("routed: the router's decisions, before caches and cascade",
             [(routing.get("routed_shares") or {}).get(t) for t in tiers] + [None], "#e0812f"),
            ("served: after result caches and the cascade",
             [routing["shares"].get(t) for t in tiers] + [routing.get("cache_share")], plots.HEAD),
        ]  # fmt: skip
        out["figures"].append(svg(plots.share_groups("route-shares", "Share of requests per tier", cats, series)))  # fmt: skip
    esc = routing.get("escalation") or {}
    if esc.get("enabled"):
        out["notes"].append(
            f"cascade {esc.get('from_tier')} → {esc.get('to_tier')} below confidence "
            f"{esc.get('threshold')}: {rate(esc.get('rate'))} escalated, "
            f"{money(esc.get('cost_per_month'), bool(esc.get('estimated')))} per month"
            + (f" (confidence {esc.get('method')})" if esc.get("estimated") else "")
        )
    # baselines and PGR / APGR / CPT
    comparison = routing.get("comparison") or {}
    if comparison.get("available"):
        est = bool(comparison.get("estimated"))
        baselines = comparison.get("baselines") or {}
        for key, b in baselines.items():
            out["baselines"].append(
                {
                    "name": key,
                    "label": b.get("label"),
                    "cost": money(b.get("cost_per_month"), est),
                    "share": rate(b.get("strong_share")),
                    "quality": rate(b.get("quality")),
                    "pgr": rate(b.get("pgr")),
                    "apgr": rate(b.get("apgr")),
                    "cpt50": rate(b.get("cpt50")),
                    "cpt80": rate(b.get("cpt80")),
                }
            )
        names = list(baselines)
        out["figures"].append(
            svg(
                plots.bars(
                    "route-baselines",
                    "$/month of the same fixtures per router (no caches, no cascade)",
                    [_BASELINE_NAMES.get(n, n) for n in names],
                    [("router", [baselines[n].get("cost_per_month") for n in names], [est] * len(names), plots.HEAD)],
                )
            )
        )  # fmt: skip
        curves = [
            (_BASELINE_NAMES.get(n, n), [(p["strong_share"], p["pgr"]) for p in baselines[n]["sweep"]], plots.PALETTE[k])
            for k, n in enumerate(names)
            if baselines[n].get("sweep")
        ]  # fmt: skip
        if curves:
            out["figures"].append(svg(plots.pgr_sweep("route-pgr", curves, est)))
        q = comparison.get("quality") or {}
        if q.get("note"):
            out["notes"].append(q["note"])
        elif q.get("reason"):
            out["notes"].append(f"PGR undefined: {q['reason']}")
        out["basis"] = comparison.get("basis")
    elif run is not None:
        out["notes"].append(
            f"no router baselines: {comparison.get('reason') or 'the report has none'}"
        )
    out["missing"] = None if out["figures"] else "the report has no routing figures"
    return out


_LAYERS = ("exact", "semantic", "prefix")
_BASELINE_NAMES = {
    "router": "this router",
    "all_largest": "all on the largest tier",
    "all_smallest": "all on the smallest tier",
    "random": "random, same shares",
    "length": "length, same shares",
}


def cache_section(run: dict[str, Any] | None, data: dict[str, Any], diff: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"figures": [], "notes": [], "rows": []}
    if diff:
        layers = (data.get("cache") or {}).get("layers") or {}
        names = [n for n in layers if isinstance(layers[n], dict) and layers[n].get("hit_rate")]
        if names:
            has_base = data["base"]["available"]
            for field, title, unit, fmt in (
                (
                    "hit_rate",
                    "Hit rate per layer (requests)",
                    "% of requests",
                    lambda v: f"{v:.1f}%",
                ),
                ("saved_per_month", "$ saved per month per layer", "$/month", plots._money),
            ):
                blocks = [layers[n].get(field) or {} for n in names]
                conv = pct if field == "hit_rate" else finite
                est = [bool(data.get("estimated")) and field != "hit_rate"] * len(names)
                series = [("head", [conv(b.get("head")) for b in blocks], est, plots.HEAD)]
                if has_base:
                    series.insert(
                        0, ("base", [conv(b.get("base")) for b in blocks], est, plots.BASE)
                    )
                out["figures"].append(svg(plots.bars(f"cache-{field}", title, names, series, unit=unit, fmt=fmt)))  # fmt: skip
    else:
        cache = (run or {}).get("cache") or {}
        names = [n for n in _LAYERS if isinstance(cache.get(n), dict) and cache[n].get("enabled")]
        if names:
            estimated = bool(((run or {}).get("totals") or {}).get("estimated"))
            req = [pct(cache[n].get("hit_rate_requests", cache[n].get("hit_rate"))) for n in names]
            tok = [pct(cache[n].get("hit_rate_tokens")) for n in names]
            percent = lambda v: f"{v:.1f}%"  # noqa: E731
            out["figures"].append(
                svg(plots.bars("cache-hits", "Hit rate per layer", names,
                                [("requests", req, [False] * len(names), plots.HEAD),
                                 ("prompt tokens", tok, [False] * len(names), "#e0812f")],
                                unit="%", fmt=percent))
            )  # fmt: skip
            saved = [cache[n].get("saved_per_month") for n in names]
            out["figures"].append(
                svg(plots.bars("cache-saved", "$ saved per month per layer", names,
                                [("saved", saved, [estimated] * len(names), plots.DOWN)]))
            )  # fmt: skip
            for n in names:
                c = cache[n]
                out["rows"].append(
                    {
                        "layer": n,
                        "requests": rate(c.get("hit_rate_requests", c.get("hit_rate"))),
                        "tokens": rate(c.get("hit_rate_tokens")),
                        "saved": money(c.get("saved_per_month"), estimated),
                        "false": rate(c.get("false_hit_rate")) if n == "semantic" else "",
                    }
                )
            if cache.get("prefix", {}).get("tiers"):
                for tier, t in cache["prefix"]["tiers"].items():
                    if t.get("capacity_source") == "unbounded":
                        out["notes"].append(
                            f"prefix cache of tier {tier}: pool unbounded (no capacity declared or derived)"
                        )
    semantic = ((run or {}).get("cache") or {}).get("semantic") or {}
    if semantic.get("sweep"):
        out["figures"].append(
            svg(plots.sweep("cache-sweep", semantic["sweep"], finite(semantic.get("threshold"))))
        )
        if (semantic.get("answer_sources") or {}).get("reference"):
            out["notes"].append(
                "some judged semantic hits stand in the fixture's expect.reference for a recorded answer"
            )
    elif run is not None and semantic.get("enabled"):
        out["notes"].append("the semantic cache has no threshold sweep in this report")
    elif run is None:
        out["notes"].append(
            "no RunReport at hand (a DiffReport keeps no sweep): no semantic threshold sweep"
        )
    out["missing"] = None if out["figures"] else "no cache layer is enabled in this report"
    return out
