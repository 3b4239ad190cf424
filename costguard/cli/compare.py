"""`costguard diff`, `costguard comment github` and `costguard ci`: compare a head with a baseline.

Each command only gathers inputs, calls `costguard.api` / `costguard.integrations.pull_request`, renders and
sets the exit code (0 pass, 1 policy failure, 2 bad input). `ci` chains all of it for a workflow
step (the GitHub Action calls it): project, baseline, diff, check, comment, outputs, summary.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click

from costguard.cli.options import (
    baseline_options,
    comment_options,
    config_option,
    fail_on_option,
    fixtures_option,
)
from costguard.cli.report import html_option, write_html_report
from costguard.errors import UsageError
from costguard.report.run_report import DEFAULT_REPORT

DEFAULT_DIFF_FILE = "costguard-diff.json"


# -- gathering inputs ----------------------------------------------------------------------------


def head_report(report: str | None, config: str, fixtures: tuple[str, ...]) -> tuple[Any, str]:
    """The head RunReport (a file, or the offline projection of the working tree) and its label."""
    if report is not None:
        from costguard.report.run_report import load_report

        return load_report(report), f"file {report}"
    from costguard.cli.main import run_projection

    return run_projection(config, fixtures), "working tree"


def _cache_dir(config: str) -> Path | None:
    """The head's token-count cache, shared with a base projected from a git ref."""
    if not Path(config).is_file():
        return None
    from costguard.model.config import load_stack

    stack = load_stack(config)
    path = Path(stack.config.cache_dir)
    return path if path.is_absolute() else stack.root / path


def load_baseline(
    baseline: str | None, base_ref: str | None, config: str, fixtures: tuple[str, ...]
) -> Any:
    from costguard import api

    return api.load_baseline(
        path=baseline,
        base_ref=base_ref,
        config=config,
        fixtures=fixtures or None,
        cache_dir=_cache_dir(config) if base_ref else None,
    )


def say_no_baseline(base: Any) -> None:
    if not base.available:
        click.echo(f"costguard: no baseline yet: {base.reason}", err=True)


def _exit_code(verdict: str | None, fail_on: str = "fail") -> int:
    if fail_on == "never" or verdict is None:
        return 0
    if verdict == "fail" or (fail_on == "warn" and verdict == "warn"):
        return 1
    return 0


def emit_annotations(diff: Any) -> None:
    """Workflow-command annotations, only inside GitHub Actions (elsewhere they are noise)."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    from costguard.integrations.actions import annotations

    for line in annotations(diff.data):
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
@click.option(
    "--policy",
    "-p",
    "policy",
    type=click.Path(dir_okay=False),
    help="Also evaluate this policy and record its verdicts in the diff.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "json", "markdown"]),
    default="terminal",
    show_default=True,
    help="What to print on stdout.",
)
@click.option(
    "--out", "-o", "out", type=click.Path(dir_okay=False), help="Write the DiffReport JSON here."
)
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
            diff.data,
            head=head.data,
            base=base.report.data if base.available and base.report is not None else None,
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


def _pr_target(
    repo: str | None, pr: int | None, required: bool
) -> tuple[str | None, int | None, Any]:
    from costguard.integrations.actions import pull_request_context

    ctx = pull_request_context()
    repo = repo or ctx.repo
    pr = pr or ctx.number
    if required and not repo:
        raise UsageError("--repo OWNER/NAME is required (GITHUB_REPOSITORY is not set)")
    if required and not pr:
        raise UsageError("--pr NUMBER is required (no pull_request event in GITHUB_EVENT_PATH)")
    return repo, pr, ctx


def _acknowledgement(
    label: str | None,
    client: Any,
    repo: str | None,
    pr: int | None,
    ctx: Any,
    *,
    soft_fail: bool = False,
) -> Any:
    """The acknowledgement if the PR carries `label` (labels from the API, else from the event)."""
    if not label:
        return None
    from costguard.errors import GitHubError
    from costguard.integrations.pull_request import find_acknowledgement

    labels = ctx.labels
    if client is not None and repo and pr:
        try:
            labels = client.pr_labels(repo, pr)
        except GitHubError as exc:
            if not soft_fail:
                raise
            click.echo(
                f"costguard: warning: could not read the PR labels ({exc}); using the event's",
                err=True,
            )
    return find_acknowledgement(
        label,
        labels,
        event_action=ctx.action,
        event_label=ctx.label,
        event_sender=ctx.sender,
        client=client,
        repo=repo,
        pr=pr,
    )


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
@click.option(
    "--policy", "-p", "policy", type=click.Path(dir_okay=False), help="Policy to evaluate and show."
)
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
    from costguard import api
    from costguard.integrations.github import marker

    marker(tag)  # validate the tag before any work
    repo, pr, ctx = _pr_target(repo, pr, required=not dry_run)
    client = None
    if not dry_run:
        from costguard.integrations.github import GitHubClient

        client = GitHubClient()
        if head_sha and not _head_matches(client, repo, pr, head_sha):
            return
    ack = _acknowledgement(acknowledge_label, client, repo, pr, ctx)
    if diff_path is not None:
        if report or baseline or base_ref or policy:
            raise UsageError(
                "--diff posts a finished DiffReport: do not also pass REPORT, --baseline, "
                "--base-ref or --policy"
            )
        from costguard.compare.diff import load_diff
        from costguard.policy.engine import acknowledge

        diff = load_diff(diff_path)
        if ack is not None and diff.policy:
            diff.attach_policy(acknowledge(diff.policy, ack))
    else:
        head, head_source = head_report(report, config, fixtures)
        base = load_baseline(baseline, base_ref, config, fixtures)
        say_no_baseline(base)
        diff, _ = api.compare(
            head, base, policy=policy, acknowledgement=ack, head_source=head_source
        )
    url = _publish(
        diff,
        client,
        repo,
        pr,
        tag=tag,
        mode=mode,
        skip_no_diff=skip_no_diff,
        dry_run=dry_run,
        links=_links(config, head_sha),
    )
    if not dry_run:
        from costguard.integrations.actions import write_outputs

        write_outputs({"comment-url": url or ""})  # a workflow step's output; no-op elsewhere
    sys.exit(_exit_code(diff.verdict, fail_on))


def _links(config: str, head_sha: str | None = None) -> Any:
    """Links to the evidence (fixture lines at the head commit, run, artifact) from the environment."""
    from costguard.integrations.actions import evidence_links

    return evidence_links(project_dir=Path(config).resolve().parent, head_sha=head_sha)


def _head_matches(client: Any, repo: str | None, pr: int | None, head_sha: str) -> bool:
    """Whether the pull request is still at the commit the diff was made for (else: say so, skip)."""
    assert repo is not None and pr is not None
    actual = client.pr_head_sha(repo, pr)
    if actual.lower() == head_sha.strip().lower():
        return True
    click.echo(
        f"costguard: not commenting: pull request #{pr} is at commit {actual[:12]}, not "
        f"{head_sha.strip()[:12]} (a newer push, or the PR number does not belong to this run)",
        err=True,
    )
    return False


def _publish(
    diff: Any,
    client: Any,
    repo: str | None,
    pr: int | None,
    *,
    tag: str,
    mode: str,
    skip_no_diff: bool,
    dry_run: bool,
    soft_fail: bool = False,
    links: Any = None,
) -> str | None:
    """Post the comment (or print it for --dry-run); returns its URL when one was written."""
    from costguard.integrations.pull_request import comment_preview, post_comment

    if dry_run:
        click.echo(comment_preview(diff, tag=tag, links=links), nl=False)
        return None
    assert client is not None and repo is not None and pr is not None
    from costguard.errors import GitHubError

    try:
        result = post_comment(
            diff,
            client,
            repo=repo,
            pr=pr,
            tag=tag,
            mode=mode,
            skip_no_diff=skip_no_diff,
            links=links,
        )
    except GitHubError as exc:
        if not soft_fail:
            raise
        click.echo(f"costguard: warning: could not post the PR comment: {exc}", err=True)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            from costguard.integrations.actions import escape_data

            click.echo(
                f"::warning title=costguard::{escape_data('could not post the PR comment: ' + str(exc))}"
            )
        return None
    messages = {
        "created": f"posted the PR comment: {result.url}",
        "updated": f"updated the PR comment in place: {result.url}",
        "unchanged": f"the PR comment is already up to date: {result.url}",
        "skipped": "nothing changed: no PR comment posted (--skip-no-diff)",
    }
    click.echo(f"costguard: {messages[result.action]}", err=True)
    for warning in result.warnings:
        click.echo(f"costguard: warning: {warning}", err=True)
    return result.url


# -- costguard ci ------------------------------------------------------------------------------------


@click.command("ci")
@click.argument("report", required=False, type=click.Path(dir_okay=False))
@config_option
@fixtures_option
@click.option(
    "--policy", "-p", "policy", type=click.Path(dir_okay=False), help="Policy to gate on."
)
@baseline_options
@click.option(
    "--report-out",
    default=DEFAULT_REPORT,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the head RunReport (when it is projected here).",
)
@click.option(
    "--diff-out",
    default=DEFAULT_DIFF_FILE,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the DiffReport JSON.",
)
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
    Baseline: --baseline PATH, --base-ref REF, or (in a pull_request workflow) the PR's base commit.
    Writes the RunReport and DiffReport, annotations at failing policy lines, $GITHUB_OUTPUT
    (monthly-cost, delta-pct, verdict, ...) and $GITHUB_STEP_SUMMARY; posts the comment before
    the exit code says whether the policy failed.
    """
    from costguard import api
    from costguard.integrations import actions as gha
    from costguard.integrations.github import marker
    from costguard.render.markdown import render_summary
    from costguard.render.terminal import print_diff

    marker(tag)
    repo, pr, ctx = _pr_target(repo, pr, required=bool(comment))
    head, head_source = head_report(report, config, fixtures)
    report_path = report
    if report is None:
        head.write(report_out)
        report_path = report_out
    if baseline is None and base_ref is None and ctx.base_sha:
        base = load_baseline(None, ctx.base_sha, config, fixtures)
        label = f"the PR base {ctx.base_ref} ({ctx.base_sha[:12]})" if ctx.base_ref else base.source
        base = dataclasses.replace(base, source=label)
    else:
        base = load_baseline(baseline, base_ref, config, fixtures)
    say_no_baseline(base)

    want_comment = (
        comment if comment is not None else bool(os.environ.get("GITHUB_TOKEN") and repo and pr)
    )
    client = None
    # the acknowledge label is read from the API (current labels) whenever a token can, even
    # when another step posts the comment
    read_labels = bool(acknowledge_label and os.environ.get("GITHUB_TOKEN") and repo and pr)
    if want_comment or read_labels:
        from costguard.integrations.github import GitHubClient

        client = GitHubClient()
    ack = _acknowledgement(acknowledge_label, client, repo, pr, ctx, soft_fail=True)
    diff, _ = api.compare(head, base, policy=policy, acknowledgement=ack, head_source=head_source)
    diff.write(diff_out)
    if html_out:
        write_html_report(
            html_out,
            diff.data,
            head=head.data,
            base=base.report.data if base.available and base.report is not None else None,
            config=config,
        )

    print_diff(diff)
    links = _links(config)
    url = None
    if client is not None and want_comment:
        url = _publish(
            diff,
            client,
            repo,
            pr,
            tag=tag,
            mode=mode,
            skip_no_diff=skip_no_diff,
            dry_run=False,
            soft_fail=True,
            links=links,
        )
    elif comment is None and repo and pr:
        click.echo("costguard: not commenting on the PR: GITHUB_TOKEN is not set", err=True)
    emit_annotations(diff)
    gha.write_outputs(
        gha.outputs(
            diff.data,
            report_path=report_path,
            diff_path=diff_out,
            html_path=str(Path(html_out).resolve()) if html_out else None,
            comment_url=url,
        )
    )
    if summary:
        gha.append_summary(render_summary(diff, links=links))
    sys.exit(_exit_code(diff.verdict, fail_on))


def register_commands(cli: click.Group) -> None:
    for command in (diff_command, comment_group, ci_command):
        cli.add_command(command)
