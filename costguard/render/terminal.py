"""Terminal rendering (rich tables) of a RunReport and of policy verdicts. Reads, never recomputes."""

from __future__ import annotations

from typing import Any

from costguard.policy.engine import PolicyResult, format_value
from costguard.render.numbers import compact_count
from costguard.report.run_report import RunReport

EST = "*"  # marks a figure that rests on estimates; the legend under the tables says so


def _money(value: float, estimated: bool = False) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}{EST if estimated else ''}"


def _tokens(value: float) -> str:
    return compact_count(value)


def _pct(value: float | None) -> str:
    """A share as a percentage; "n/a" for a rate over zero events (null in the report)."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def make_console(**kwargs: Any) -> Any:
    """A console that is wide enough for the tables in CI logs (not a terminal: 120 columns)."""
    import sys

    from rich.console import Console

    if "width" not in kwargs and not sys.stdout.isatty():
        kwargs["width"] = 120
    return Console(**kwargs)


def run_tables(report: RunReport) -> list[Any]:
    """The rich renderables for a run: tiers, suites, totals (shared by the CLI and the pytest plugin)."""
    from rich.table import Table

    out: list[Any] = []
    tiers = Table(title="Tiers", title_justify="left", header_style="bold")
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
    for name, t in report.tiers.items():
        tiers.add_row(
            name,
            _pct(t["share"]),
            _tokens(t["requests_per_month"]),
            _tokens(t["input_tokens_per_month"]),
            _tokens(t["cached_tokens_per_month"]),
            _tokens(t["output_tokens_per_month"]),
            _money(t["cost_per_month"], t.get("estimated", False)),
            t.get("cost_basis", ""),
        )
    cache = report.get("cache", {})
    if cache.get("hit_rate", 0) > 0:
        tiers.add_row(
            "(cache)",
            _pct(report.get("routing", {}).get("cache_share", 0.0)),
            "",
            "",
            "",
            "",
            "$0.00",
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
    for name, s in report.suites.items():
        suites.add_row(
            name,
            str(s["fixtures"]),
            _pct(s["share"]),
            _tokens(s["requests_per_month"]),
            _tokens(s["input_tokens_per_month"]),
            _tokens(s["output_tokens_per_month"]),
            f"${s['cost_per_request']:.6f}{EST if s.get('estimated') else ''}",
            _money(s["cost_per_month"], s.get("estimated", False)),
        )
    out.append(suites)
    out.extend(cache_tables(report))
    out.extend(replay_tables(report))
    quality = report.get("quality")
    if quality and quality["measured"]:
        out.append(quality_table(quality))
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def replay_tables(report: RunReport) -> list[Any]:
    """A live run's latency per tier (vllm bench serve's figures) and the server-metrics check."""
    from rich.table import Table

    replay = report.get("replay")
    if not replay:
        return []
    req = replay["requests"]
    table = Table(
        title=f"Replay: {req['completed']} of {req['sent']} requests in {replay['duration_s']:.1f} s "
        f"at concurrency {replay['concurrency']} ({replay['request_throughput']:.1f} req/s, "
        f"{req['retries']} retries, {req['answered_by_cache']} answered by cache)",
        title_justify="left", header_style="bold",
    )  # fmt: skip
    cols = (
        "tier",
        "TTFT ms mean",
        "p99",
        "TPOT ms mean",
        "p99",
        "ITL ms mean",
        "E2EL ms mean",
        "p99",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "tier" else "right")
    for tier, lat in replay["latency"].items():
        table.add_row(
            tier, _ms(lat["mean_ttft_ms"]), _ms(lat["p99_ttft_ms"]), _ms(lat["mean_tpot_ms"]), _ms(lat["p99_tpot_ms"]),
            _ms(lat["mean_itl_ms"]), _ms(lat["mean_e2el_ms"]), _ms(lat["p99_e2el_ms"]),
        )  # fmt: skip
    out = [table]
    metrics = report.get("server_metrics") or {}
    if metrics:
        check = Table(title="Server /metrics vs replies", title_justify="left", header_style="bold")
        for col in ("tier", "prompt tok (server/replies)", "generated", "prefix hits", "result"):
            check.add_column(col, justify="left" if col in ("tier", "result") else "right")
        for tier, m in metrics.items():
            if not m.get("available"):
                check.add_row(tier, "", "", "", _plain(f"not scraped: {m.get('reason')}"))
                continue
            srv, cli = m["server"], m["client"]
            check.add_row(
                tier,
                f"{srv['prompt_tokens']:,.0f} / {cli['prompt_tokens']:,}",
                f"{srv['generation_tokens']:,.0f} / {cli['completion_tokens']:,}",
                f"{srv['prefix_cache_hits']:,.0f} / {cli['cached_tokens']:,}",
                "agree" if not m["discrepancies"] else _plain("; ".join(m["discrepancies"])),
            )
        out.append(check)
    return out


def _capacity(block: dict[str, Any]) -> str:
    if block.get("num_gpu_blocks") is None:
        return "unbounded"
    return f"{_tokens(block['capacity_tokens'])} tok, {block['capacity_source']}"


def cache_tables(report: RunReport) -> list[Any]:
    """Cache layers (hit rates in requests and tokens, $ saved), prefix caches per tier, and the
    semantic threshold sweep."""
    from rich.table import Table

    cache = report.get("cache", {})
    if not cache:
        return []
    est = report.totals.get("estimated", False)
    out: list[Any] = []
    layers = Table(title="Cache layers", title_justify="left", header_style="bold")
    for col in ("layer", "hit rate (requests)", "hit rate (tokens)", "$ saved/month", "notes"):
        layers.add_column(col, justify="left" if col in ("layer", "notes") else "right")
    exact, semantic, prefix = (
        cache.get("exact", {}),
        cache.get("semantic", {}),
        cache.get("prefix", {}),
    )
    bypass = cache.get("bypass", {})
    if exact.get("enabled"):
        notes = [
            f"temperature <= {exact['max_temperature']:g}",
            f"ttl {exact['ttl_s']:g} s" if exact.get("ttl_s") else "no ttl",
        ]
        layers.add_row(
            "exact",
            _pct(exact["hit_rate"]),
            _pct(exact["hit_rate_tokens"]),
            _money(exact["saved_per_month"], est),
            ", ".join(notes),
        )
    if semantic.get("enabled"):
        note = (
            f"threshold {semantic['threshold']:g}; {semantic['wrong_hits']} wrong of {semantic['hits']} hits "
            f"(false-hit rate {_pct(semantic['false_hit_rate'])})"
        )
        if semantic.get("unjudged_hits"):
            note += f", {semantic['unjudged_hits']} unjudged"
        layers.add_row(
            "semantic",
            _pct(semantic["hit_rate"]),
            _pct(semantic["hit_rate_tokens"]),
            _money(semantic["saved_per_month"], est),
            note,
        )
    if prefix.get("enabled"):
        layers.add_row(
            "prefix (KV)",
            _pct(prefix["hit_rate_requests"]),
            _pct(prefix["hit_rate_tokens"]),
            _money(prefix["saved_per_month"], est),
            f"simulated vLLM APC, replicas {prefix['replica_routing']}",
        )
    if bypass.get("requests_per_month"):
        reasons = ", ".join(
            f"{k} {_tokens(v)}" for k, v in sorted(bypass.get("reasons", {}).items())
        )
        detectors = bypass.get("pii", {}).get("requests_per_month", {})
        if detectors:
            reasons += (
                " (PII: "
                + ", ".join(f"{k} {_tokens(v)}" for k, v in sorted(detectors.items()))
                + ")"
            )
        layers.add_row("bypassed", _tokens(bypass["requests_per_month"]) + "/mo", "", "", reasons)
    if layers.row_count:
        out.append(layers)

    if prefix.get("enabled"):
        tiers = Table(
            title="Prefix caches (simulated, per tier)", title_justify="left", header_style="bold"
        )
        for col in (
            "tier",
            "replicas",
            "capacity each",
            "prompt tok/mo",
            "cached tok/mo",
            "hit (tokens)",
            "hit (requests)",
            "evicted",
            "$ saved/month",
        ):
            tiers.add_column(
                col,
                justify="left" if col in ("tier", "capacity each") else "right",
                no_wrap=col == "capacity each",
            )
        for name, block in prefix.get("tiers", {}).items():
            if not block.get("simulated"):
                tiers.add_row(name, "", "prefix caching off", "", "", "", "", "", "")
                continue
            tiers.add_row(
                name,
                str(block["instances"]),
                _capacity(block),
                _tokens(block["input_tokens_per_month"]),
                _tokens(block["cached_tokens_per_month"]),
                _pct(block["hit_rate_tokens"]),
                _pct(block["hit_rate_requests"]),
                f"{block['evicted_blocks']:,}",
                _money(block["saved_per_month"], est),
            )
        out.append(tiers)

    if semantic.get("sweep"):
        sweep = Table(
            title="Semantic cache: threshold sweep", title_justify="left", header_style="bold"
        )
        for col in ("threshold", "hits", "wrong hits", "unjudged", "hit rate", "false-hit rate"):
            sweep.add_column(col, justify="right")
        for row in semantic["sweep"]:
            mark = " (shipped)" if row["shipped"] else ""
            sweep.add_row(
                f"{row['threshold']:g}{mark}",
                str(row["hits"]),
                str(row["wrong_hits"]),
                str(row["unjudged_hits"]),
                _pct(row["hit_rate"]),
                _pct(row["false_hit_rate"]),
            )
        out.append(sweep)
    return out


def _score(value: float | None) -> str:
    return "n/a" if value is None else _pct(value)


def quality_table(quality: dict[str, Any]) -> Any:
    """Quality overall, per suite and per answering tier: score, pass rate and coverage."""
    from rich.table import Table

    table = Table(title="Quality", title_justify="left", header_style="bold")
    for col in ("scope", "fixtures", "measured", "unmeasured", "partial", "score", "pass rate"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    rows = [("all", quality)]
    rows += [(f"suite {name}", block) for name, block in quality.get("suites", {}).items()]
    rows += [(f"tier {name}", block) for name, block in quality.get("tiers", {}).items()]
    for name, block in rows:
        table.add_row(
            _plain(name),
            str(block["fixtures"]),
            str(block["measured"]),
            str(block["unmeasured"]),
            str(block["partial"]),
            _score(block["score"]),
            _score(block["pass_rate"]),
        )
    return table


def quality_line(quality: dict[str, Any]) -> str:
    """One line: the quality score and how many fixtures it rests on."""
    measured, total = quality["measured"], quality["fixtures"]
    if not measured:
        head = f"Quality: not measured ({total} fixtures with assertions, none with a response to score)"
    else:
        head = (
            f"Quality: {_score(quality['score'])} (pass rate {_score(quality['pass_rate'])}) over {measured} of "
            f"{total} fixtures with assertions"
        )
    extra = []
    if quality["unmeasured"] and measured:
        extra.append(f"{quality['unmeasured']} unmeasured")
    if quality["partial"]:
        extra.append(f"{quality['partial']} partially measured")
    return head + (f"; {', '.join(extra)}" if extra else "")


def summary_lines(report: RunReport) -> list[str]:
    """Plain-text headline lines (also used by the pytest terminal summary)."""
    t = report.totals
    est = t.get("estimated", False)
    lines = [
        f"Projected monthly spend: {_money(t['cost_per_month'], est)} for {_tokens(t['requests_per_month'])} requests/month "
        f"(mean {format_value(t['cost_per_request']['mean'], 'usd_per_request')}, "
        f"p95 {format_value(t['cost_per_request']['p95'], 'usd_per_request')} per request)",
    ]
    tpr = t["tokens_per_request"]
    lines.append(
        f"Tokens per request: input mean {tpr['input']['mean']:,.0f} / p95 {tpr['input']['p95']:,.0f}, "
        f"output mean {tpr['output']['mean']:,.0f}{EST if est else ''} / p95 {tpr['output']['p95']:,.0f}{EST if est else ''}"
    )
    cf = report.get("counterfactual")
    if cf:
        lines.append(
            f"Baseline, {cf['label']}: {_money(cf['cost_per_month'], est)} -> saving "
            f"{_money(cf['saving_per_month'], est)} ({cf['saving_pct']:.1f}%)"
        )
    cache = report.get("cache", {})
    exact = cache.get("exact", {})
    if exact.get("enabled"):
        lines.append(
            f"Exact cache: {_pct(exact['hit_rate'])} of requests served from cache, saving "
            f"{_money(exact['saved_per_month'], est)}/month"
            + (
                f"; {_tokens(exact['bypassed_per_month'])} requests/month not cacheable"
                if exact.get("bypassed_per_month")
                else ""
            )
        )
    semantic = cache.get("semantic", {})
    if semantic.get("enabled"):
        sources = semantic.get("answer_sources", {})
        judged_on = " (judged on expect.reference stand-ins)" if sources.get("reference") else ""
        lines.append(
            f"Semantic cache (threshold {semantic['threshold']:g}): {_pct(semantic['hit_rate'])} of requests, "
            f"saving {_money(semantic['saved_per_month'], est)}/month; false-hit rate "
            f"{_pct(semantic['false_hit_rate'])} ({semantic['wrong_hits']} wrong of {semantic['hits']} hits){judged_on}"
        )
    prefix = cache.get("prefix", {})
    if prefix.get("enabled"):
        lines.append(
            f"Prefix caches (simulated): {_pct(prefix['hit_rate_tokens'])} of prompt tokens reused, saving "
            f"{_money(prefix['saved_per_month'], est)}/month"
        )
    if report.get("quality"):
        lines.append(quality_line(report.get("quality")))
    agreement = report.get("agreement")
    if agreement:
        tiers = "; ".join(
            f"{name} mean {t['mean']:.2f} (p10 {t['p10']:.2f}, min {t['min']:.2f}) over {t['fixtures']} fixtures"
            for name, t in agreement["tiers"].items()
        )
        lines.append(f"Agreement with {agreement['reference_tier']}'s recorded answers: {tiers}")
    routing = report.get("routing", {})
    if routing.get("escalation_rate"):
        mark = EST if routing.get("escalation_estimated") else ""
        lines.append(
            f"Cascade: {_pct(routing['escalation_rate'])}{mark} of requests escalated, "
            f"{_money(routing.get('escalation_cost_per_month', 0.0), est)}/month for the second calls"
        )
    if not report.complete:
        lines.append(f"INCOMPLETE RUN: {report.get('incomplete_reason') or 'stopped early'}")
    if est:
        lines.append(
            f"{EST} estimated: {100 * t.get('estimated_share', 0):.0f}% of this spend rests on estimated "
            "output tokens, approximate prompt token counts or declared GPU throughput (see warnings)"
        )
    for warning in report.get("warnings", []):
        lines.append(f"warning: {warning}")
    return lines


def print_run(report: RunReport, console: Any | None = None) -> None:
    console = console or make_console()
    stack = report.get("stack", {})
    backend = report.get("backend", "offline")
    console.print(
        f"[bold]costguard[/bold] {backend} {'projection' if backend == 'offline' else 'run'} of stack "
        f"[bold]{_escape(stack.get('name', ''))}[/bold]"
        + (f" (variant {_escape(stack['variant'])})" if stack.get("variant") else "")
        + f": {report.totals['fixtures']} fixtures, router {stack.get('router', '?')}",
        highlight=False,
    )
    for tier in stack.get("tiers", []):
        hw = f"{tier['gpus']}x {tier['gpu']}" if tier.get("gpu") else f"{tier['gpus']} GPU(s)"
        quant = f", {tier['quantization']}" if tier.get("quantization") else ""
        approx = (
            ""
            if tier.get("tokenizer_exact", True)
            else " [approximate token counts: the tokenizer is "
            + (
                "a chars/4 fallback]"
                if tier.get("tokenizer_exactness") == "fallback"
                else "a stand-in]"
            )
        )
        console.print(
            f"  {tier['name']}: {tier['model']}{quant} on {hw}; {tier['pricing']['basis']}"
            + (f" ({tier['pricing']['source']})" if tier["pricing"]["kind"] == "token" else "")
            + approx,
            highlight=False,
            markup=False,
        )
    for table in run_tables(report):
        console.print(table)
    print_routing(report, console)
    for line in summary_lines(report):
        console.print(line, highlight=False, markup=False)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.1f} ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else _pct(value)


def routing_lines(routing: dict[str, Any], overhead: dict[str, Any] | None = None) -> list[str]:
    """Plain lines of the routing section: routed shares, router overhead (from `timing`), cascade."""
    if not routing.get("routed_shares"):
        return []
    router = routing.get("router", {})
    shares = " · ".join(f"{tier} {_pct(share)}" for tier, share in routing["routed_shares"].items())
    lines = [
        f"Routing ({router.get('description') or router.get('kind', '?')}): {shares} of requests (before caches)"
    ]
    ov = overhead or {}
    if ov.get("p99_s") is not None:
        cost = ""
        if ov.get("cost_per_month") is not None:
            cost = f"; {_money(ov['cost_per_month'], ov.get('cost_estimated', False))}/month ({ov.get('price_basis', '')})"
        where = "measured" if ov.get("source") == "measured" else "stored from an earlier run"
        lines.append(
            f"Router overhead: p50 {_ms(ov['p50_s'])}, p99 {_ms(ov['p99_s'])} per request ({where}: {ov.get('method', '')}){cost}"
        )
    elif ov:
        lines.append(f"Router overhead: not measured ({ov.get('method', '')})")
    esc = routing.get("escalation") or {}
    if esc.get("enabled"):
        mark = EST if esc.get("estimated") else ""
        src = esc.get("confidence_sources", {})
        lines.append(
            f"Cascade {esc['from_tier']} -> {esc['to_tier']} below confidence {esc['threshold']:g}: "
            f"{_pct(esc['rate'])}{mark} escalated, +{_money(esc['cost_per_month'])}/month; confidence recorded for "
            f"{src.get('recorded', 0)}, estimated for {src.get('estimated', 0)}"
            + (f" ({EST} estimated: {esc.get('method')})" if esc.get("estimated") else "")
        )
    return lines


def routing_table(routing: dict[str, Any]) -> Any | None:
    """The router against its baselines on the same fixtures (a rich Table), or None."""
    from rich.table import Table

    comparison = routing.get("comparison") or {}
    if not comparison.get("available"):
        return None
    quality = comparison.get("quality") or {}
    est = EST if comparison.get("estimated") else ""
    table = Table(
        title=f"Routing against baselines (same fixtures; each request on one tier, no caches, no cascade; "
        f"{routing.get('strong_tier', 'strong')} = share on the strongest tier; quality from labels)",
        title_justify="left",
        header_style="bold",
    )
    cols = ["baseline", routing.get("strong_tier", "strong"), "$/month", "router saves"]
    if quality.get("available"):
        cols += ["quality", "PGR", "APGR", "CPT(50%)", "CPT(80%)"]
    for col in cols:
        table.add_column(col, justify="left" if col == "baseline" else "right", no_wrap=True)
    savings = comparison.get("savings", {})
    short = {
        "router": f"this router ({routing.get('router', {}).get('kind', '?')})",
        "all_largest": f"all on {routing.get('strong_tier', 'largest')}",
        "all_smallest": f"all on {routing.get('weak_tier', 'smallest')}",
        "random": "random, same shares",
        "length": "length, same shares",
    }
    for name, row in comparison["baselines"].items():
        label = short.get(name, row["label"])
        saved = savings.get(f"vs_{name}")
        cells = [
            _plain(label),
            _pct(row["strong_share"]),
            _money(row["cost_per_month"]) + est,
            ""
            if saved is None
            else f"{_money(saved['saving_per_month'])} ({saved['saving_pct']:+.0f}%)",
        ]
        if quality.get("available"):
            cells += [
                _ratio(row.get("quality")),
                _ratio(row.get("pgr")),
                _ratio(row.get("apgr")),
                _ratio(row.get("cpt50")),
                _ratio(row.get("cpt80")),
            ]
        table.add_row(*cells)
    return table


def print_routing(report: RunReport, console: Any) -> None:
    """The routing section: routed shares, overhead, cascade, and the baselines table."""
    routing = report.get("routing", {}) or {}
    lines = routing_lines(routing, (report.get("timing") or {}).get("router_overhead"))
    if not lines:
        return
    table = routing_table(routing)
    if table is not None:
        console.print(table)
        comparison = routing["comparison"]
        quality = comparison.get("quality") or {}
        if quality.get("available"):
            console.print(
                f"Baselines: random = {comparison['baselines']['random']['label']}; length = "
                f"{comparison['baselines']['length']['label']}. Quality and PGR: {quality['note']} "
                f"({quality['labelled_fixtures']} labelled fixtures, {_pct(quality['labelled_share'])} of traffic); "
                "APGR over an 11-point strong-share sweep",
                highlight=False,
                markup=False,
            )
            if quality.get("reason"):
                console.print(
                    f"PGR unavailable: {quality['reason']}", highlight=False, markup=False
                )
    for line in lines:
        console.print(line, highlight=False, markup=False)


def print_calibration(
    result: dict[str, Any], *, config: str, written: bool, console: Any | None = None
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
            _pct(result["before"][tier]),
            _pct(result["targets"][tier]),
            _pct(result["achieved"][tier]),
            change,
        ]
        if holdout is not None:
            drift = result["drift"][tier]
            row += [_pct(holdout[tier]), f"{100 * drift:+.1f} pts"]
        table.add_row(*row)
    console.print(table)
    if holdout is not None:
        console.print(
            f"Holdout: {result['holdout_fixtures']} fixtures from {', '.join(result['holdout_paths'])} routed with the "
            "new thresholds (not used to pick them)",
            highlight=False,
            markup=False,
        )
    if written:
        console.print(f"Wrote the new thresholds to {config}", highlight=False, markup=False)
    else:
        console.print(
            f"Not written: re-run with --write to save them to {config}",
            highlight=False,
            markup=False,
        )


STATUS_LABEL = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}
STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def print_check(result: PolicyResult | dict[str, Any], console: Any | None = None) -> None:
    """The policy verdicts table (from a PolicyResult or its recorded dict form)."""
    from rich.table import Table

    data = result.to_dict() if isinstance(result, PolicyResult) else result
    verdicts = data["verdicts"]
    console = console or make_console()
    table = Table(title=f"Policy {data['policy']}", title_justify="left", header_style="bold")
    for col in ("", "rule", "metric", "actual", "limit", "level"):
        table.add_column(col)
    for v in verdicts:
        if v["status"] == "skip":
            actual: Any = _plain(v["message"])
        else:
            actual = format_value(v["actual"], v["unit"]) + (EST if v.get("estimated") else "")
        table.add_row(
            f"[{STATUS_STYLE[v['status']]}]{STATUS_LABEL[v['status']]}[/]",
            _plain(v["rule"]),
            v["metric"],
            actual,
            v["limit"],
            v["level"],
        )
    console.print(table)
    for v in verdicts:
        if v["status"] in ("fail", "warn"):
            where = f" ({v['file']}:{v['line']})" if v.get("file") and v.get("line") else ""
            console.print(
                f"{STATUS_LABEL[v['status']]} {v['rule']}: {v['message']}{where}",
                highlight=False,
                markup=False,
            )
    n_fail = sum(1 for v in verdicts if v["status"] == "fail")
    n_warn = sum(1 for v in verdicts if v["status"] == "warn")
    if n_fail:
        console.print(f"[bold red]{n_fail} rule(s) failed[/], {n_warn} warning(s)")
    elif n_warn:
        console.print(f"[yellow]passed with {n_warn} warning(s)[/]")
    else:
        console.print("[green]all rules passed[/]")
    ack = data.get("acknowledgement")
    if ack:
        by = f" (added by {ack['by']})" if ack.get("by") else ""
        console.print(
            f"regressions acknowledged by the label {ack['label']!r}{by}: regression rules warn",
            highlight=False,
            markup=False,
        )
    if any(v.get("estimated") for v in verdicts):
        console.print(f"{EST} estimated (not measured)", highlight=False, markup=False)


def _plain(text: Any) -> Any:
    """User text shown literally (rich markup in a suite or rule name stays text)."""
    from rich.text import Text

    return Text(str(text))


def _signed_money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{'+' if value >= 0 else '-'}${abs(value):,.2f}"


def _signed_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def _pair(block: dict[str, Any], fmt: Any) -> str:
    base, head = block.get("base"), block.get("head")
    if base is None or not block.get("delta"):
        return (
            fmt(head if head is not None else base)
            if (head is not None or base is not None)
            else "-"
        )
    if head is None:
        return f"{fmt(base)} -> (removed)"
    return f"{fmt(base)} -> {fmt(head)}"


def diff_headline(diff: dict[str, Any]) -> str:
    """One line: the monthly delta (or the head alone with the reason there is no baseline)."""
    cost = diff["totals"]["cost_per_month"]
    est = EST if diff.get("estimated") else ""
    if not diff["base"]["available"]:
        return f"Projected monthly spend {_money(cost['head'])}{est} (no baseline yet: {diff['base']['reason']})"
    if not cost["delta"]:
        return f"Projected monthly spend unchanged at {_money(cost['head'])}{est} (against {diff['base']['source']})"
    pct = f" ({_signed_pct(cost['delta_pct'])})" if cost["delta_pct"] is not None else ""
    return (
        f"Projected monthly spend {_signed_money(cost['delta'])}{pct}{est}: {_money(cost['base'])} -> "
        f"{_money(cost['head'])} per month (against {diff['base']['source']})"
    )


def print_diff(diff: dict[str, Any], console: Any | None = None) -> None:
    """A DiffReport in the terminal: headline, tiers, suites, top movers, verdicts. Reads, never recomputes."""
    from rich.table import Table

    console = console or make_console()
    console.print(diff_headline(diff), highlight=False, markup=False)
    has_base = diff["base"]["available"]
    for title, blocks in (("Tiers", diff["tiers"]), ("Suites", diff["suites"])):
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
            est = EST if (b["estimated"].get("head") or b["estimated"].get("base")) else ""
            table.add_row(
                _plain(
                    name
                    + (
                        ""
                        if b["status"] in ("changed", "unchanged", "head_only")
                        else f" ({b['status']})"
                    )
                ),
                _pair(b.get("share", {}), _pct),
                _pair(b.get("input_tokens_per_month", {}), _tokens),
                _pair(b.get("output_tokens_per_month", {}), _tokens),
                _pair(b["cost_per_month"], _money) + est,
                _signed_money(b["cost_per_month"]["delta"]) if has_base else "",
                _signed_pct(b["cost_per_month"]["delta_pct"]) if has_base else "",
            )
        console.print(table)
    fixtures = diff["fixtures"]
    if has_base:
        console.print(
            f"Fixtures: {fixtures['changed']} changed, {fixtures['added']} added, {fixtures['removed']} removed, "
            f"{fixtures['unchanged']} unchanged",
            highlight=False,
        )
        by_id = {f["id"]: f for f in fixtures["items"]}
        if fixtures["top_movers"]:
            table = Table(title="Top movers", title_justify="left", header_style="bold")
            for col in (
                "fixture",
                "suite",
                "status",
                "input tok/req",
                "output tok/req",
                "$/month",
                "delta $/month",
            ):
                table.add_column(
                    col, justify="left" if col in ("fixture", "suite", "status") else "right"
                )
            for fid in fixtures["top_movers"]:
                f = by_id[fid]
                table.add_row(
                    _plain(f["id"]),
                    _plain(f["suite"]),
                    f["status"] + (", prompt changed" if f["prompt_changed"] else ""),
                    _pair(f["input_tokens"], "{:,.0f}".format),
                    _pair(f["output_tokens"], "{:,.0f}".format),
                    _pair(f["cost_per_month"], _money),
                    _signed_money(f["cost_per_month"]["delta"]),
                )
            console.print(table)
    if diff.get("estimated"):
        console.print(
            f"{EST} rests on estimates (expected/prior output tokens, approximate prompt token "
            "counts or declared GPU throughput)",
            highlight=False,
            markup=False,
        )
    if diff.get("policy"):
        print_check(diff["policy"], console)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:,.0f} ms"


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
            _money(v["cost_per_month"], v["cost_estimated"]),
            _score(v["quality"]),
            _score(v["pass_rate"]),
            f"{v['quality_measured']}/{v['quality_fixtures']}",
            _seconds(v["latency_p95_s"]),
            {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}.get(
                v["verdict"] or "", "-"
            ),
            place,
        )
    console.print(table)
    objectives = ", ".join(
        o.replace("_per_month", "").replace("_p95_s", " p95") for o in data["objectives"]
    )
    frontier = ", ".join(data["frontier"]) or "(none)"
    console.print(f"Non-dominated on {objectives}: {frontier}", highlight=False, markup=False)
    if data["recommended"] is not None:
        best = next(v for v in data["variants"] if v["name"] == data["recommended"])
        console.print(
            f"Recommended: {best['name']} ({best['description']}): {_money(best['cost_per_month'], best['cost_estimated'])}"
            f"/month, quality {_score(best['quality'])} over {best['quality_measured']} of {best['quality_fixtures']} "
            f"fixtures, the cheapest variant that meets {data['policy']}",
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
