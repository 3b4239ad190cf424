"""`costguard report --html`: the self-contained HTML report of a RunReport or DiffReport, and the
helper that `run`, `diff` and `ci` call for their `--html` option.

Reads JSON only (never re-projects); matplotlib is imported only when a page is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from costguard.errors import ConfigError, UsageError
from costguard.report.run_report import DEFAULT_REPORT

html_option = click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    metavar="OUT.html",
    help="Also write the self-contained HTML report (plots, no network needed to view it).",
)


def write_html_report(
    out: str,
    data: dict[str, Any],
    *,
    head: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    frontier: dict[str, Any] | None = None,
    config: str | None = None,
    source: str | Path | None = None,
    quiet: bool = False,
) -> None:
    """Render and write the page; links to the evidence come from the GitHub Actions environment."""
    from costguard.integrations.actions import evidence_links
    from costguard.render.html import render_html, write_html

    project_dir = Path(config).resolve().parent if config else Path.cwd()
    links = evidence_links(project_dir=project_dir)
    try:
        text = render_html(data, head=head, base=base, frontier=frontier, links=links)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # load_document checked kind and version; a report edited by hand can still lack a figure
        raise ConfigError(
            f"cannot render the HTML report: malformed report ({type(exc).__name__}: {exc})",
            file=source,
        ) from None
    write_html(out, text)
    if not quiet:
        size = Path(out).stat().st_size
        click.echo(f"HTML report written to {out} ({size / 1024:,.0f} kB)", err=True)


def _read_frontier(path: str) -> dict[str, Any]:
    from costguard.report.run_report import read_json

    data = read_json(path, missing_hint="write one with `costguard frontier --format json > FILE`")
    if (
        not isinstance(data, dict)
        or data.get("kind") != "frontier"
        or not isinstance(data.get("variants"), list)
    ):
        raise ConfigError(
            "not a costguard frontier (`costguard frontier --format json`)", file=path
        )
    return data


def _kind_of(path: str) -> str | None:
    from costguard.report.run_report import read_json

    data = read_json(path, missing_hint="run `costguard run --out FILE` first")
    return data.get("kind", "run") if isinstance(data, dict) else None


@click.command("report")
@click.argument(
    "reports",
    nargs=-1,
    type=click.Path(dir_okay=False),
    metavar="[REPORT.json | DIFF.json] [FRONTIER.json]",
)
@click.option(
    "--html",
    "html_out",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="OUT.html",
    help="Where to write the HTML report.",
)
@click.option(
    "--head",
    "head_path",
    type=click.Path(dir_okay=False),
    help="With a DiffReport: the head RunReport it was made from (routing scores, cache sweep, latency).",
)
@click.option(
    "--base",
    "base_path",
    type=click.Path(dir_okay=False),
    help="With a DiffReport: the base RunReport it was made from.",
)
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
    from costguard.compare.diff import load_diff
    from costguard.report.run_report import load_report

    if len(reports) > 2:
        raise UsageError("give one report (RunReport or DiffReport) and at most one frontier")
    main_path: str | None = None
    frontier = None
    for path in reports or (DEFAULT_REPORT,):
        kind = _kind_of(path)
        if kind == "frontier":
            if frontier is not None:
                raise UsageError("give at most one frontier")
            frontier = _read_frontier(path)
        elif main_path is None:
            main_path = path
        else:
            raise UsageError("give one report (RunReport or DiffReport) and at most one frontier")
    if main_path is None:
        main_path = DEFAULT_REPORT
    head = base = None
    if _kind_of(main_path) == "diff":
        data = load_diff(main_path).data
        head = load_report(head_path).data if head_path else None
        base = load_report(base_path).data if base_path else None
    else:
        if head_path or base_path:
            raise UsageError("--head and --base go with a DiffReport, not a RunReport")
        data = load_report(main_path).data
    write_html_report(
        html_out, data, head=head, base=base, frontier=frontier, config=config, source=main_path
    )


def register_commands(cli: click.Group) -> None:
    cli.add_command(report_command)


__all__ = ["html_option", "write_html_report", "register_commands"]
