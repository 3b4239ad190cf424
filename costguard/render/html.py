"""The HTML report: one self-contained file with plots, from a RunReport or DiffReport JSON alone.

`render_html(data, ...)` reads the report dict (and, for a diff, the head and base RunReports when
they are at hand: the routing histogram, semantic sweep and latency distributions need records
that a DiffReport does not keep) and returns the page: inline CSS, inline SVG plots
(`costguard.render.plots`, matplotlib, imported only here), no JavaScript, and a
Content-Security-Policy that forbids every network load, so it opens offline from a CI artifact.

Every string from the user's repository goes through jinja2's autoescape (fixture ids, suite and
tier names, reasons, warnings) and matplotlib's own XML escaping inside the SVGs. Nothing is
recomputed: figures are read from the report; a section whose data the report lacks says so.
"""

from __future__ import annotations

import datetime as _dt
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from costguard.render import plots
from costguard.render.links import NO_LINKS, EvidenceLinks
from costguard.render.markdown import count, integer, pct_delta, points, rate, usd_delta

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TOP_MOVERS = 10
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
DEFINITIONS = {
    "PGR": "performance gap recovered: (quality of the router − quality of the weak tier alone) ÷ "
    "(quality of the strong tier alone − quality of the weak tier alone).",
    "APGR": "the mean PGR over a sweep of the router's threshold from 0% to 100% of requests on "
    "the strong tier (a random router scores 0.5).",
    "CPT(50%)": "the smallest share of requests on the strong tier at which the router recovers "
    "50% of the quality gap (CPT(80%): 80%); lower is better.",
}


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _pct(value: Any) -> float | None:
    v = _finite(value)
    return None if v is None else 100 * v


def money(value: Any, estimated: bool = False) -> str:
    v = _finite(value)
    if v is None:
        return "—"
    text = f"${abs(v):,.2f}" if abs(v) >= 0.01 or v == 0 else f"${abs(v):.6f}".rstrip("0")
    return ("−" if v < 0 else "") + text + ("*" if estimated else "")


def ms(seconds: Any) -> str:
    v = _finite(seconds)
    return "—" if v is None else f"{1000 * v:,.0f} ms"


def verdict_value(verdict: dict[str, Any]) -> str:
    """A policy verdict's measured value in its metric's unit (estimates starred)."""
    from costguard.policy.engine import format_value

    if verdict.get("actual") is None:
        return "—"
    return format_value(verdict["actual"], verdict["unit"]) + (
        "*" if verdict.get("estimated") else ""
    )


def num(value: Any, digits: int = 2) -> str:
    v = _finite(value)
    return "—" if v is None else f"{v:,.{digits}f}"


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,  # HTML: every value is escaped unless marked safe (our SVGs)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usd=money,
        usd_delta=usd_delta,
        pct_delta=pct_delta,
        rate=rate,
        points=points,
        count=count,
        integer=integer,
        ms=ms,
        num=num,
        verdict_value=verdict_value,
    )
    return env


# -- the view model: one dict per section -----------------------------------------------------------


def _svg(markup: str) -> Any:
    from markupsafe import Markup

    return Markup(markup)  # produced by matplotlib's SVG writer, which escapes all text


def _blocks(diff: dict[str, Any], group: str, field: str) -> tuple[list[str], list[Any], list[Any]]:
    names = list(diff.get(group) or {})
    blocks = [diff[group][n].get(field) or {} for n in names]
    return names, [b.get("base") for b in blocks], [b.get("head") for b in blocks]


def _estimated_pair(diff: dict[str, Any], group: str) -> tuple[list[bool], list[bool]]:
    est = [(diff[group][n].get("estimated") or {}) for n in diff.get(group) or {}]
    return [bool(e.get("base")) for e in est], [bool(e.get("head")) for e in est]


def _spend_section(data: dict[str, Any], diff: bool) -> dict[str, Any]:
    figures = []
    if diff:
        has_base = data["base"]["available"]
        for group, title in (("tiers", "tier"), ("suites", "suite")):
            names, base, head = _blocks(data, group, "cost_per_month")
            if not names:
                continue
            est_b, est_h = _estimated_pair(data, group)
            series = [("head", head, est_h, plots.HEAD)]
            if has_base:
                series.insert(0, ("base", base, est_b, plots.BASE))
            figures.append(
                _svg(plots.bars(f"spend-{group}", f"$/month by {title}" + (", base vs head" if has_base else ""), names, series))
            )  # fmt: skip
    else:
        for group, title in (("tiers", "tier"), ("suites", "suite")):
            items = data.get(group) or {}
            if not items:
                continue
            names = list(items)
            values = [items[n].get("cost_per_month") for n in names]
            est = [bool(items[n].get("estimated")) for n in names]
            figures.append(
                _svg(plots.bars(f"spend-{group}", f"$/month by {title}", names, [(title, values, est, plots.HEAD)]))
            )  # fmt: skip
    return {"figures": figures, "missing": None if figures else "the report has no tiers or suites"}


def _reasons(item: dict[str, Any]) -> list[str]:
    """Why a fixture moved, in words (the same reasons the PR comment gives)."""
    out = []
    status = item.get("status")
    if status == "added":
        out.append("new fixture")
    if status == "removed":
        out.append("fixture removed")
    for path in item.get("templates_changed") or []:
        out.append(f"template {path} changed")
    if item.get("prompt_changed") and not item.get("templates_changed"):
        out.append("prompt changed")
    if status == "changed":
        for key, word in (("served_by", "served by"), ("cache", "cache")):
            pair = item.get(key) or {}
            if pair.get("base") != pair.get("head"):
                out.append(f"{word} {pair.get('base')} → {pair.get('head')}")
        esc = item.get("escalated") or {}
        if esc.get("base") != esc.get("head"):
            out.append("escalates" if esc.get("head") else "no longer escalates")
        cached = item.get("cached_tokens") or {}
        if cached.get("delta"):
            out.append(
                f"prefix-cached tokens {integer(cached.get('base'))} → {integer(cached.get('head'))}"
            )
        if not out and (item.get("monthly_requests") or {}).get("delta"):
            out.append("traffic share")
        if not out:
            cost = item.get("cost_usd") or {}
            out.append(
                f"same route and tokens; $/request {money(cost.get('base'))} → {money(cost.get('head'))}"
            )
    return out


def _movers_section(data: dict[str, Any], diff: bool, links: EvidenceLinks) -> dict[str, Any]:
    if diff:
        if not data["base"]["available"]:
            return {"missing": f"no baseline: {data['base'].get('reason') or 'none given'}"}
        by_id = {f["id"]: f for f in data["fixtures"]["items"]}
        movers = [by_id[i] for i in data["fixtures"].get("top_movers") or [] if i in by_id]
        if not movers:
            return {
                "missing": "no fixture changed its tokens, route, cache outcome or cost",
                "rows": [],
            }
        rows = []
        for f in movers:
            est = bool(
                (f.get("estimated") or {}).get("head") or (f.get("estimated") or {}).get("base")
            )
            rows.append(
                {
                    "id": f["id"],
                    "suite": f.get("suite"),
                    "location": f.get("location"),
                    "url": links.location(f.get("location")),
                    "templates": [
                        {"path": p, "url": links.blob(p)} for p in f.get("templates_changed") or []
                    ],
                    "cost": f["cost_per_month"],
                    "input": f["input_tokens"],
                    "output": f["output_tokens"],
                    "estimated": est,
                    "reasons": _reasons(f),
                }
            )
        figure = plots.diverging(
            "movers",
            f"Top {len(rows)} movers by Δ $/month",
            [r["id"] for r in rows],
            [r["cost"].get("delta") or 0.0 for r in rows],
            [r["estimated"] for r in rows],
        )
        return {"rows": rows, "figures": [_svg(figure)], "missing": None, "diff": True}
    records = [r for r in data.get("records") or [] if _finite(r.get("cost_per_month")) is not None]
    if not records:
        return {"missing": "the report has no fixture records", "rows": []}
    top = sorted(records, key=lambda r: (-r["cost_per_month"], r["id"]))[:TOP_MOVERS]
    rows = [
        {
            "id": r["id"],
            "suite": r.get("suite"),
            "location": r.get("location"),
            "url": links.location(r.get("location")),
            "templates": [],
            "cost": {"head": r["cost_per_month"]},
            "input": {"head": r.get("input_tokens")},
            "output": {"head": r.get("output_tokens")},
            "estimated": bool(r.get("estimated")),
            "reasons": [
                f"served by {r.get('served_by')}",
                (r.get("route") or {}).get("reason") or "",
            ],
        }
        for r in top
    ]
    figure = plots.bars(
        "movers",
        f"The {len(rows)} most expensive fixtures (no baseline to move against)",
        [r["id"] for r in rows],
        [
            (
                "fixture",
                [r["cost"]["head"] for r in rows],
                [r["estimated"] for r in rows],
                plots.HEAD,
            )
        ],
    )
    return {"rows": rows, "figures": [_svg(figure)], "missing": None, "diff": False}


def _routing_section(
    run: dict[str, Any] | None, data: dict[str, Any], diff: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"figures": [], "notes": [], "baselines": [], "definitions": DEFINITIONS}
    routing = (run or {}).get("routing") or {}
    router = routing.get("router") or {}
    out["router"] = router.get("description") or router.get("kind")
    # the score histogram per label, thresholds drawn
    records = (run or {}).get("records") or []
    scores: dict[str, list[float]] = {}
    for r in records:
        route = r.get("route") or {}
        score = _finite(route.get("score"))
        if score is not None:
            scores.setdefault(str(route.get("label") or "unlabelled"), []).append(score)
    thresholds = [
        (float(t["max_score"]), str(t["tier"]))
        for t in router.get("thresholds") or []
        if _finite(t.get("max_score")) is not None
    ]
    if scores:
        rng = router.get("score_range")
        out["figures"].append(
            _svg(
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
            out["figures"].append(_svg(plots.share_groups("route-shares", "Share of requests per tier", cats, series)))  # fmt: skip
    elif routing.get("shares"):
        tiers = list(routing.get("routed_shares") or routing["shares"])
        cats = [*tiers, "result cache"]
        series = [
            ("routed: the router's decisions, before caches and cascade",
             [(routing.get("routed_shares") or {}).get(t) for t in tiers] + [None], "#e0812f"),
            ("served: after result caches and the cascade",
             [routing["shares"].get(t) for t in tiers] + [routing.get("cache_share")], plots.HEAD),
        ]  # fmt: skip
        out["figures"].append(_svg(plots.share_groups("route-shares", "Share of requests per tier", cats, series)))  # fmt: skip
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
            _svg(
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
            out["figures"].append(_svg(plots.pgr_sweep("route-pgr", curves, est)))
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


def _cache_section(run: dict[str, Any] | None, data: dict[str, Any], diff: bool) -> dict[str, Any]:
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
                conv = _pct if field == "hit_rate" else _finite
                est = [bool(data.get("estimated")) and field != "hit_rate"] * len(names)
                series = [("head", [conv(b.get("head")) for b in blocks], est, plots.HEAD)]
                if has_base:
                    series.insert(
                        0, ("base", [conv(b.get("base")) for b in blocks], est, plots.BASE)
                    )
                out["figures"].append(_svg(plots.bars(f"cache-{field}", title, names, series, unit=unit, fmt=fmt)))  # fmt: skip
    else:
        cache = (run or {}).get("cache") or {}
        names = [n for n in _LAYERS if isinstance(cache.get(n), dict) and cache[n].get("enabled")]
        if names:
            estimated = bool(((run or {}).get("totals") or {}).get("estimated"))
            req = [_pct(cache[n].get("hit_rate_requests", cache[n].get("hit_rate"))) for n in names]
            tok = [_pct(cache[n].get("hit_rate_tokens")) for n in names]
            pct = lambda v: f"{v:.1f}%"  # noqa: E731
            out["figures"].append(
                _svg(plots.bars("cache-hits", "Hit rate per layer", names,
                                [("requests", req, [False] * len(names), plots.HEAD),
                                 ("prompt tokens", tok, [False] * len(names), "#e0812f")],
                                unit="%", fmt=pct))
            )  # fmt: skip
            saved = [cache[n].get("saved_per_month") for n in names]
            out["figures"].append(
                _svg(plots.bars("cache-saved", "$ saved per month per layer", names,
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
            _svg(plots.sweep("cache-sweep", semantic["sweep"], _finite(semantic.get("threshold"))))
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


def _quality_section(
    run: dict[str, Any] | None, data: dict[str, Any], diff: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"figures": [], "notes": [], "floors": []}
    policy = data.get("policy") if diff else None
    for v in (policy or {}).get("verdicts") or []:
        if str(v.get("metric", "")).startswith(("quality", "tier_agreement")):
            out["floors"].append(v)
    if diff:
        q = data.get("quality")
        if q and q.get("suites"):
            names = list(q["suites"])
            series = [
                (
                    "head",
                    [_pct(q["suites"][n].get("head")) for n in names],
                    [False] * len(names),
                    plots.HEAD,
                )
            ]
            if data["base"]["available"]:
                series.insert(
                    0,
                    (
                        "base",
                        [_pct(q["suites"][n].get("base")) for n in names],
                        [False] * len(names),
                        plots.BASE,
                    ),
                )
            if any(v is not None for _, vs, _, _ in series for v in vs):
                out["figures"].append(_svg(plots.bars("quality-suites", "Quality score per suite", names, series, unit="score %", fmt=lambda v: f"{v:.1f}%", xlim=(0, 115))))  # fmt: skip
    quality = (run or {}).get("quality") or {}
    if quality and not diff:
        for group, title in (("suites", "suite"), ("tiers", "answering tier")):
            items = quality.get(group) or {}
            names = [n for n in items if items[n].get("score") is not None]
            if names:
                values = [_pct(items[n]["score"]) for n in names]
                out["figures"].append(_svg(plots.bars(f"quality-{group}", f"Quality score per {title} (measured fixtures)", names, [("score", values, [False] * len(names), plots.HEAD)], unit="score %", fmt=lambda v: f"{v:.1f}%", xlim=(0, 115))))  # fmt: skip
    if quality.get("unmeasured"):
        reasons = sorted((quality.get("unmeasured_reasons") or {}).items(), key=lambda kv: -kv[1])[
            :5
        ]
        out["notes"].append(
            f"{quality['unmeasured']} of {quality.get('fixtures')} fixtures with assertions are not measured"
            + (": " + "; ".join(f"{k} ({v})" for k, v in reasons) if reasons else "")
            + ". Record responses with a live backend to measure them."
        )
    if not out["figures"]:
        if not quality and not (diff and data.get("quality")):
            out["missing"] = (
                "no fixture has quality assertions (expect:), or the report predates them"
            )
        else:
            out["missing"] = "no quality score was measured: nothing to plot"
    else:
        out["missing"] = None
    return out


def _frontier_section(
    frontier: dict[str, Any] | None, run: dict[str, Any] | None
) -> dict[str, Any]:
    frontier = frontier or (run or {}).get("frontier")
    if not frontier:
        return {"missing": "this report has no frontier: `costguard frontier --format json > frontier.json`, then `costguard report --html OUT frontier.json REPORT.json`"}  # fmt: skip
    variants = frontier.get("variants") or []
    plotted = [v for v in variants if v.get("quality") is not None]
    rows = [
        {
            "name": v.get("name"),
            "description": v.get("description"),
            "cost": money(v.get("cost_per_month"), bool(v.get("cost_estimated"))),
            "quality": rate(v.get("quality")),
            "p95": ms(v.get("latency_p95_s")),
            "place": "chosen" if v.get("name") == frontier.get("recommended") else
            "non-dominated" if v.get("on_frontier") else
            (f"dominated by {v['dominated_by']}" if v.get("dominated_by") else v.get("excluded") or ""),
            "verdict": v.get("verdict") or "",
        }
        for v in variants
    ]  # fmt: skip
    out: dict[str, Any] = {"rows": rows, "notes": list(frontier.get("notes") or []), "figures": []}
    if plotted:
        out["figures"].append(
            _svg(plots.frontier("frontier", plotted, frontier.get("recommended")))
        )
        out["missing"] = None
    else:
        out["missing"] = (
            "no variant has a measured quality (record responses first): nothing to place"
        )
    if frontier.get("policy") and not frontier.get("recommended"):
        out["notes"].append(f"no variant meets the policy {frontier['policy']}")
    return out


def _live_section(run: dict[str, Any] | None) -> dict[str, Any]:
    replay = (run or {}).get("replay")
    if not replay:
        backend = (run or {}).get("backend")
        why = f"backend {backend}: no live replay" if backend else "no RunReport at hand"
        return {
            "missing": f"{why}, so no TTFT/TPOT/ITL/E2EL distributions (run with --backend vllm or endpoint)"
        }
    out: dict[str, Any] = {"figures": [], "notes": [], "summary": []}
    dist = replay.get("distribution") or {}
    tiers = [t for t in dist if t != "all"]
    for metric in LATENCY_METRICS:
        per_tier = {t: dist[t][metric] for t in tiers if (dist[t] or {}).get(metric)}
        if per_tier:
            out["figures"].append(
                _svg(plots.latency_boxes(f"live-{metric}", metric.upper(), per_tier))
            )
        else:
            out["notes"].append(
                f"no {metric.upper()} samples in this replay"
                + (
                    " (not streamed)"
                    if metric in ("ttft", "tpot", "itl") and not replay.get("stream")
                    else ""
                )
            )
    for tier, lat in (replay.get("latency") or {}).items():
        out["summary"].append({"tier": tier, **{k: num(v, 1) for k, v in (lat or {}).items()}})
    req = replay.get("requests") or {}
    out["facts"] = (
        f"{req.get('completed', 0)} of {req.get('sent', 0)} requests completed in {num(replay.get('duration_s'), 1)} s "
        f"at concurrency {replay.get('concurrency')}; {num(replay.get('request_throughput'), 2)} req/s, "
        f"{num(replay.get('output_throughput'), 0)} output tokens/s"
        + (f"; stopped early: {replay['stopped']}" if replay.get("stopped") else "")
    )
    if not dist:
        out["notes"].append(
            "this report predates per-tier latency distributions: only the summary table"
        )
    out["missing"] = None
    return out


def _headline(data: dict[str, Any], diff: bool) -> dict[str, Any]:
    if diff:
        cost = data["totals"]["cost_per_month"]
        est = data["totals"].get("estimated") or {}
        policy = data.get("policy")
        return {
            "diff": True,
            "has_base": data["base"]["available"],
            "base_reason": data["base"].get("reason"),
            "base_source": data["base"].get("source"),
            "head_source": data["head"].get("source"),
            "base_cost": money(cost.get("base"), bool(est.get("base"))),
            "head_cost": money(cost.get("head"), bool(est.get("head"))),
            "delta": usd_delta(cost.get("delta")),
            "delta_pct": pct_delta(cost.get("delta_pct")),
            "up": (cost.get("delta") or 0) > 0,
            "requests": count(data["totals"]["requests_per_month"].get("head")),
            "fixtures": data.get("fixtures") or {},
            "verdicts": (policy or {}).get("verdicts") or [],
            "policy": policy,
            "warnings": (data.get("head") or {}).get("warnings") or [],
            "incomplete": [
                (side, data[side].get("incomplete_reason"))
                for side in ("base", "head")
                if data[side].get("available") and not data[side].get("complete", True)
            ],
        }
    totals = data.get("totals") or {}
    cf = data.get("counterfactual") or {}
    return {
        "diff": False,
        "head_cost": money(totals.get("cost_per_month"), bool(totals.get("estimated"))),
        "requests": count(totals.get("requests_per_month")),
        "fixtures_n": totals.get("fixtures"),
        "per_request": money(
            (totals.get("cost_per_request") or {}).get("mean"), bool(totals.get("estimated"))
        ),
        "counterfactual": cf,
        "cf_cost": money(cf.get("cost_per_month"), bool(totals.get("estimated"))),
        "cf_saving": money(cf.get("saving_per_month"), bool(totals.get("estimated"))),
        "estimated_share": totals.get("estimated_share"),
        "verdicts": [],
        "policy": None,
        "warnings": data.get("warnings") or [],
        "incomplete": []
        if data.get("complete", True)
        else [("run", data.get("incomplete_reason"))],
    }


def render_html(
    data: dict[str, Any],
    *,
    head: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    frontier: dict[str, Any] | None = None,
    links: EvidenceLinks | None = None,
) -> str:
    """The report page for a RunReport dict (`data["kind"] == "run"`) or a DiffReport dict.

    For a diff, `head` (and `base`) are the RunReports it was made from, when at hand; `frontier`
    is `costguard frontier --format json`'s output; `links` point at the evidence.
    """
    kind = data.get("kind")
    if kind not in ("run", "diff"):
        raise ValueError(f"not a RunReport or DiffReport (kind {kind!r})")
    diff = kind == "diff"
    run = head if diff else data
    links = links or NO_LINKS
    sections = {
        "spend": _spend_section(data, diff),
        "movers": _movers_section(data, diff, links),
        "routing": _routing_section(run, data, diff),
        "cache": _cache_section(run, data, diff),
        "quality": _quality_section(run, data, diff),
        "frontier": _frontier_section(frontier, run),
        "live": _live_section(run),
    }
    stack = data.get("stack")
    title_stack = stack.get("name") if isinstance(stack, dict) else stack
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            kind=kind,
            data=data,
            run=run,
            base_run=base,
            title_stack=title_stack or "stack",
            headline=_headline(data, diff),
            s=sections,
            links=links,
            generated=data.get("created_at")
            or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            version=data.get("costguard_version"),
        )
    )


def write_html(path: str | Path, text: str) -> None:
    """Write the page atomically: a reader never sees half a file."""
    import os
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
