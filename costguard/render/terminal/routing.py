"""The routing section of a run: routed shares, router overhead, the cascade, and the router
against its baselines."""

from __future__ import annotations

from typing import Any

from costguard.render.terminal.tables import fit, plain, say, table
from costguard.report import format as fmt
from costguard.report.format import EST
from costguard.report.model import RouterOverhead, Routing, RoutingBaseline, RoutingComparison
from costguard.report.run_report import RunReport

TERMS = (
    "Terms: PGR (performance gap recovered) = (quality of the router - all on the weakest tier) / "
    "(all on the strongest - all on the weakest); APGR = average PGR over the strong-tier share sweep; "
    "CPT(x%) = the smallest strong-tier share whose PGR reaches x% (RouteLLM's definitions; "
    "docs/routing.md)"
)


def routing_lines(routing: Routing, overhead: RouterOverhead | None = None) -> list[str]:
    """Plain lines of the routing section: routed shares, router overhead (from `timing`), cascade."""
    if not routing.routed_shares:
        return []
    router = routing.router
    shares = " · ".join(
        f"{tier} {fmt.percent(share)}" for tier, share in routing.routed_shares.items()
    )
    lines = [
        f"Routing ({router.description or router.kind}): {shares} of requests as routed, "
        "before caches and cascade"
    ]
    ov = overhead
    if ov is not None and ov.p99_s is not None:
        cost = ""
        if ov.cost_per_month is not None:
            cost = f"; {fmt.money(ov.cost_per_month, ov.cost_estimated)}/month ({ov.price_basis or ''})"
        where = "measured" if ov.source == "measured" else "stored from an earlier run"
        lines.append(
            f"Router overhead: p50 {fmt.duration_s(ov.p50_s)}, p99 {fmt.duration_s(ov.p99_s)} per request ({where}: {ov.method}){cost}"
        )
    elif ov is not None:
        lines.append(f"Router overhead: not measured ({ov.method})")
    esc = routing.escalation
    if esc.enabled:
        src = esc.confidence_sources
        lines.append(
            f"Cascade {esc.from_tier} -> {esc.to_tier} below confidence {esc.threshold or 0.0:g}: "
            f"{fmt.percent(esc.rate, esc.estimated)} escalated, +{fmt.money(esc.cost_per_month)}/month; confidence recorded for "
            f"{src.get('recorded', 0)}, estimated for {src.get('estimated', 0)}"
            + (f" ({EST} estimated: {_method(esc.method)})" if esc.estimated else "")
        )
    return lines


def _method(method: Any) -> str:
    """How an estimate was made, in words (the fitted formula stays in the JSON report)."""
    return str(method or "").split(": confidence =")[0]


def routing_table(routing: Routing) -> Any | None:
    """The router against its baselines on the same fixtures (a rich Table), or None."""
    comparison = routing.comparison
    if not comparison.available:
        return None
    quality = comparison.quality
    strong = routing.strong_tier or "strong"
    cols = ["baseline", strong, "$/month", "router saves"]
    if quality.available:
        cols += ["quality", "PGR", "APGR", "CPT(50%)", "CPT(80%)"]
    out = table(
        f"Routing against baselines (same fixtures; each request on one tier, no caches, no cascade; "
        f"{strong} = share on the strongest tier; quality from labels)",
        cols,
        left=("baseline",),
    )
    short = {
        "router": f"this router ({routing.router.kind})",
        "all_largest": f"all on {routing.strong_tier or 'largest'}",
        "all_smallest": f"all on {routing.weak_tier or 'smallest'}",
        "random": "random, same shares",
        "length": "length, same shares",
    }
    for name, row in comparison.baselines.items():
        cells = [plain(short.get(name, row.label)), *_baseline_cells(name, row, comparison)]
        if quality.available:
            cells += [
                fmt.percent(v) for v in (row.quality, row.pgr, row.apgr, row.cpt50, row.cpt80)
            ]
        out.add_row(*cells)
    return out


def _baseline_cells(name: str, row: RoutingBaseline, comparison: RoutingComparison) -> list[str]:
    """A baseline's strong-tier share, $/month, and what the router saves against it."""
    saved = comparison.savings.get(f"vs_{name}")
    return [
        fmt.percent(row.strong_share),
        fmt.money(row.cost_per_month, comparison.estimated),
        ""
        if saved is None
        else f"{fmt.money(saved.saving_per_month)} ({fmt.percent_change(saved.saving_pct)})",
    ]


def print_routing(report: RunReport, console: Any) -> None:
    """The routing section: routed shares, overhead, cascade, and the baselines table."""
    routing = report.model.routing
    lines = routing_lines(routing, report.model.timing.router_overhead)
    if not lines:
        return
    baselines = routing_table(routing)
    if baselines is not None:
        console.print(fit(baselines, console.width))
        comparison = routing.comparison
        quality = comparison.quality
        if quality.available:
            labels = {name: b.label for name, b in comparison.baselines.items()}
            say(
                console,
                f"Baselines: random = {labels.get('random')}; length = {labels.get('length')}. "
                f"Quality and PGR: {quality.note} ({quality.labelled_fixtures} labelled fixtures, "
                f"{fmt.percent(quality.labelled_share)} of traffic); APGR over an 11-point strong-share sweep",
            )
            say(console, TERMS)
            if quality.reason:
                say(console, f"PGR unavailable: {quality.reason}")
    for line in lines:
        say(console, line)
