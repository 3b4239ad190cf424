"""The pull-request workflow behind `costguard ci` and `costguard comment github` (and so the
GitHub Action): head, baseline, diff, policy, acknowledgement label, PR comment, step outputs,
job summary, exit code. Front ends parse their arguments into `CiRequest` / `CommentRequest`,
call `ci` / `comment` and render the DiffReport they get back. The comment and the job summary
link the evidence (fixture and template lines at the head commit, the workflow run, the report
artifact) from what GitHub Actions sets; `ci` also writes the HTML report when asked.

Exit codes: 0 pass, 1 policy failure (per `fail_on`), 2 bad input (raised as CostguardError).
A comment that cannot be posted in `ci` is a warning, never a lost gate: the verdict still decides.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costguard.api.baselines import BaselineSpec
from costguard.compare.diff import DiffReport, load_diff
from costguard.errors import GitHubError, UsageError
from costguard.integrations import actions as gha
from costguard.integrations.actions import (
    PullRequestContext,
    evidence_links,
    pull_request_context,
)
from costguard.integrations.github import GitHubClient, marker
from costguard.integrations.pull_request import comment_preview, find_acknowledgement, post_comment
from costguard.policy.engine import Acknowledgement, acknowledge
from costguard.render.links import EvidenceLinks
from costguard.render.markdown import render_summary
from costguard.report.run_report import DEFAULT_REPORT, RunReport

DEFAULT_DIFF_FILE = "costguard-diff.json"
FAIL_ON = ("fail", "warn", "never")

Say = Callable[[str], None]
"""Where the workflow's notices go (the CLI: stderr, one line each)."""


def exit_code(verdict: str | None, fail_on: str = "fail") -> int:
    """1 when the policy verdict fails the step under `fail_on` (fail | warn | never), else 0."""
    if fail_on == "never" or verdict is None:
        return 0
    if verdict == "fail" or (fail_on == "warn" and verdict == "warn"):
        return 1
    return 0


def annotation_lines(diff: DiffReport, env: dict[str, str] | None = None) -> list[str]:
    """Workflow-command annotations, only inside GitHub Actions (elsewhere they are noise)."""
    env = dict(os.environ) if env is None else env
    if env.get("GITHUB_ACTIONS") != "true":
        return []
    return list(gha.annotation_lines(diff))


def pr_target(
    repo: str | None, pr: int | None, *, required: bool
) -> tuple[str | None, int | None, PullRequestContext]:
    """The repository and pull request: given, else from the Actions environment."""
    ctx = pull_request_context()
    repo = repo or ctx.repo
    pr = pr or ctx.number
    if required and not repo:
        raise UsageError("--repo OWNER/NAME is required (GITHUB_REPOSITORY is not set)")
    if required and not pr:
        raise UsageError("--pr NUMBER is required (no pull_request event in GITHUB_EVENT_PATH)")
    return repo, pr, ctx


def find_label_acknowledgement(
    label: str | None,
    client: GitHubClient | None,
    repo: str | None,
    pr: int | None,
    ctx: PullRequestContext,
    *,
    say: Say,
    soft_fail: bool = False,
) -> Acknowledgement | None:
    """The acknowledgement if the PR carries `label` (labels from the API, else from the event)."""
    if not label:
        return None
    labels = ctx.labels
    if client is not None and repo and pr:
        try:
            labels = client.pr_labels(repo, pr)
        except GitHubError as exc:
            if not soft_fail:
                raise
            say(f"costguard: warning: could not read the PR labels ({exc}); using the event's")
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


def head_matches(
    client: GitHubClient, repo: str | None, pr: int | None, head_sha: str, *, say: Say
) -> bool:
    """Whether the pull request is still at the commit the diff was made for (else: say so)."""
    assert repo is not None and pr is not None
    actual = client.pr_head_sha(repo, pr)
    if actual.lower() == head_sha.strip().lower():
        return True
    say(
        f"costguard: not commenting: pull request #{pr} is at commit {actual[:12]}, not "
        f"{head_sha.strip()[:12]} (a newer push, or the PR number does not belong to this run)"
    )
    return False


def links(project_dir: str | Path | None, head_sha: str | None = None) -> EvidenceLinks:
    """Links to the evidence (fixture lines at the head commit, the run, the artifact) from the
    environment GitHub Actions sets; empty (no links) elsewhere, e.g. a local `--dry-run`."""
    return evidence_links(project_dir=project_dir, head_sha=head_sha)


def job_summary(diff_path: str | Path, *, project_dir: str | Path | None = None) -> str:
    """The Markdown job summary of a finished DiffReport, linking the evidence (the Action
    writes it after uploading the artifact, so the link to it is known)."""
    return render_summary(load_diff(diff_path), links=links(project_dir))


def publish(
    diff: DiffReport,
    client: GitHubClient | None,
    repo: str | None,
    pr: int | None,
    *,
    tag: str,
    mode: str,
    skip_no_diff: bool,
    say: Say,
    soft_fail: bool = False,
    links: EvidenceLinks | None = None,
) -> str | None:
    """Post (or update) the PR comment; returns its URL when one was written."""
    assert client is not None and repo is not None and pr is not None
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
        say(f"costguard: warning: could not post the PR comment: {exc}")
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(
                "::warning title=costguard::"
                + gha.escape_data("could not post the PR comment: " + str(exc)),
                flush=True,
            )
        return None
    messages = {
        "created": f"posted the PR comment: {result.url}",
        "updated": f"updated the PR comment in place: {result.url}",
        "unchanged": f"the PR comment is already up to date: {result.url}",
        "skipped": "nothing changed: no PR comment posted (--skip-no-diff)",
    }
    say(f"costguard: {messages[result.action]}")
    for warning in result.warnings:
        say(f"costguard: warning: {warning}")
    return result.url


@dataclass
class CommentOptions:
    """How the PR comment is found and refreshed."""

    tag: str = "default"
    mode: str = "update"
    skip_no_diff: bool = False
    acknowledge_label: str | None = None


@dataclass
class CiRequest:
    """Everything `costguard ci` needs; the defaults are the CLI's."""

    report: str | None = None  # a head RunReport file; None: project the working tree
    policy: str | None = None
    baseline: BaselineSpec | None = None  # None: the PR's base commit, if known
    report_out: str = DEFAULT_REPORT
    diff_out: str = DEFAULT_DIFF_FILE
    repo: str | None = None
    pr: int | None = None
    comment: bool | None = None  # None: when GITHUB_TOKEN is set and a pull request is known
    options: CommentOptions = field(default_factory=CommentOptions)
    fail_on: str = "fail"
    html_out: str | None = None  # also write the HTML report here
    summary: bool = True  # append the job summary (the Action writes it after the upload)


@dataclass
class CiOutcome:
    diff: DiffReport
    exit_code: int
    report_path: str
    comment_url: str | None = None
    annotations: list[str] = field(default_factory=list)
    html_path: str | None = None  # the HTML report written (absolute), if asked for
    html_size: int | None = None  # its size in bytes


@dataclass
class CommentRequest:
    """Everything `costguard comment github` needs."""

    repo: str | None = None
    pr: int | None = None
    diff_path: str | None = None  # post this finished DiffReport as it is
    report: str | None = None
    baseline: BaselineSpec | None = None
    policy: str | None = None
    head_sha: str | None = None
    dry_run: bool = False
    options: CommentOptions = field(default_factory=CommentOptions)
    fail_on: str = "fail"


@dataclass
class CommentOutcome:
    diff: DiffReport | None  # None: not commented (the PR moved on)
    exit_code: int
    body: str | None = None  # the comment body of a dry run
    url: str | None = None


class Workflow:
    """The PR workflow over a facade: `head(report)`, `baseline(spec)`, `compare(...)`."""

    def __init__(
        self,
        head: Callable[[str | None], tuple[RunReport, str]],
        baseline: Callable[[BaselineSpec], Any],
        compare: Callable[..., tuple[DiffReport, Any]],
        say: Say,
        project_dir: str | Path | None = None,
    ) -> None:
        self.head, self.baseline, self.compare, self.say = head, baseline, compare, say
        self.project_dir = project_dir  # costguard.yaml's directory: fixture paths in links

    def _say_no_baseline(self, base: Any) -> None:
        if not base.available:
            self.say(f"costguard: no baseline yet: {base.reason}")

    def comment(self, req: CommentRequest) -> CommentOutcome:
        opts = req.options
        marker(opts.tag)  # validate the tag before any work
        repo, pr, ctx = pr_target(req.repo, req.pr, required=not req.dry_run)
        client = None
        if not req.dry_run:
            client = GitHubClient()
            if req.head_sha and not head_matches(client, repo, pr, req.head_sha, say=self.say):
                return CommentOutcome(None, 0)
        ack = find_label_acknowledgement(
            opts.acknowledge_label, client, repo, pr, ctx, say=self.say
        )
        if req.diff_path is not None:
            if req.report or req.baseline or req.policy:
                raise UsageError(
                    "--diff posts a finished DiffReport: do not also pass REPORT, --baseline, "
                    "--base-ref or --policy"
                )
            diff = load_diff(req.diff_path)
            if ack is not None and diff.policy:
                diff.attach_policy(acknowledge(diff.policy, ack))
        else:
            head, head_source = self.head(req.report)
            base = self.baseline(req.baseline or BaselineSpec("none"))
            self._say_no_baseline(base)
            diff, _ = self.compare(
                head, base, policy=req.policy, acknowledgement=ack, head_source=head_source
            )
        code = exit_code(diff.verdict, req.fail_on)
        evidence = links(self.project_dir, req.head_sha)
        if req.dry_run:
            body = comment_preview(diff, tag=opts.tag, links=evidence)
            return CommentOutcome(diff, code, body=body)
        url = publish(
            diff, client, repo, pr, tag=opts.tag, mode=opts.mode,
            skip_no_diff=opts.skip_no_diff, say=self.say, links=evidence,
        )  # fmt: skip
        gha.write_outputs({"comment-url": url or ""})  # a workflow step's output; no-op elsewhere
        return CommentOutcome(diff, code, url=url)

    def ci(self, req: CiRequest) -> CiOutcome:
        opts = req.options
        marker(opts.tag)
        repo, pr, ctx = pr_target(req.repo, req.pr, required=bool(req.comment))
        head, _head_source = self.head(req.report)
        if req.report is None:
            head.write(req.report_out)
            report_path = req.report_out
        else:
            report_path = req.report
        if req.baseline is None and ctx.base_sha:
            base = self.baseline(BaselineSpec("ref", ctx.base_sha, f"ref:{ctx.base_sha}"))
            label = (
                f"the PR base {ctx.base_ref} ({ctx.base_sha[:12]})" if ctx.base_ref else base.source
            )
            base = dataclasses.replace(base, source=label)
        else:
            base = self.baseline(req.baseline or BaselineSpec("none"))
        self._say_no_baseline(base)
        want_comment = (
            req.comment
            if req.comment is not None
            else bool(os.environ.get("GITHUB_TOKEN") and repo and pr)
        )
        # the acknowledge label is read from the API (the current labels) whenever a token
        # can, even when another step posts the comment (the Action's publish step)
        read_labels = bool(
            opts.acknowledge_label and os.environ.get("GITHUB_TOKEN") and repo and pr
        )
        client = GitHubClient() if want_comment or read_labels else None
        ack = find_label_acknowledgement(
            opts.acknowledge_label, client, repo, pr, ctx, say=self.say, soft_fail=True
        )
        diff, _ = self.compare(
            head, base, policy=req.policy, acknowledgement=ack, head_source=_head_source
        )
        diff.write(req.diff_out)
        html_path = html_size = None
        if req.html_out:
            from costguard.api.html import write_html_report

            html_size = write_html_report(
                req.html_out,
                diff,
                head=head,
                base=base.report if base.available else None,
                project_dir=self.project_dir,
            )
            html_path = str(Path(req.html_out).resolve())
        poster = client if want_comment else None
        return CiOutcome(
            diff,
            exit_code(diff.verdict, req.fail_on),
            report_path,
            self._post_and_report(diff, poster, repo, pr, req, report_path, html_path),
            annotation_lines(diff),
            html_path=html_path,
            html_size=html_size,
        )

    def _post_and_report(
        self,
        diff: DiffReport,
        client: GitHubClient | None,
        repo: str | None,
        pr: int | None,
        req: CiRequest,
        report_path: str,
        html_path: str | None = None,
    ) -> str | None:
        url = None
        opts = req.options
        evidence = links(self.project_dir)
        if client is not None:
            url = publish(
                diff, client, repo, pr, tag=opts.tag, mode=opts.mode,
                skip_no_diff=opts.skip_no_diff, say=self.say, soft_fail=True, links=evidence,
            )  # fmt: skip
        elif req.comment is None and repo and pr:
            self.say("costguard: not commenting on the PR: GITHUB_TOKEN is not set")
        gha.write_outputs(
            gha.outputs(
                diff,
                report_path=report_path,
                diff_path=req.diff_out,
                html_path=html_path,
                comment_url=url,
            )
        )
        if req.summary:
            gha.append_summary(render_summary(diff, links=evidence))
        return url


__all__: Sequence[str] = (
    "CiOutcome",
    "CiRequest",
    "CommentOptions",
    "CommentOutcome",
    "CommentRequest",
    "DEFAULT_DIFF_FILE",
    "FAIL_ON",
    "Workflow",
    "exit_code",
    "job_summary",
    "links",
)
