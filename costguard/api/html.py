"""The HTML report behind the facade: `costguard report --html` and the `--html` option of
`run`, `diff` and `ci`.

Rendered from the RunReport/DiffReport JSON alone (never re-projected), with links to the
evidence (fixture lines at the head commit, the workflow run, the artifact) from the GitHub
Actions environment. matplotlib is imported only when a page is written (`costguard.render.html`
is imported inside the functions), so front ends stay fast to start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costguard.compare.diff import DiffReport, load_diff
from costguard.errors import ConfigError, UsageError
from costguard.integrations.actions import evidence_links
from costguard.report.run_report import DEFAULT_REPORT, RunReport, load_report, read_json

Report = RunReport | DiffReport | Mapping[str, Any]


def _data(report: Report | None) -> dict[str, Any] | None:
    if report is None:
        return None
    if isinstance(report, (RunReport, DiffReport)):
        return report.data
    return dict(report)


def write_html_report(
    out: str | Path,
    report: Report,
    *,
    head: Report | None = None,
    base: Report | None = None,
    frontier: Mapping[str, Any] | None = None,
    project_dir: str | Path | None = None,
    source: str | Path | None = None,
) -> int:
    """Render the page of `report` (a RunReport or DiffReport; for a diff, the `head` and `base`
    RunReports it was made from, when at hand) and write it atomically; returns its size in bytes.

    `project_dir` (costguard.yaml's directory) places fixture paths in the repository for the
    links; `source` is the report file named in an error.
    """
    from costguard.render.html import render_html, write_html

    data = _data(report)
    assert data is not None
    links = evidence_links(project_dir=Path(project_dir) if project_dir else Path.cwd())
    try:
        text = render_html(
            data,
            head=_data(head),
            base=_data(base),
            frontier=dict(frontier) if frontier is not None else None,
            links=links,
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # load_report/load_diff checked kind and version; a report edited by hand can still
        # lack a figure
        raise ConfigError(
            f"cannot render the HTML report: malformed report ({type(exc).__name__}: {exc})",
            file=source,
        ) from None
    write_html(out, text)
    return Path(out).stat().st_size


def _read_frontier(path: str) -> dict[str, Any]:
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
    data = read_json(path, missing_hint="run `costguard run --out FILE` first")
    return data.get("kind", "run") if isinstance(data, dict) else None


@dataclass
class HtmlWritten:
    """What `html_report_from_files` wrote: the page, its size and the report it shows."""

    path: str
    size: int
    report: str


def html_report_from_files(
    out: str | Path,
    reports: Sequence[str] = (),
    *,
    head: str | None = None,
    base: str | None = None,
    project_dir: str | Path | None = None,
) -> HtmlWritten:
    """`costguard report --html`: the page of one RunReport or DiffReport file (default:
    costguard-report.json) and at most one frontier file (`costguard frontier --format json`);
    with a DiffReport, `head`/`base` are the RunReport files it was made from."""
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
    report: Report
    head_report = base_report = None
    if _kind_of(main_path) == "diff":
        report = load_diff(main_path)
        head_report = load_report(head) if head else None
        base_report = load_report(base) if base else None
    else:
        if head or base:
            raise UsageError("--head and --base go with a DiffReport, not a RunReport")
        report = load_report(main_path)
    size = write_html_report(
        out,
        report,
        head=head_report,
        base=base_report,
        frontier=frontier,
        project_dir=project_dir,
        source=main_path,
    )
    return HtmlWritten(str(out), size, main_path)


__all__ = ["HtmlWritten", "html_report_from_files", "write_html_report"]
