"""`costguard report --html`: the self-contained HTML report of a RunReport or DiffReport, and the
helper that `run`, `diff` and `ci` call for their `--html` option.

Reads JSON only (never re-projects); matplotlib is imported only when a page is written.
"""

from __future__ import annotations

from typing import Any

import click

from costguard.cli.options import file_option

DEFAULT_CONFIG = (
    "costguard.yaml"  # = costguard.api.DEFAULT_CONFIG (not imported: --help stays fast)
)

html_option = file_option(
    "--html",
    "html_out",
    metavar="OUT.html",
    help="Also write the self-contained HTML report (plots, no network needed to view it).",
)


def say_written(out: str, size: int) -> None:
    click.echo(f"HTML report written to {out} ({size / 1024:,.0f} kB)", err=True)


def write_html_report(
    out: str,
    report: Any,
    *,
    head: Any = None,
    base: Any = None,
    config: str | None = None,
    quiet: bool = False,
) -> None:
    """`--html` of run/diff: the page of a RunReport or DiffReport object, through the facade;
    links to the evidence come from the GitHub Actions environment."""
    from costguard.api import Costguard

    size = Costguard(config or DEFAULT_CONFIG).write_html(out, report, head=head, base=base)
    if not quiet:
        say_written(out, size)


@click.command("report")
@click.argument(
    "reports",
    nargs=-1,
    type=click.Path(dir_okay=False),
    metavar="[REPORT.json | DIFF.json] [FRONTIER.json]",
)
@file_option(
    "--html", "html_out", required=True, metavar="OUT.html", help="Where to write the HTML report."
)
@file_option(
    "--head",
    "head_path",
    help="With a DiffReport: the head RunReport it was made from (routing scores, cache sweep, latency).",
)
@file_option("--base", "base_path", help="With a DiffReport: the base RunReport it was made from.")
@click.option(
    "--config", "-c", default=None, help="costguard.yaml, to place fixture links in the repository."
)
def report_command(
    reports: tuple[str, ...],
    html_out: str,
    head_path: str | None,
    base_path: str | None,
    config: str | None,
) -> None:
    """Write the self-contained HTML report of a RunReport or a DiffReport (default: costguard-report.json).

    \b
      costguard report --html report.html                       # costguard-report.json
      costguard report --html diff.html costguard-diff.json --head costguard-report.json
      costguard report --html report.html frontier.json costguard-report.json
    One file: plots as inline SVG, no scripts, nothing fetched when it is opened.
    """
    from costguard.api import Costguard

    written = Costguard(config or DEFAULT_CONFIG).html_report(
        html_out, reports, head=head_path, base=base_path
    )
    say_written(written.path, written.size)


def register_commands(cli: click.Group) -> None:
    cli.add_command(report_command)


__all__ = ["html_option", "register_commands", "say_written", "write_html_report"]
