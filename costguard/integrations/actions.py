"""GitHub Actions integration: workflow-command annotations, step outputs, the job summary, PR context.

- `annotation_lines()` -> `::error file=policies/budget.yaml,line=12,title=...::message` lines that pin
  each failing (or warning) policy rule to its line in the policy file;
- `write_outputs()` appends `name=value` lines to `$GITHUB_OUTPUT` (monthly-cost, delta-pct, verdict...);
- `append_summary()` appends the Markdown job summary to `$GITHUB_STEP_SUMMARY`;
- `pull_request_context()` reads the PR number, base commit and labels from `$GITHUB_EVENT_PATH`.

All of it reads the typed DiffReport (`costguard.compare.model`: policy verdicts, totals, the
baseline); nothing is recomputed.
Outside Actions (variables unset) the writers do nothing and say so by returning False.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costguard.compare.model import (
    Change,
    DiffReportModel,
    DiffTotals,
    PolicyOutcome,
    RunSummary,
    VerdictRecord,
)
from costguard.render.links import EvidenceLinks

if TYPE_CHECKING:
    from costguard.compare.diff import DiffReport

_LEVEL = {"fail": "error", "warn": "warning"}


def escape_data(text: str) -> str:
    """Escape a workflow-command message (GitHub's rules: %, CR and LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow-command property value (also `:` and `,`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _workspace_relative(path: str, workspace: str | None) -> str:
    """Annotations attach to files by repository-relative path."""
    p = Path(path)
    base = Path(workspace) if workspace else Path.cwd()
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except (ValueError, OSError):
        return p.as_posix()


def _typed(diff: DiffReport | DiffReportModel | Mapping[str, Any]) -> DiffReportModel:
    """The typed DiffReport of a `DiffReport`, or a `DiffReportModel` itself.

    A plain mapping (a DiffReport's JSON, or only the parts these writers read) is taken as it
    is, without validation: its policy verdicts, monthly cost, baseline and flags.
    """
    if isinstance(diff, DiffReportModel):
        return diff
    if not isinstance(diff, Mapping):
        return diff.model
    raw_policy = diff.get("policy")
    policy: dict[str, Any] | None = None
    if raw_policy:
        verdicts = [VerdictRecord.model_construct(**v) for v in raw_policy.get("verdicts") or []]
        policy = {"verdict": raw_policy.get("verdict"), "verdicts": verdicts}
    cost = (diff.get("totals") or {}).get("cost_per_month") or {}
    read: dict[str, Any] = {
        "changed": bool(diff.get("changed")),
        "estimated": bool(diff.get("estimated")),
        "base": RunSummary.model_construct(**(diff.get("base") or {})),
        "totals": DiffTotals.model_construct(cost_per_month=Change.model_validate(cost)),
        "policy": None if policy is None else PolicyOutcome.model_construct(**policy),
    }
    return DiffReportModel.model_construct(**read)


def annotation_lines(
    diff: DiffReport | DiffReportModel | Mapping[str, Any], *, workspace: str | None = None
) -> list[str]:
    """One `::error`/`::warning` line per failing/warning rule, at the rule's line in the policy."""
    policy = _typed(diff).policy
    workspace = workspace if workspace is not None else os.environ.get("GITHUB_WORKSPACE")
    lines = []
    for v in policy.verdicts if policy else []:
        level = _LEVEL.get(v.status)
        if level is None:
            continue
        props = []
        if v.file:
            props.append(f"file={escape_property(_workspace_relative(v.file, workspace))}")
            if v.line:
                props.append(f"line={int(v.line)}")
        props.append(f"title={escape_property('costguard: ' + v.rule)}")
        message = f"{v.rule} ({v.metric}): {v.message}"
        lines.append(f"::{level} {','.join(props)}::{escape_data(message)}")
    return lines


def outputs(
    diff: DiffReport | DiffReportModel | Mapping[str, Any], **paths: str | None
) -> dict[str, str]:
    """The step outputs the Action publishes, as strings (empty when not applicable)."""
    model = _typed(diff)
    cost = model.totals.cost_per_month
    policy = model.policy

    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    out = {
        "monthly-cost": num(cost.head, ".2f"),
        "base-monthly-cost": num(cost.base, ".2f"),
        "delta-usd": num(cost.delta, ".2f"),
        "delta-pct": num(cost.delta_pct, ".2f"),
        "verdict": (policy.verdict or "none") if policy else "none",
        "changed": "true" if model.changed else "false",
        "has-baseline": "true" if model.base.available else "false",
        "estimated": "true" if model.estimated else "false",
    }
    for name, value in paths.items():
        out[name.replace("_", "-")] = value or ""
    return out


def write_outputs(values: Mapping[str, str], path: str | None = None) -> bool:
    """Append to `$GITHUB_OUTPUT` (multi-line values use a random heredoc delimiter)."""
    target = path or os.environ.get("GITHUB_OUTPUT")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as fh:
        for name, value in values.items():
            if "\n" in value or "\r" in value:
                delimiter = f"costguard_{secrets.token_hex(8)}"
                fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
            else:
                fh.write(f"{name}={value}\n")
    return True


def append_summary(markdown: str, path: str | None = None) -> bool:
    """Append the job summary to `$GITHUB_STEP_SUMMARY` (GitHub shows it on the run's page)."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return True


@dataclass
class PullRequestContext:
    """What the triggering event says about the pull request (all optional)."""

    repo: str | None = None
    number: int | None = None
    base_sha: str | None = None
    base_ref: str | None = None
    head_sha: str | None = None
    labels: list[str] = field(default_factory=list)
    action: str | None = None
    sender: str | None = None
    label: str | None = None  # the label of a `labeled` event


def pull_request_context(env: Mapping[str, str] | None = None) -> PullRequestContext:
    """Read `$GITHUB_REPOSITORY` and the `pull_request` payload of `$GITHUB_EVENT_PATH`, if any."""
    env = os.environ if env is None else env
    ctx = PullRequestContext(repo=env.get("GITHUB_REPOSITORY") or None)
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return ctx
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ctx
    pr = event.get("pull_request") if isinstance(event, dict) else None
    if not isinstance(pr, dict):
        return ctx
    if isinstance(pr.get("number"), int):
        ctx.number = pr["number"]
    base = pr.get("base") or {}
    ctx.base_sha = base.get("sha") or None
    ctx.base_ref = base.get("ref") or None
    ctx.head_sha = (pr.get("head") or {}).get("sha") or None
    ctx.labels = [
        str(label.get("name")) for label in pr.get("labels") or [] if isinstance(label, dict)
    ]
    ctx.action = event.get("action")
    ctx.sender = (event.get("sender") or {}).get("login")
    ctx.label = (event.get("label") or {}).get("name")
    return ctx


def evidence_links(
    env: Mapping[str, str] | None = None,
    *,
    project_dir: str | Path | None = None,
    head_sha: str | None = None,
) -> EvidenceLinks:
    """Links to the evidence from what GitHub Actions sets; empty parts where it sets nothing.

    The commit is `head_sha` when given (`comment github --head-sha`), else the pull request's
    head (the fixtures a reviewer changed), else `GITHUB_SHA`. The run is `COSTGUARD_RUN_ID` (a
    `workflow_run` job commenting on another run's results) or `GITHUB_RUN_ID`. The artifact comes
    from `COSTGUARD_ARTIFACT_URL` (upload-artifact's `artifact-url`) or, by name
    (`COSTGUARD_ARTIFACT_NAME`), the run page's artifact list. `project_dir` (costguard.yaml's
    directory) is placed inside `GITHUB_WORKSPACE` so fixture paths become repository paths.
    """
    env = os.environ if env is None else env
    ctx = pull_request_context(env)
    root = ""
    workspace = env.get("GITHUB_WORKSPACE")
    if workspace and project_dir is not None:
        try:
            root = Path(project_dir).resolve().relative_to(Path(workspace).resolve()).as_posix()
        except (ValueError, OSError):
            root = ""
    return EvidenceLinks(
        server=env.get("GITHUB_SERVER_URL") or None,
        repo=env.get("GITHUB_REPOSITORY") or None,
        sha=head_sha or ctx.head_sha or env.get("GITHUB_SHA") or None,
        run_id=env.get("COSTGUARD_RUN_ID") or env.get("GITHUB_RUN_ID") or None,
        artifact_url=env.get("COSTGUARD_ARTIFACT_URL") or None,
        artifact_name=env.get("COSTGUARD_ARTIFACT_NAME") or None,
        root=root,
    )
