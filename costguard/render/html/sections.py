"""The HTML report's sections of spend, movers, quality, the frontier and the live replay.

Each `*_section` function reads the report dict (and the RunReport at hand, for what a DiffReport
does not keep) and returns the section's view model: its figures (inline SVG), table rows, notes,
and `missing`, the sentence shown instead when the report lacks the section's data.
"""

from __future__ import annotations

from typing import Any

from costguard.compare.model import FixtureChange
from costguard.render import plots
from costguard.render.html.format import finite, money, ms, num, pct, svg
from costguard.render.links import EvidenceLinks
from costguard.render.markdown import integer, rate
from costguard.render.why import change_reasons

TOP_MOVERS = 10
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


def _blocks(diff: dict[str, Any], group: str, field: str) -> tuple[list[str], list[Any], list[Any]]:
    names = list(diff.get(group) or {})
    blocks = [diff[group][n].get(field) or {} for n in names]
    return names, [b.get("base") for b in blocks], [b.get("head") for b in blocks]


def _estimated_pair(diff: dict[str, Any], group: str) -> tuple[list[bool], list[bool]]:
    est = [(diff[group][n].get("estimated") or {}) for n in diff.get(group) or {}]
    return [bool(e.get("base")) for e in est], [bool(e.get("head")) for e in est]


def spend_section(data: dict[str, Any], diff: bool) -> dict[str, Any]:
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
                svg(plots.bars(f"spend-{group}", f"$/month by {title}" + (", base vs head" if has_base else ""), names, series))
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
                svg(plots.bars(f"spend-{group}", f"$/month by {title}", names, [(title, values, est, plots.HEAD)]))
            )  # fmt: skip
    return {"figures": figures, "missing": None if figures else "the report has no tiers or suites"}


def _reasons(item: dict[str, Any]) -> list[str]:
    """Why a fixture moved: the rules of `costguard.render.why` (the terminal's and the PR
    comment's), in the page's typography (autoescape writes the names)."""
    return change_reasons(FixtureChange.model_validate(item), arrow="→", count=integer)


def movers_section(data: dict[str, Any], diff: bool, links: EvidenceLinks) -> dict[str, Any]:
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
        return {"rows": rows, "figures": [svg(figure)], "missing": None, "diff": True}
    records = [r for r in data.get("records") or [] if finite(r.get("cost_per_month")) is not None]
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
    return {"rows": rows, "figures": [svg(figure)], "missing": None, "diff": False}


def quality_section(run: dict[str, Any] | None, data: dict[str, Any], diff: bool) -> dict[str, Any]:
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
                    [pct(q["suites"][n].get("head")) for n in names],
                    [False] * len(names),
                    plots.HEAD,
                )
            ]
            if data["base"]["available"]:
                series.insert(
                    0,
                    (
                        "base",
                        [pct(q["suites"][n].get("base")) for n in names],
                        [False] * len(names),
                        plots.BASE,
                    ),
                )
            if any(v is not None for _, vs, _, _ in series for v in vs):
                out["figures"].append(svg(plots.bars("quality-suites", "Quality score per suite", names, series, unit="score %", fmt=lambda v: f"{v:.1f}%", xlim=(0, 115))))  # fmt: skip
    quality = (run or {}).get("quality") or {}
    if quality and not diff:
        for group, title in (("suites", "suite"), ("tiers", "answering tier")):
            items = quality.get(group) or {}
            names = [n for n in items if items[n].get("score") is not None]
            if names:
                values = [pct(items[n]["score"]) for n in names]
                out["figures"].append(svg(plots.bars(f"quality-{group}", f"Quality score per {title} (measured fixtures)", names, [("score", values, [False] * len(names), plots.HEAD)], unit="score %", fmt=lambda v: f"{v:.1f}%", xlim=(0, 115))))  # fmt: skip
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


def frontier_section(frontier: dict[str, Any] | None, run: dict[str, Any] | None) -> dict[str, Any]:
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
        out["figures"].append(svg(plots.frontier("frontier", plotted, frontier.get("recommended"))))
        out["missing"] = None
    else:
        out["missing"] = (
            "no variant has a measured quality (record responses first): nothing to place"
        )
    if frontier.get("policy") and not frontier.get("recommended"):
        out["notes"].append(f"no variant meets the policy {frontier['policy']}")
    return out


def live_section(run: dict[str, Any] | None) -> dict[str, Any]:
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
                svg(plots.latency_boxes(f"live-{metric}", metric.upper(), per_tier))
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
