"""A policy's verdicts in the terminal: the verdict line, the broken rules, the verdicts table."""

from __future__ import annotations

from typing import Any

from costguard.compare.model import PolicyOutcome
from costguard.policy.engine import PolicyResult
from costguard.render.terminal.tables import escape, fit, make_console, plain, say, table
from costguard.report import format as fmt
from costguard.report.format import EST

STATUS_LABEL = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}
STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def outcome_of(result: PolicyResult | PolicyOutcome | dict[str, Any]) -> PolicyOutcome:
    """The typed outcome of a policy check, whichever form it comes in."""
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
    policy = escape(outcome.policy)
    if n_fail:
        return f"Verdict: [bold red]FAIL[/], {n_fail} rule(s) failed, {n_warn} warning(s){skipped} ({policy})"
    if n_warn:
        return f"Verdict: [yellow]PASS[/], passed with {n_warn} warning(s){skipped} ({policy})"
    return f"Verdict: [green]PASS[/], all rules passed{skipped} ({policy})"


def print_check(
    result: PolicyResult | PolicyOutcome | dict[str, Any], console: Any | None = None
) -> None:
    """The policy verdict first (each broken or warning rule in a line), then the verdicts table."""
    outcome = outcome_of(result)
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
            say(console, f"{STATUS_LABEL[v.status]} {v.rule}: {v.message}{where}")
    ack = outcome.acknowledgement
    if ack is not None:
        by = f" (added by {ack.by})" if ack.by else ""
        say(
            console,
            f"regressions acknowledged by the label {ack.label!r}{by}: regression rules warn",
        )
    if any(v.estimated for v in verdicts):
        say(console, f"{EST} estimated (not measured)")


def print_verdict_table(outcome: PolicyOutcome, console: Any) -> None:
    """Every rule: status, metric, actual, limit, level."""
    columns = ("", "rule", "metric", "actual", "limit", "level")
    verdicts = table(f"Policy {escape(outcome.policy)}", columns, left=columns)
    for v in outcome.verdicts:
        if v.status == "skip":
            actual: Any = plain(v.message)
        else:
            actual = fmt.format_value(v.actual, v.unit) + (EST if v.estimated else "")
        verdicts.add_row(
            f"[{STATUS_STYLE[v.status]}]{STATUS_LABEL[v.status]}[/]",
            plain(v.rule),
            v.metric,
            actual,
            v.limit,
            v.level,
        )
    console.print(fit(verdicts, console.width))
