"""A run in the terminal: the answer first (spend, saving, quality, estimates, warnings), then the
stack, the tables (tiers, suites, caches, replay, quality), the routing section and the details."""

from __future__ import annotations

from typing import Any

from costguard.render.terminal.caches import cache_tables
from costguard.render.terminal.live import REPLAY_TERMS, replay_tables
from costguard.render.terminal.routing import print_routing
from costguard.render.terminal.tables import escape, fit, make_console, plain, say, table
from costguard.report import format as fmt
from costguard.report.format import EST
from costguard.report.model import Quality, QualityBlock, RunReportModel, Usage
from costguard.report.run_report import RunReport


def run_tables(report: RunReport) -> list[Any]:
    """The rich renderables for a run: tiers, suites, totals (shared by the CLI and the pytest plugin)."""
    m = report.model
    out: list[Any] = [_tiers_table(m), _suites_table(m)]
    out.extend(cache_tables(report))
    out.extend(replay_tables(report))
    if m.quality is not None and m.quality.measured:
        out.append(quality_table(m.quality))
    return out


def _tiers_table(m: RunReportModel) -> Any:
    tiers = table(
        "Tiers: share of requests by the tier that answers them (after caches and cascade)",
        ("tier", "share", *_volume_columns(cached=True), "$/month", "cost basis"),
        left=("tier", "cost basis"),
    )
    for name, t in m.tiers.items():
        tiers.add_row(
            plain(name),
            fmt.percent(t.share),
            *_volumes(t, cached=True),
            fmt.money(t.cost_per_month, t.estimated),
            t.cost_basis,
        )
    if m.cache.hit_rate > 0:
        cache_share = fmt.percent(m.routing.cache_share)
        tiers.add_row("(cache)", cache_share, "", "", "", "", fmt.money(0.0), "served from cache")
    return tiers


def _suites_table(m: RunReportModel) -> Any:
    suites = table(
        "Suites",
        ("suite", "fixtures", "share", *_volume_columns(cached=False), "$/request", "$/month"),
        left=("suite",),
    )
    for name, su in m.suites.items():
        suites.add_row(
            plain(name),
            fmt.count(su.fixtures),
            fmt.percent(su.share),
            *_volumes(su, cached=False),
            fmt.money(su.cost_per_request, su.estimated),
            fmt.money(su.cost_per_month, su.estimated),
        )
    return suites


def _volume_columns(cached: bool) -> tuple[str, ...]:
    if cached:
        return ("requests/mo", "input tok/mo", "cached tok/mo", "output tok/mo")
    return ("requests/mo", "input tok/mo", "output tok/mo")


def _volumes(usage: Usage, cached: bool) -> list[str]:
    """Requests, input tokens, cached tokens (when `cached`) and output tokens per month."""
    figures = [usage.requests_per_month, usage.input_tokens_per_month]
    if cached:
        figures.append(usage.cached_tokens_per_month)
    return [fmt.tokens(v) for v in [*figures, usage.output_tokens_per_month]]


def quality_table(quality: Quality) -> Any:
    """Quality overall, per suite and per answering tier: score, pass rate and coverage."""
    out = table(
        "Quality",
        ("scope", "fixtures", "measured", "unmeasured", "partial", "score", "pass rate"),
        left=("scope",),
    )
    rows: list[tuple[str, QualityBlock]] = [("all", quality)]
    rows += [(f"suite {name}", block) for name, block in quality.suites.items()]
    rows += [(f"tier {name}", block) for name, block in quality.tiers.items()]
    for name, block in rows:
        out.add_row(
            plain(name),
            *(
                fmt.count(n)
                for n in (block.fixtures, block.measured, block.unmeasured, block.partial)
            ),
            fmt.score(block.score),
            fmt.score(block.pass_rate),
        )
    return out


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
        f"[bold]{escape(name)}[/bold]"
        + (f" (variant {escape(stack.variant)})" if stack and stack.variant else "")
        + f": {m.totals.fixtures} fixtures, {len(stack.tiers) if stack else 0} tiers, "
        f"router {escape(stack.router if stack else '?')}",
        highlight=False,
    )
    for line in headline_lines(report):
        say(console, line)
    if not details:
        return
    console.print()
    console.print("[bold]Details[/bold] (`--summary` prints only the lines above)", highlight=False)
    for line in _stack_lines(m):
        say(console, line)
    for renderable in run_tables(report):
        console.print(fit(renderable, console.width))
    if m.replay is not None:
        say(console, REPLAY_TERMS)
    print_routing(report, console)
    for line in detail_lines(report):
        say(console, line)


def _stack_lines(m: RunReportModel) -> list[str]:
    """One line per tier: model, precision, hardware, price basis, token-count exactness."""
    lines = []
    for tier in m.stack.tiers if m.stack else []:
        hw = f"{tier.gpus}x {tier.gpu}" if tier.gpu else f"{tier.gpus} GPU(s)"
        quant = f", {tier.quantization}" if tier.quantization else ""
        approx = (
            ""
            if tier.tokenizer_exact
            else " [approximate token counts: the tokenizer is "
            + ("a chars/4 fallback]" if tier.tokenizer_exactness == "fallback" else "a stand-in]")
        )
        lines.append(
            f"  {tier.name}: {tier.model}{quant} on {hw}; {tier.pricing.basis}"
            + (f" ({tier.pricing.source})" if tier.pricing.kind == "token" else "")
            + approx
        )
    return lines
