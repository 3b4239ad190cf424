"""The results that tune a stack: `costguard frontier` (variants, the non-dominated set, the
recommendation) and `costguard calibrate` (router thresholds old -> new). Both read the typed
results (`Frontier`, `Calibration`) and compute nothing."""

from __future__ import annotations

from typing import Any

from costguard.compare.frontier import Frontier, VariantOutcome
from costguard.engine.routing.calibration import Calibration
from costguard.render.terminal.tables import escape, fit, make_console, plain, say, table
from costguard.report import format as fmt

_VERDICT = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}


def print_frontier(frontier: Frontier, console: Any | None = None) -> None:
    """The `costguard frontier` result: every variant, the frontier, the recommendation. Reads only."""
    console = console or make_console()
    variants = table(
        "Stack variants",
        (
            "variant",
            "$/month",
            "quality",
            "pass rate",
            "measured",
            "p95 latency",
            "policy",
            "frontier",
        ),
        left=("variant", "policy", "frontier"),
    )
    for v in frontier.outcomes:
        variants.add_row(
            plain(v.name),
            fmt.money(v.cost_per_month, v.cost_estimated),
            fmt.score(v.quality) if v.quality_measured else "unmeasured",
            fmt.score(v.pass_rate) if v.quality_measured else "unmeasured",
            f"{v.quality_measured}/{v.quality_fixtures}",
            fmt.duration_s(v.latency_p95_s),
            _VERDICT.get(v.verdict or "", "-"),
            _place(v, frontier.recommended),
        )
    console.print(fit(variants, console.width))
    objectives = ", ".join(
        o.replace("_per_month", "").replace("_p95_s", " p95") for o in frontier.objectives
    )
    names = ", ".join(o.name for o in frontier.frontier) or "(none)"
    unmeasured = "" if frontier.quality_measured else " (quality unmeasured)"
    say(console, f"Non-dominated on {objectives}{unmeasured}: {names}")
    chosen = frontier.recommended
    if chosen is None:
        chosen = frontier.cheapest_passing  # quality unmeasured everywhere: no recommendation
    if chosen is not None:
        best = frontier.outcome(chosen)
        if chosen == frontier.recommended:
            text = (
                f"Recommended: {_priced(best)}, quality {fmt.score(best.quality)} over {best.quality_measured} "
                f"of {best.quality_fixtures} fixtures, the cheapest variant that meets {frontier.policy}"
            )
        else:
            text = (
                f"Cheapest variant that passes {frontier.policy}: {_priced(best)}. Not a recommendation: "
                f"its quality is unmeasured (on_unmeasured: {frontier.on_unmeasured})"
            )
        say(console, text)
    elif frontier.policy is None:
        say(console, "Give --policy to get the cheapest variant that meets its floors.")
    for note in frontier.notes:
        say(console, f"note: {note}")


def _priced(v: VariantOutcome) -> str:
    return f"{v.name} ({v.description}): {fmt.money(v.cost_per_month, v.cost_estimated)}/month"


def _place(v: VariantOutcome, recommended: str | None) -> str:
    """Where a variant stands: recommended, on the frontier, not compared, or dominated (markup)."""
    if v.name == recommended:
        return "[bold green]recommended[/]"
    if v.on_frontier:
        return "[green]non-dominated[/]"
    if v.excluded:
        return "[dim]not compared[/]"
    return f"[dim]dominated by {escape(v.dominated_by)}[/]"


def print_calibration(
    calibration: Calibration,
    *,
    config: str,
    written: bool,
    asked: bool | None = None,
    console: Any | None = None,
) -> None:
    """`costguard calibrate`: old -> new thresholds, target and achieved shares, holdout drift."""
    console = console or make_console()
    cal = calibration
    say(
        console,
        f"Calibrated the {cal.router_kind} router on {cal.fixtures} fixtures "
        "(shares weighted by requests per month)",
    )
    console.print(fit(_thresholds_table(cal), console.width))
    if cal.holdout is not None:
        say(
            console,
            f"Holdout: {cal.holdout_fixtures} fixtures from {', '.join(cal.holdout_paths)} routed with the "
            "new thresholds (not used to pick them)",
        )
    for why in cal.missed().values():
        say(console, f"Target missed: {why}")
    asked = written if asked is None else asked
    if not cal.changed:
        say(
            console,
            f"Thresholds unchanged: {config} already holds them"
            + (" (nothing written)" if asked else ""),
        )
    elif written:
        say(console, f"Wrote the new thresholds to {config}")
    else:
        say(console, f"Not written: re-run with --write to save them to {config}")


def _thresholds_table(cal: Calibration) -> Any:
    """Per tier: share before, target, calibrated, the threshold old -> new, holdout and drift."""
    holdout, drift = cal.holdout, cal.drift
    cols = ["tier", "before", "target", "calibrated", f"{cal.key} (old -> new)"]
    if holdout is not None:
        cols += ["holdout", "drift"]
    out = table(None, cols, left=("tier",))
    for k, tier in enumerate(cal.tiers):
        if k < len(cal.new):
            change = f"{cal.old[k]:g} -> {cal.new[k]:g}"
        else:
            change = "(above the last threshold)"
        row = [
            tier,
            fmt.percent(cal.before[tier]),
            fmt.percent(cal.targets[tier]),
            fmt.percent(cal.achieved[tier]),
            change,
        ]
        if holdout is not None and drift is not None:
            row += [fmt.percent(holdout[tier]), f"{100 * drift[tier]:+.1f} pts"]
        out.add_row(*row)
    return out
