"""`costguard diff`, `costguard comment github` and `costguard ci`: compare a head with a baseline.

Each command only gathers inputs, calls the facade (`costguard.api.Costguard`), renders and
sets the exit code (0 pass, 1 policy failure, 2 bad input). The `ci` workflow (project, baseline,
diff, check, comment, outputs, summary; the GitHub Action calls it) is `costguard.api.ci`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from costguard.cli.options import (
    baseline_options,
    baseline_spec,
    comment_options,
    config_option,
    fail_on_option,
    file_option,
    fixtures_option,
    policy_option,
)
from costguard.cli.report import html_option, say_written, write_html_report
from costguard.errors import UsageError

DEFAULT_REPORT = (
    "costguard-report.json"  # = costguard.api.DEFAULT_REPORT (not imported: --help stays fast)
)

DEFAULT_DIFF_FILE = (
    "costguard-diff.json"  # = costguard.api.ci.DEFAULT_DIFF_FILE (not imported: --help stays fast)
)


def say(message: str) -> None:
    click.echo(message, err=True)


def session(config: str, fixtures: tuple[str, ...], **options: Any) -> Any:
    """The facade over the config and fixtures given on the command line."""
    from costguard.api import Costguard

    return Costguard(config, fixtures or None, say=say, **options)


def head_report(report: str | None, config: str, fixtures: tuple[str, ...]) -> tuple[Any, str]:
    """The head RunReport (a file, or the offline projection of the working tree) and its label."""
    if report is not None:
        return session(config, fixtures).head(report)
    from costguard.cli.running import run_projection

    return run_projection(config, fixtures), "working tree"


def load_baseline(
    baseline: str | None, base_ref: str | None, config: str, fixtures: tuple[str, ...]
) -> Any:
    """`--baseline SPEC` / `--base-ref REF` (one grammar: costguard.api.baselines)."""
    from costguard.api import baseline_from_options

    return session(config, fixtures).load_baseline(baseline_from_options(baseline, base_ref))


def say_no_baseline(base: Any) -> None:
    if not base.available:
        click.echo(f"costguard: no baseline yet: {base.reason}", err=True)


def emit_annotations(diff: Any) -> None:
    """Workflow-command annotations, only inside GitHub Actions (elsewhere they are noise)."""
    from costguard.api.ci import annotation_lines

    for line in annotation_lines(diff):
        click.echo(line)


# -- costguard diff -------------------------------------------------------------------------------


@click.command("diff")
@click.argument("reports", nargs=-1, type=click.Path(), metavar="[BASE] [HEAD]")
@click.option(
    "--base-ref",
    "base_ref",
    metavar="REF",
    help="Project this git commit/branch offline (temporary worktree) as the base, "
    "and the working tree as the head.",
)
@config_option
@fixtures_option
@policy_option("Also evaluate this policy and record its verdicts in the diff.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "json", "markdown"]),
    default="terminal",
    show_default=True,
    help="What to print on stdout.",
)
@file_option("--out", "-o", "out", help="Write the DiffReport JSON here.")
@html_option
def diff_command(
    reports: tuple[str, ...],
    base_ref: str | None,
    config: str,
    fixtures: tuple[str, ...],
    policy: str | None,
    fmt: str,
    out: str | None,
    html_out: str | None,
) -> None:
    """Compare two runs: BASE and HEAD RunReports, BASE against the working tree, or --base-ref REF.

    \b
      costguard diff base.json head.json
      costguard diff artifacts/base/            # a downloaded CI artifact; head = working tree
      costguard diff --base-ref origin/main     # base projected from git, head = working tree
    Always exits 0 unless the input is bad; use `costguard check` or `costguard ci` to gate.
    """
    from costguard import api

    if base_ref is not None and reports:
        raise UsageError("--base-ref projects both sides; do not also pass report files")
    if len(reports) > 2:
        raise UsageError("give at most two reports: BASE [HEAD]")
    if base_ref is None and not reports:
        raise UsageError("nothing to compare: give BASE [HEAD] reports or --base-ref REF")
    head, head_source = head_report(reports[1] if len(reports) == 2 else None, config, fixtures)
    base = load_baseline(reports[0] if reports else None, base_ref, config, fixtures)
    say_no_baseline(base)
    diff, _ = api.compare(head, base, policy=policy, head_source=head_source)
    if out:
        diff.write(out)
    if html_out:
        write_html_report(
            html_out,
            diff,
            head=head,
            base=base.report if base.available else None,
            config=config,
        )
    if fmt == "json":
        click.echo(diff.to_json(), nl=False)
    elif fmt == "markdown":
        from costguard.render.markdown import render_summary

        click.echo(render_summary(diff), nl=False)
    else:
        from costguard.render.terminal import print_diff

        print_diff(diff)
        if out:
            click.echo(f"DiffReport written to {out}")


# -- costguard comment github ---------------------------------------------------------------------


@click.group("comment")
def comment_group() -> None:
    """Post the cost diff where reviewers see it."""


@comment_group.command("github")
@click.option("--repo", metavar="OWNER/NAME", help="Repository. Default: $GITHUB_REPOSITORY.")
@click.option(
    "--pr", type=int, metavar="NUMBER", help="Pull request. Default: from $GITHUB_EVENT_PATH."
)
@click.option(
    "--diff",
    "diff_path",
    type=click.Path(dir_okay=False),
    help="A DiffReport JSON (from `costguard diff --out`) to post as it is.",
)
@click.argument("report", required=False, type=click.Path(dir_okay=False))
@baseline_options
@config_option
@fixtures_option
@policy_option("Policy to evaluate and show.")
@comment_options
@click.option(
    "--head-sha",
    metavar="SHA",
    help="Only comment if the pull request's head commit is SHA (a workflow_run job that "
    "read the PR number from an untrusted artifact passes github.event.workflow_run.head_sha).",
)
@fail_on_option
@click.option("--dry-run", is_flag=True, help="Print the comment body instead of posting it.")
def comment_github(
    repo: str | None,
    pr: int | None,
    diff_path: str | None,
    report: str | None,
    baseline: str | None,
    base_ref: str | None,
    config: str,
    fixtures: tuple[str, ...],
    policy: str | None,
    tag: str,
    mode: str,
    skip_no_diff: bool,
    acknowledge_label: str | None,
    head_sha: str | None,
    fail_on: str,
    dry_run: bool,
) -> None:
    """Post (or update in place) the cost-diff comment on a pull request.

    The token comes from GITHUB_TOKEN only; GITHUB_API_URL selects GitHub Enterprise Server.
    The comment is posted first; then the exit code is 1 if the policy failed (see --fail-on).
    """
    from costguard.api.ci import CommentOptions, CommentRequest

    outcome = session(config, fixtures).comment(
        CommentRequest(
            repo=repo,
            pr=pr,
            diff_path=diff_path,
            report=report,
            baseline=baseline_spec(baseline, base_ref),
            policy=policy,
            head_sha=head_sha,
            dry_run=dry_run,
            options=CommentOptions(tag, mode, skip_no_diff, acknowledge_label),
            fail_on=fail_on,
        )
    )
    if outcome.body is not None:
        click.echo(outcome.body, nl=False)
    sys.exit(outcome.exit_code)


# -- costguard ci ------------------------------------------------------------------------------------


@click.command("ci")
@click.argument("report", required=False, type=click.Path(dir_okay=False))
@config_option
@fixtures_option
@policy_option("Policy to gate on.")
@baseline_options
@file_option(
    "--report-out",
    default=DEFAULT_REPORT,
    help="Where to write the head RunReport (when it is projected here).",
)
@file_option("--diff-out", default=DEFAULT_DIFF_FILE, help="Where to write the DiffReport JSON.")
@click.option("--repo", metavar="OWNER/NAME", help="Repository. Default: $GITHUB_REPOSITORY.")
@click.option(
    "--pr", type=int, metavar="NUMBER", help="Pull request. Default: from $GITHUB_EVENT_PATH."
)
@comment_options
@click.option(
    "--comment/--no-comment",
    "comment",
    default=None,
    help="Post the PR comment. Default: when GITHUB_TOKEN is set and a pull request is known.",
)
@click.option(
    "--summary/--no-summary",
    "summary",
    default=True,
    show_default=True,
    help="Append the Markdown job summary to $GITHUB_STEP_SUMMARY (the Action writes it after "
    "uploading the artifact, to link it).",
)
@fail_on_option
@html_option
def ci_command(
    report: str | None,
    config: str,
    fixtures: tuple[str, ...],
    policy: str | None,
    baseline: str | None,
    base_ref: str | None,
    report_out: str,
    diff_out: str,
    repo: str | None,
    pr: int | None,
    tag: str,
    mode: str,
    skip_no_diff: bool,
    acknowledge_label: str | None,
    comment: bool | None,
    summary: bool,
    fail_on: str,
    html_out: str | None,
) -> None:
    """Everything a CI step needs, in order: project, baseline, diff, check, PR comment, outputs, summary.

    \b
    Baseline: --baseline SPEC, --base-ref REF, or (in a pull_request workflow) the PR's base commit.
    Writes the RunReport and DiffReport, annotations at failing policy lines, $GITHUB_OUTPUT
    (monthly-cost, delta-pct, verdict, ...) and $GITHUB_STEP_SUMMARY; posts the comment before
    the exit code says whether the policy failed.
    """
    from costguard.api.ci import CiRequest, CommentOptions
    from costguard.render.terminal import print_diff

    outcome = session(config, fixtures).ci(
        CiRequest(
            report=report,
            policy=policy,
            baseline=baseline_spec(baseline, base_ref),
            report_out=report_out,
            diff_out=diff_out,
            repo=repo,
            pr=pr,
            comment=comment,
            options=CommentOptions(tag, mode, skip_no_diff, acknowledge_label),
            fail_on=fail_on,
            html_out=html_out,
            summary=summary,
        )
    )
    if outcome.html_path is not None and outcome.html_size is not None:
        say_written(html_out or outcome.html_path, outcome.html_size)
    print_diff(outcome.diff)
    for line in outcome.annotations:
        click.echo(line)
    sys.exit(outcome.exit_code)


def register_commands(cli: click.Group) -> None:
    for command in (diff_command, comment_group, ci_command):
        cli.add_command(command)
