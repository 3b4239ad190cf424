"""Terminal rendering (rich tables) of a RunReport and of policy verdicts. Reads, never recomputes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costguard.compare.diff import DiffReport
from costguard.compare.model import Change, DiffReportModel, PolicyOutcome
from costguard.policy.engine import PolicyResult
from costguard.report import format as fmt
from costguard.report.format import EST
from costguard.report.model import Cache, PrefixTier, Quality, QualityBlock, RouterOverhead, Routing
from costguard.report.run_report import RunReport


def make_console(**kwargs: Any) -> Any:
    """A console that is wide enough for the tables in CI logs (not a terminal: 120 columns,
    unless COLUMNS says otherwise)."""
    import os
    import sys

    from rich.console import Console

    if "width" not in kwargs and not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        kwargs["width"] = 120
    return Console(**kwargs)


def fit(table: Any, width: int | None = None) -> Any:
    """Give each column a width no narrower than its longest word (header or cell), shrinking the
    columns with the most room first, so a narrow terminal (e.g. 100 columns) wraps cells at
    spaces instead of cutting headers and names with "…". `width`: the console's width."""
    from rich.text import Text

    if width is None:
        width = make_console().width

    def lines(cell: Any) -> list[str]:
        if isinstance(cell, Text):
            return cell.plain.splitlines() or [""]
        if isinstance(cell, str):
            return _strip_markup(cell).splitlines() or [""]
        return []

    natural, least = [], []
    for column in table.columns:
        texts = [line for cell in [column.header, *column._cells] for line in lines(cell)]
        natural.append(max([len(t) for t in texts] or [1]))
        least.append(max([len(w) for t in texts for w in t.split()] or [1]))
    n = len(table.columns)
    available = width - (n + 1) - 2 * n  # borders and one space of padding either side
    widths = list(natural)
    excess = sum(widths) - available
    if excess <= 0:
        return table
    while excess > 0:
        k = max(range(n), key=lambda i: widths[i] - least[i])
        if widths[k] <= least[k]:
            break  # every column at its longest word: rich must cut; nothing better to do
        widths[k] -= 1
        excess -= 1
    for column, w in zip(table.columns, widths, strict=True):
        column.width = w
    return table


def _strip_markup(text: str) -> str:
    from rich.markup import render

    return render(text).plain


def run_tables(report: RunReport) -> list[Any]:
    """The rich renderables for a run: tiers, suites, totals (shared by the CLI and the pytest plugin)."""
    from rich.table import Table

    m = report.model
    out: list[Any] = []
    tiers = Table(
        title="Tiers: share of requests by the tier that answers them (after caches and cascade)",
        title_justify="left",
        header_style="bold",
    )
    for col in (
        "tier",
        "share",
        "requests/mo",
        "input tok/mo",
        "cached tok/mo",
        "output tok/mo",
        "$/month",
        "cost basis",
    ):
        tiers.add_column(col, justify="left" if col in ("tier", "cost basis") else "right")
    for name, t in m.tiers.items():
        tiers.add_row(
            _plain(name),
            fmt.percent(t.share),
            fmt.tokens(t.requests_per_month),
            fmt.tokens(t.input_tokens_per_month),
            fmt.tokens(t.cached_tokens_per_month),
            fmt.tokens(t.output_tokens_per_month),
            fmt.money(t.cost_per_month, t.estimated),
            t.cost_basis,
        )
    if m.cache.hit_rate > 0:
        tiers.add_row(
            "(cache)",
            fmt.percent(m.routing.cache_share),
            "",
            "",
            "",
            "",
            fmt.money(0.0),
            "served from cache",
        )
    out.append(tiers)

    suites = Table(title="Suites", title_justify="left", header_style="bold")
    for col in (
        "suite",
        "fixtures",
        "share",
        "requests/mo",
        "input tok/mo",
        "output tok/mo",
        "$/request",
        "$/month",
    ):
        suites.add_column(col, justify="left" if col == "suite" else "right")
    for name, su in m.suites.items():
        suites.add_row(
            _plain(name),
            fmt.count(su.fixtures),
            fmt.percent(su.share),
            fmt.tokens(su.requests_per_month),
            fmt.tokens(su.input_tokens_per_month),
            fmt.tokens(su.output_tokens_per_month),
            fmt.money(su.cost_per_request, su.estimated),
            fmt.money(su.cost_per_month, su.estimated),
        )
    out.append(suites)
    out.extend(cache_tables(report))
    out.extend(replay_tables(report))
    if m.quality is not None and m.quality.measured:
        out.append(quality_table(m.quality))
    return out


def replay_tables(report: RunReport) -> list[Any]:
    """A live run's latency per tier (vllm bench serve's figures) and the server-metrics check."""
    from rich.table import Table

    replay = report.model.replay
    if replay is None:
        return []
    req = replay.requests
    table = Table(
        title=f"Replay: {req.completed} of {req.sent} requests in {replay.duration_s:.1f} s "
        f"at concurrency {replay.concurrency} ({fmt.rate(replay.request_throughput, 'req/s')}, "
        f"{req.retries} retries, {req.answered_by_cache} answered by cache)",
        title_justify="left", header_style="bold",
    )  # fmt: skip
    cols = ("tier", "TTFT mean", "p99", "TPOT mean", "p99", "ITL mean", "E2EL mean", "p99")
    for col in cols:
        table.add_column(col, justify="left" if col == "tier" else "right")
    for tier, lat in replay.latency.items():
        table.add_row(
            _plain(tier),
            *(
                fmt.duration_ms(v)
                for v in (
                    lat.mean_ttft_ms, lat.p99_ttft_ms, lat.mean_tpot_ms, lat.p99_tpot_ms,
                    lat.mean_itl_ms, lat.mean_e2el_ms, lat.p99_e2el_ms,
                )
            ),
        )  # fmt: skip
    out = [table]
    metrics = report.model.server_metrics
    if metrics:
        check = Table(title="Server /metrics vs replies", title_justify="left", header_style="bold")
        for col in ("tier", "prompt tok (server/replies)", "generated", "prefix hits", "result"):
            check.add_column(col, justify="left" if col in ("tier", "result") else "right")
        for tier, sm in metrics.items():
            if not sm.available or sm.server is None or sm.client is None:
                check.add_row(_plain(tier), "", "", "", _plain(f"not scraped: {sm.reason}"))
                continue
            srv, cli = sm.server, sm.client
            check.add_row(
                _plain(tier),
                f"{fmt.count(srv.prompt_tokens)} / {fmt.count(cli.prompt_tokens)}",
                f"{fmt.count(srv.generation_tokens)} / {fmt.count(cli.completion_tokens)}",
                f"{fmt.count(srv.prefix_cache_hits)} / {fmt.count(cli.cached_tokens)}",
                "agree" if not sm.discrepancies else _plain("; ".join(sm.discrepancies)),
            )
        out.append(check)
    return out


def _capacity(block: PrefixTier) -> str:
    if block.num_gpu_blocks is None:
        return "unbounded"
    return f"{fmt.tokens(block.capacity_tokens)} tok, {block.capacity_source}"


def cache_tables(report: RunReport) -> list[Any]:
    """Cache layers (hit rates in requests and tokens, $ saved), prefix caches per tier, and the
    semantic threshold sweep."""
    from rich.table import Table

    cache: Cache = report.model.cache
    est = report.model.totals.estimated
    out: list[Any] = []
    layers = Table(title="Cache layers", title_justify="left", header_style="bold")
    for col in ("layer", "hit rate (requests)", "hit rate (tokens)", "saved $/month", "notes"):
        layers.add_column(col, justify="left" if col in ("layer", "notes") else "right")
    exact, semantic, prefix, bypass = cache.exact, cache.semantic, cache.prefix, cache.bypass
    if exact.enabled:
        notes = [
            f"temperature <= {exact.max_temperature:g}",
            f"ttl {exact.ttl_s:g} s" if exact.ttl_s else "no ttl",
        ]
        layers.add_row(
            "exact",
            fmt.percent(exact.hit_rate),
            fmt.percent(exact.hit_rate_tokens),
            fmt.money(exact.saved_per_month, est),
            ", ".join(notes),
        )
    if semantic.enabled:
        note = (
            f"threshold {semantic.threshold:g}; {semantic.wrong_hits} wrong of {semantic.hits} hits "
            f"(false-hit rate {fmt.percent(semantic.false_hit_rate)})"
        )
        if semantic.unjudged_hits:
            note += f", {semantic.unjudged_hits} unjudged"
        layers.add_row(
            "semantic",
            fmt.percent(semantic.hit_rate),
            fmt.percent(semantic.hit_rate_tokens),
            fmt.money(semantic.saved_per_month, est),
            note,
        )
    if prefix.enabled:
        layers.add_row(
            "prefix (KV)",
            fmt.percent(prefix.hit_rate_requests),
            fmt.percent(prefix.hit_rate_tokens),
            fmt.money(prefix.saved_per_month, est),
            f"simulated vLLM automatic prefix caching, replicas {prefix.replica_routing}",
        )
    if bypass.requests_per_month:
        reasons = ", ".join(f"{k} {fmt.tokens(v)}" for k, v in sorted(bypass.reasons.items()))
        detectors = bypass.pii.requests_per_month
        if detectors:
            reasons += (
                " (PII: "
                + ", ".join(f"{k} {fmt.tokens(v)}" for k, v in sorted(detectors.items()))
                + ")"
            )
        layers.add_row(
            "bypassed", fmt.tokens(bypass.requests_per_month) + "/mo", "", "", _plain(reasons)
        )
    if layers.row_count:
        out.append(layers)

    if prefix.enabled:
        tiers = Table(
            title="Prefix caches (simulated, per tier)", title_justify="left", header_style="bold"
        )
        for col in (
            "tier",
            "replicas",
            "capacity each",
            "prompt tok/mo",
            "cached tok/mo",
            "token hit rate",
            "request hit rate",
            "evicted",
            "saved $/month",
        ):
            tiers.add_column(col, justify="left" if col in ("tier", "capacity each") else "right")
        for name, block in prefix.tiers.items():
            if not block.simulated:
                tiers.add_row(_plain(name), "", "prefix caching off", "", "", "", "", "", "")
                continue
            tiers.add_row(
                _plain(name),
                fmt.count(block.instances),
                _capacity(block),
                fmt.tokens(block.input_tokens_per_month),
                fmt.tokens(block.cached_tokens_per_month),
                fmt.percent(block.hit_rate_tokens),
                fmt.percent(block.hit_rate_requests),
                fmt.count(block.evicted_blocks),
                fmt.money(block.saved_per_month, est),
            )
        out.append(tiers)

    if semantic.sweep:
        sweep = Table(
            title="Semantic cache: threshold sweep", title_justify="left", header_style="bold"
        )
        for col in ("threshold", "hits", "wrong hits", "unjudged", "hit rate", "false-hit rate"):
            sweep.add_column(col, justify="right")
        for row in semantic.sweep:
            mark = " (shipped)" if row.shipped else ""
            sweep.add_row(
                f"{row.threshold:g}{mark}",
                fmt.count(row.hits),
                fmt.count(row.wrong_hits),
                fmt.count(row.unjudged_hits),
                fmt.percent(row.hit_rate),
                fmt.percent(row.false_hit_rate),
            )
        out.append(sweep)
    return out


def quality_table(quality: Quality) -> Any:
    """Quality overall, per suite and per answering tier: score, pass rate and coverage."""
    from rich.table import Table

    table = Table(title="Quality", title_justify="left", header_style="bold")
    for col in ("scope", "fixtures", "measured", "unmeasured", "partial", "score", "pass rate"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    rows: list[tuple[str, QualityBlock]] = [("all", quality)]
    rows += [(f"suite {name}", block) for name, block in quality.suites.items()]
    rows += [(f"tier {name}", block) for name, block in quality.tiers.items()]
    for name, block in rows:
        table.add_row(
            _plain(name),
            fmt.count(block.fixtures),
            fmt.count(block.measured),
            fmt.count(block.unmeasured),
            fmt.count(block.partial),
            fmt.score(block.score),
            fmt.score(block.pass_rate),
        )
    return table


def quality_line(quality: Quality) -> str:
    """One line: the quality score and how many fixtures it rests on."""
    measured, total = quality.measured, quality.fixtures
    if not measured:
        head = f"Quality: not measured ({total} fixtures with assertions, none with a response to score)"
    else:
        head = (
            f"Quality: {fmt.score(quality.score)} (pass rate {fmt.score(quality.pass_rate)}) over {measured} of "
            f"{total} fixtures with assertions"
        )
    extra = []
    if quality.unmeasured and measured:
        extra.append(f"{quality.unmeasured} unmeasured")
    if quality.partial:
        extra.append(f"{quality.partial} partially measured")
    return head + (f"; {', '.join(extra)}" if extra else "")


def headline_lines(report: RunReport) -> list[str]:
    """The answer, first: spend, saving, quality, what is estimated and the warnings, then where
    the change and the verdict come from (`costguard run --summary` prints only these)."""
    m = report.model
    t = m.totals
    est = t.estimated
    lines = [
        f"Projected monthly spend: {fmt.money(t.cost_per_month, est)} for {fmt.tokens(t.requests_per_month)} requests/month"
    ]
    cf = m.counterfactual
    if cf is not None:
        lines.append(
            f"Saving: {fmt.money(cf.saving_per_month, est)}/month ({fmt.percentage(cf.saving_pct)}) vs "
            f"{fmt.money(cf.cost_per_month, est)} for {cf.label}"
        )
    if m.quality is not None:
        lines.append(quality_line(m.quality))
    if not m.complete:
        lines.append(f"INCOMPLETE RUN: {m.incomplete_reason or 'stopped early'}")
    if est:
        lines.append(
            f"{EST} estimated: {fmt.percent(t.estimated_share)} of this spend rests on estimates "
            "(the warnings say which)"
        )
    for warning in m.warnings:
        lines.append(f"warning: {warning}")
    lines.append(
        "Not compared, not gated: `costguard check --policy POLICY --base-ref origin/main` does both"
    )
    return lines


def detail_lines(report: RunReport) -> list[str]:
    """The figures under the tables: cost and tokens per request, each cache layer, agreement."""
    m = report.model
    t = m.totals
    est = t.estimated
    star = EST if est else ""
    tpr = t.tokens_per_request
    lines = [
        f"Cost per request: mean {fmt.money(t.cost_per_request.mean)}, p95 {fmt.money(t.cost_per_request.p95)}",
        f"Tokens per request: input mean {fmt.count(tpr.input.mean)} / p95 {fmt.count(tpr.input.p95)}, "
        f"output mean {fmt.count(tpr.output.mean)}{star} / p95 {fmt.count(tpr.output.p95)}{star}",
    ]
    exact, semantic, prefix = m.cache.exact, m.cache.semantic, m.cache.prefix
    if exact.enabled:
        lines.append(
            f"Exact cache: {fmt.percent(exact.hit_rate)} of requests served from cache, saving "
            f"{fmt.money(exact.saved_per_month, est)}/month"
            + (
                f"; {fmt.tokens(exact.bypassed_per_month)} requests/month not cacheable"
                if exact.bypassed_per_month
                else ""
            )
        )
    if semantic.enabled:
        judged_on = (
            " (judged on expect.reference stand-ins)"
            if semantic.answer_sources.get("reference")
            else ""
        )
        lines.append(
            f"Semantic cache (threshold {semantic.threshold:g}): {fmt.percent(semantic.hit_rate)} of requests, "
            f"saving {fmt.money(semantic.saved_per_month, est)}/month; false-hit rate "
            f"{fmt.percent(semantic.false_hit_rate)} ({semantic.wrong_hits} wrong of {semantic.hits} hits){judged_on}"
        )
    if prefix.enabled:
        lines.append(
            f"Prefix caches (simulated): {fmt.percent(prefix.hit_rate_tokens)} of prompt tokens reused, saving "
            f"{fmt.money(prefix.saved_per_month, est)}/month"
        )
    if m.agreement is not None:
        tiers = "; ".join(
            f"{name} mean {a.mean:.2f} (p10 {a.p10:.2f}, min {a.min:.2f}) over {a.fixtures} fixtures"
            for name, a in m.agreement.tiers.items()
        )
        lines.append(f"Agreement with {m.agreement.reference_tier}'s recorded answers: {tiers}")
    return lines


def summary_lines(report: RunReport) -> list[str]:
    """Every plain-text line of a run: the headline, then the detail lines."""
    return headline_lines(report) + detail_lines(report)


TERMS = (
    "Terms: PGR (performance gap recovered) = (quality of the router - all on the weakest tier) / "
    "(all on the strongest - all on the weakest); APGR = average PGR over the strong-tier share sweep; "
    "CPT(x%) = the smallest strong-tier share whose PGR reaches x% (RouteLLM's definitions; "
    "docs/routing.md)"
)
REPLAY_TERMS = (
    "Terms (vllm bench serve's): TTFT = time to first token, TPOT = time per output token after "
    "the first, ITL = inter-token latency, E2EL = end-to-end request latency; p99 = 99th percentile"
)


def print_run(report: RunReport, console: Any | None = None, *, details: bool = True) -> None:
    """A run for a person: the answer in the first lines (spend, saving, what is estimated,
    warnings), then — unless `details` is False — the stack, the tables and the routing section."""
    console = console or make_console()
    m = report.model
    stack = m.stack
    backend = m.backend
    name = stack.name if stack else ""
    console.print(
        f"[bold]costguard[/bold] {backend} {'projection' if backend == 'offline' else 'run'} of stack "
        f"[bold]{_escape(name)}[/bold]"
        + (f" (variant {_escape(stack.variant)})" if stack and stack.variant else "")
        + f": {m.totals.fixtures} fixtures, {len(stack.tiers) if stack else 0} tiers, "
        f"router {_escape(stack.router if stack else '?')}",
        highlight=False,
    )
    for line in headline_lines(report):
        console.print(line, highlight=False, markup=False)
    if not details:
        return
    console.print()
    console.print("[bold]Details[/bold] (`--summary` prints only the lines above)", highlight=False)
    for tier in stack.tiers if stack else []:
        hw = f"{tier.gpus}x {tier.gpu}" if tier.gpu else f"{tier.gpus} GPU(s)"
        quant = f", {tier.quantization}" if tier.quantization else ""
        approx = (
            ""
            if tier.tokenizer_exact
            else " [approximate token counts: the tokenizer is "
            + ("a chars/4 fallback]" if tier.tokenizer_exactness == "fallback" else "a stand-in]")
        )
        console.print(
            f"  {tier.name}: {tier.model}{quant} on {hw}; {tier.pricing.basis}"
            + (f" ({tier.pricing.source})" if tier.pricing.kind == "token" else "")
            + approx,
            highlight=False,
            markup=False,
        )
    for table in run_tables(report):
        console.print(fit(table, console.width))
    if m.replay is not None:
        console.print(REPLAY_TERMS, highlight=False, markup=False)
    print_routing(report, console)
    for line in detail_lines(report):
        console.print(line, highlight=False, markup=False)


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
    from rich.table import Table

    comparison = routing.comparison
    if not comparison.available:
        return None
    quality = comparison.quality
    strong = routing.strong_tier or "strong"
    table = Table(
        title=f"Routing against baselines (same fixtures; each request on one tier, no caches, no cascade; "
        f"{strong} = share on the strongest tier; quality from labels)",
        title_justify="left",
        header_style="bold",
    )
    cols = ["baseline", strong, "$/month", "router saves"]
    if quality.available:
        cols += ["quality", "PGR", "APGR", "CPT(50%)", "CPT(80%)"]
    for col in cols:
        table.add_column(col, justify="left" if col == "baseline" else "right")
    short = {
        "router": f"this router ({routing.router.kind})",
        "all_largest": f"all on {routing.strong_tier or 'largest'}",
        "all_smallest": f"all on {routing.weak_tier or 'smallest'}",
        "random": "random, same shares",
        "length": "length, same shares",
    }
    for name, row in comparison.baselines.items():
        saved = comparison.savings.get(f"vs_{name}")
        cells = [
            _plain(short.get(name, row.label)),
            fmt.percent(row.strong_share),
            fmt.money(row.cost_per_month, comparison.estimated),
            ""
            if saved is None
            else f"{fmt.money(saved.saving_per_month)} ({fmt.percent_change(saved.saving_pct)})",
        ]
        if quality.available:
            cells += [
                fmt.percent(row.quality),
                fmt.percent(row.pgr),
                fmt.percent(row.apgr),
                fmt.percent(row.cpt50),
                fmt.percent(row.cpt80),
            ]
        table.add_row(*cells)
    return table


def print_routing(report: RunReport, console: Any) -> None:
    """The routing section: routed shares, overhead, cascade, and the baselines table."""
    routing = report.model.routing
    lines = routing_lines(routing, report.model.timing.router_overhead)
    if not lines:
        return
    table = routing_table(routing)
    if table is not None:
        console.print(fit(table, console.width))
        comparison = routing.comparison
        quality = comparison.quality
        if quality.available:
            labels = {name: b.label for name, b in comparison.baselines.items()}
            console.print(
                f"Baselines: random = {labels.get('random')}; length = {labels.get('length')}. "
                f"Quality and PGR: {quality.note} ({quality.labelled_fixtures} labelled fixtures, "
                f"{fmt.percent(quality.labelled_share)} of traffic); APGR over an 11-point strong-share sweep",
                highlight=False,
                markup=False,
            )
            console.print(TERMS, highlight=False, markup=False)
            if quality.reason:
                console.print(f"PGR unavailable: {quality.reason}", highlight=False, markup=False)
    for line in lines:
        console.print(line, highlight=False, markup=False)


def print_calibration(
    result: dict[str, Any],
    *,
    config: str,
    written: bool,
    asked: bool | None = None,
    console: Any | None = None,
) -> None:
    """`costguard calibrate`: old -> new thresholds, target and achieved shares, holdout drift."""
    from rich.table import Table

    console = console or make_console()
    console.print(
        f"Calibrated the {result['router']} router on {result['fixtures']} fixtures "
        "(shares weighted by requests per month)",
        highlight=False,
        markup=False,
    )
    table = Table(header_style="bold")
    holdout = result.get("holdout")
    cols = ["tier", "before", "target", "calibrated", f"{result['key']} (old -> new)"]
    if holdout is not None:
        cols += ["holdout", "drift"]
    for col in cols:
        table.add_column(col, justify="left" if col == "tier" else "right")
    for k, tier in enumerate(result["tiers"]):
        if k < len(result["new"]):
            change = f"{result['old'][k]:g} -> {result['new'][k]:g}"
        else:
            change = "(above the last threshold)"
        row = [
            tier,
            fmt.percent(result["before"][tier]),
            fmt.percent(result["targets"][tier]),
            fmt.percent(result["achieved"][tier]),
            change,
        ]
        if holdout is not None:
            drift = result["drift"][tier]
            row += [fmt.percent(holdout[tier]), f"{100 * drift:+.1f} pts"]
        table.add_row(*row)
    console.print(fit(table, console.width))
    if holdout is not None:
        console.print(
            f"Holdout: {result['holdout_fixtures']} fixtures from {', '.join(result['holdout_paths'])} routed with the "
            "new thresholds (not used to pick them)",
            highlight=False,
            markup=False,
        )
    for why in (result.get("missed") or {}).values():
        console.print(f"Target missed: {why}", highlight=False, markup=False)
    asked = written if asked is None else asked
    if result.get("changed") is False:
        console.print(
            f"Thresholds unchanged: {config} already holds them"
            + (" (nothing written)" if asked else ""),
            highlight=False,
            markup=False,
        )
    elif written:
        console.print(f"Wrote the new thresholds to {config}", highlight=False, markup=False)
    else:
        console.print(
            f"Not written: re-run with --write to save them to {config}",
            highlight=False,
            markup=False,
        )


STATUS_LABEL = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}
STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def _outcome(result: PolicyResult | PolicyOutcome | dict[str, Any]) -> PolicyOutcome:
    if isinstance(result, PolicyResult):
        return PolicyOutcome.model_validate(result.to_dict())
    if isinstance(result, dict):
        return PolicyOutcome.model_validate(result)
    return result


def verdict_line(outcome: PolicyOutcome) -> str:
    """One line: the policy's verdict and its counts (rich markup)."""
    verdicts = outcome.verdicts
    n_fail = sum(1 for v in verdicts if v.status == "fail")
    n_warn = sum(1 for v in verdicts if v.status == "warn")
    n_skip = sum(1 for v in verdicts if v.status == "skip")
    skipped = f", {n_skip} skipped" if n_skip else ""
    policy = _escape(outcome.policy)
    if n_fail:
        return f"Verdict: [bold red]FAIL[/], {n_fail} rule(s) failed, {n_warn} warning(s){skipped} ({policy})"
    if n_warn:
        return f"Verdict: [yellow]PASS[/], passed with {n_warn} warning(s){skipped} ({policy})"
    return f"Verdict: [green]PASS[/], all rules passed{skipped} ({policy})"


def print_check(
    result: PolicyResult | PolicyOutcome | dict[str, Any], console: Any | None = None
) -> None:
    """The policy verdict first (each broken or warning rule in a line), then the verdicts table."""
    outcome = _outcome(result)
    console = console or make_console()
    print_verdict(outcome, console)
    print_verdict_table(outcome, console)


def print_verdict(outcome: PolicyOutcome, console: Any) -> None:
    """The verdict line, then one line per broken or warning rule (where it is in the policy)."""
    verdicts = outcome.verdicts
    console.print(verdict_line(outcome), highlight=False)
    for v in verdicts:
        if v.status in ("fail", "warn"):
            where = f" ({v.file}:{v.line})" if v.file and v.line else ""
            console.print(
                f"{STATUS_LABEL[v.status]} {v.rule}: {v.message}{where}",
                highlight=False,
                markup=False,
            )
    ack = outcome.acknowledgement
    if ack is not None:
        by = f" (added by {ack.by})" if ack.by else ""
        console.print(
            f"regressions acknowledged by the label {ack.label!r}{by}: regression rules warn",
            highlight=False,
            markup=False,
        )
    if any(v.estimated for v in verdicts):
        console.print(f"{EST} estimated (not measured)", highlight=False, markup=False)


def print_verdict_table(outcome: PolicyOutcome, console: Any) -> None:
    """Every rule: status, metric, actual, limit, level."""
    from rich.table import Table

    table = Table(
        title=f"Policy {_escape(outcome.policy)}", title_justify="left", header_style="bold"
    )
    for col in ("", "rule", "metric", "actual", "limit", "level"):
        table.add_column(col)
    for v in outcome.verdicts:
        if v.status == "skip":
            actual: Any = _plain(v.message)
        else:
            actual = fmt.format_value(v.actual, v.unit) + (EST if v.estimated else "")
        table.add_row(
            f"[{STATUS_STYLE[v.status]}]{STATUS_LABEL[v.status]}[/]",
            _plain(v.rule),
            v.metric,
            actual,
            v.limit,
            v.level,
        )
    console.print(fit(table, console.width))


def _plain(text: Any) -> Any:
    """User text shown literally (rich markup in a suite or rule name stays text)."""
    from rich.text import Text

    return Text(str(text))


def _pair(block: Change | None, show: Callable[[float | None], str]) -> str:
    """`base -> head` of a changed figure, or the one value when it did not move."""
    if block is None or (block.base is None and block.head is None):
        return "-"
    if block.base is None or not block.delta:
        return show(block.head if block.head is not None else block.base)
    if block.head is None:
        return f"{show(block.base)} -> (removed)"
    return f"{show(block.base)} -> {show(block.head)}"


def change_reasons(f: Any) -> list[str]:
    """Why a fixture's cost moved (the "why" column; the same rules as the PR comment's)."""
    reasons = []
    if f.status == "added":
        reasons.append("new fixture")
    if f.status == "removed":
        reasons.append("fixture removed")
    if f.prompt_changed:
        reasons.append("prompt changed")
    if f.status == "changed":
        if f.served_by.base != f.served_by.head:
            reasons.append(f"served by {f.served_by.base} -> {f.served_by.head}")
        if f.cache.base != f.cache.head:
            reasons.append(f"cache {f.cache.base} -> {f.cache.head}")
        if f.escalated.base != f.escalated.head:
            reasons.append("escalates" if f.escalated.head else "no longer escalates")
        if not reasons and f.monthly_requests.delta:
            reasons.append("traffic share")
    return reasons


def _diff_model(diff: DiffReport | DiffReportModel) -> DiffReportModel:
    return diff.model if isinstance(diff, DiffReport) else diff


def diff_headline(diff: DiffReport | DiffReportModel) -> str:
    """One line: the monthly delta (or the head alone with the reason there is no baseline)."""
    d = _diff_model(diff)
    cost = d.totals.cost_per_month
    est = EST if d.estimated else ""
    if not d.base.available:
        return f"Projected monthly spend {fmt.money(cost.head)}{est} (no baseline yet: {d.base.reason})"
    if not cost.delta:
        return f"Projected monthly spend unchanged at {fmt.money(cost.head)}{est} (against {d.base.source})"
    pct = f" ({fmt.percent_change(cost.delta_pct)})" if cost.delta_pct is not None else ""
    return (
        f"Projected monthly spend {fmt.money_delta(cost.delta)}{pct}{est}: {fmt.money(cost.base)} -> "
        f"{fmt.money(cost.head)} per month (against {d.base.source})"
    )


def print_diff(diff: DiffReport | DiffReportModel, console: Any | None = None) -> None:
    """A DiffReport in the terminal: headline, tiers, suites, top movers, verdicts. Reads, never recomputes."""
    from rich.table import Table

    d = _diff_model(diff)
    console = console or make_console()
    console.print(diff_headline(d), highlight=False, markup=False)
    if d.policy is not None:
        print_verdict(_outcome(d.policy), console)
    if d.estimated:
        console.print(
            f"{EST} rests on estimates (expected/prior output tokens, approximate prompt token "
            "counts or declared GPU throughput)",
            highlight=False,
            markup=False,
        )
    has_base = d.base.available
    fixtures = d.fixtures
    if has_base:
        console.print(
            f"Fixtures: {fixtures.changed} changed, {fixtures.added} added, {fixtures.removed} removed, "
            f"{fixtures.unchanged} unchanged",
            highlight=False,
        )
    for title, blocks in (("Tiers", d.tiers), ("Suites", d.suites)):
        table = Table(title=title, title_justify="left", header_style="bold")
        for col in (
            "name",
            "share",
            "input tok/mo",
            "output tok/mo",
            "$/month",
            "delta $/month",
            "delta %",
        ):
            table.add_column(col, justify="left" if col == "name" else "right")
        for name, b in blocks.items():
            est = EST if (b.estimated.head or b.estimated.base) else ""
            status = "" if b.status in ("changed", "unchanged", "head_only") else f" ({b.status})"
            table.add_row(
                _plain(name + status),
                _pair(b.share, fmt.percent),
                _pair(b.input_tokens_per_month, fmt.tokens),
                _pair(b.output_tokens_per_month, fmt.tokens),
                _pair(b.cost_per_month, fmt.money) + est,
                fmt.money_delta(b.cost_per_month.delta) if has_base else "",
                fmt.percent_change(b.cost_per_month.delta_pct) if has_base else "",
            )
        console.print(fit(table, console.width))
    if has_base:
        by_id = {f.id: f for f in fixtures.items}
        if fixtures.top_movers:
            table = Table(title="Top movers", title_justify="left", header_style="bold")
            for col in (
                "fixture",
                "suite",
                "status",
                "input tok/req",
                "output tok/req",
                "$/month",
                "delta $/month",
                "why",
            ):
                table.add_column(
                    col, justify="left" if col in ("fixture", "suite", "status", "why") else "right"
                )
            for fid in fixtures.top_movers:
                f = by_id[fid]
                table.add_row(
                    _plain(f.id),
                    _plain(f.suite),
                    f.status,
                    _pair(f.input_tokens, fmt.count),
                    _pair(f.output_tokens, fmt.count),
                    _pair(f.cost_per_month, fmt.money),
                    fmt.money_delta(f.cost_per_month.delta),
                    _plain("; ".join(change_reasons(f))),
                )
            console.print(fit(table, console.width))
    if d.policy is not None:
        print_verdict_table(_outcome(d.policy), console)


def print_frontier(data: dict[str, Any], console: Any | None = None) -> None:
    """The `costguard frontier` result: every variant, the frontier, the recommendation. Reads only."""
    from rich.table import Table

    console = console or make_console()
    table = Table(title="Stack variants", title_justify="left", header_style="bold")
    for col in (
        "variant",
        "$/month",
        "quality",
        "pass rate",
        "measured",
        "p95 latency",
        "policy",
        "frontier",
    ):
        table.add_column(
            col, justify="left" if col in ("variant", "policy", "frontier") else "right"
        )
    for v in data["variants"]:
        if v["name"] == data["recommended"]:
            place = "[bold green]recommended[/]"
        elif v["on_frontier"]:
            place = "[green]non-dominated[/]"
        elif v["excluded"]:
            place = "[dim]not compared[/]"
        else:
            place = f"[dim]dominated by {_escape(v['dominated_by'])}[/]"
        table.add_row(
            _plain(v["name"]),
            fmt.money(v["cost_per_month"], v["cost_estimated"]),
            fmt.score(v["quality"]) if v["quality_measured"] else "unmeasured",
            fmt.score(v["pass_rate"]) if v["quality_measured"] else "unmeasured",
            f"{v['quality_measured']}/{v['quality_fixtures']}",
            fmt.duration_s(v["latency_p95_s"]),
            {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}.get(
                v["verdict"] or "", "-"
            ),
            place,
        )
    console.print(fit(table, console.width))
    objectives = ", ".join(
        o.replace("_per_month", "").replace("_p95_s", " p95") for o in data["objectives"]
    )
    frontier = ", ".join(data["frontier"]) or "(none)"
    unmeasured = "" if data.get("quality_measured", True) else " (quality unmeasured)"
    console.print(
        f"Non-dominated on {objectives}{unmeasured}: {frontier}", highlight=False, markup=False
    )
    if data["recommended"] is not None:
        best = next(v for v in data["variants"] if v["name"] == data["recommended"])
        console.print(
            f"Recommended: {best['name']} ({best['description']}): {fmt.money(best['cost_per_month'], best['cost_estimated'])}"
            f"/month, quality {fmt.score(best['quality'])} over {best['quality_measured']} of {best['quality_fixtures']} "
            f"fixtures, the cheapest variant that meets {data['policy']}",
            highlight=False,
            markup=False,
        )
    elif data.get("cheapest_passing") is not None:
        best = next(v for v in data["variants"] if v["name"] == data["cheapest_passing"])
        console.print(
            f"Cheapest variant that passes {data['policy']}: {best['name']} ({best['description']}): "
            f"{fmt.money(best['cost_per_month'], best['cost_estimated'])}/month. Not a recommendation: its "
            f"quality is unmeasured (on_unmeasured: {data.get('on_unmeasured')})",
            highlight=False,
            markup=False,
        )
    elif data["policy"] is None:
        console.print(
            "Give --policy to get the cheapest variant that meets its floors.",
            highlight=False,
            markup=False,
        )
    for note in data["notes"]:
        console.print(f"note: {note}", highlight=False, markup=False)


def _escape(text: Any) -> str:
    from rich.markup import escape

    return escape(str(text))
