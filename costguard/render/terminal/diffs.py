"""A DiffReport in the terminal: the headline, the verdict, tiers and suites base -> head, the top
movers with why they moved, and the verdicts table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costguard.compare.diff import DiffReport
from costguard.compare.model import Change, DiffReportModel, FixtureChange, NamedBlock
from costguard.render.terminal.tables import fit, make_console, plain, say, table
from costguard.render.terminal.verdicts import outcome_of, print_verdict, print_verdict_table
from costguard.render.why import change_reasons
from costguard.report import format as fmt
from costguard.report.format import EST


def _pair(block: Change | None, show: Callable[[float | None], str]) -> str:
    """`base -> head` of a changed figure, or the one value when it did not move."""
    if block is None or (block.base is None and block.head is None):
        return "-"
    if block.base is None or not block.delta:
        return show(block.head if block.head is not None else block.base)
    if block.head is None:
        return f"{show(block.base)} -> (removed)"
    return f"{show(block.base)} -> {show(block.head)}"


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
    d = _diff_model(diff)
    console = console or make_console()
    say(console, diff_headline(d))
    if d.policy is not None:
        print_verdict(outcome_of(d.policy), console)
    if d.estimated:
        say(
            console,
            f"{EST} rests on estimates (expected/prior output tokens, approximate prompt token "
            "counts or declared GPU throughput)",
        )
    fixtures = d.fixtures
    if d.base.available:
        console.print(
            f"Fixtures: {fixtures.changed} changed, {fixtures.added} added, {fixtures.removed} removed, "
            f"{fixtures.unchanged} unchanged",
            highlight=False,
        )
    for title, blocks in (("Tiers", d.tiers), ("Suites", d.suites)):
        console.print(fit(_usage_table(title, blocks, d.base.available), console.width))
    if d.base.available and fixtures.top_movers:
        by_id = {f.id: f for f in fixtures.items}
        movers = [by_id[fid] for fid in fixtures.top_movers]
        console.print(fit(_movers_table(movers), console.width))
    if d.policy is not None:
        print_verdict_table(outcome_of(d.policy), console)


def _usage_table(title: str, blocks: dict[str, NamedBlock], has_base: bool) -> Any:
    """Tiers or suites: share, tokens and $/month base -> head, and the delta."""
    out = table(
        title,
        ("name", "share", "input tok/mo", "output tok/mo", "$/month", "delta $/month", "delta %"),
        left=("name",),
    )
    for name, b in blocks.items():
        est = EST if (b.estimated.head or b.estimated.base) else ""
        status = "" if b.status in ("changed", "unchanged", "head_only") else f" ({b.status})"
        out.add_row(
            plain(name + status),
            _pair(b.share, fmt.percent),
            _pair(b.input_tokens_per_month, fmt.tokens),
            _pair(b.output_tokens_per_month, fmt.tokens),
            _pair(b.cost_per_month, fmt.money) + est,
            fmt.money_delta(b.cost_per_month.delta) if has_base else "",
            fmt.percent_change(b.cost_per_month.delta_pct) if has_base else "",
        )
    return out


def _movers_table(movers: list[FixtureChange]) -> Any:
    """The fixtures whose $/month moved most: tokens and cost base -> head, and why."""
    out = table(
        "Top movers",
        (
            "fixture",
            "suite",
            "status",
            "input tok/req",
            "output tok/req",
            "$/month",
            "delta $/month",
            "why",
        ),
        left=("fixture", "suite", "status", "why"),
    )
    for f in movers:
        out.add_row(
            plain(f.id),
            plain(f.suite),
            f.status,
            _pair(f.input_tokens, fmt.count),
            _pair(f.output_tokens, fmt.count),
            _pair(f.cost_per_month, fmt.money),
            fmt.money_delta(f.cost_per_month.delta),
            plain("; ".join(change_reasons(f))),
        )
    return out
