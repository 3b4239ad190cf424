"""The pull-request gate: acknowledgement by label, and posting the DiffReport as the PR comment.

Front ends (`costguard comment github`, `costguard ci`, the Action) call these; the comment's
content comes from `costguard.render.markdown`, the GitHub calls from `costguard.integrations.github`.

`--skip-no-diff` semantics: when nothing changed against the baseline and the policy passed
cleanly, no comment is *created*; an existing costguard comment for the tag is still refreshed
in place when its text is out of date (so a reverted change never leaves a stale "+$400" on
the PR), and left untouched when it already says the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from costguard.compare.diff import DiffReport
from costguard.errors import GitHubError
from costguard.policy.engine import Acknowledgement
from costguard.render.links import EvidenceLinks

DEFAULT_TAG = "default"


def worth_a_comment(diff: DiffReport) -> bool:
    """Whether a run says anything new: a change, no baseline to compare with, or a policy finding."""
    return diff.changed or not diff.has_baseline or diff.verdict in ("fail", "warn")


def find_acknowledgement(
    label: str | None,
    labels: Sequence[str],
    *,
    event_action: str | None = None,
    event_label: str | None = None,
    event_sender: str | None = None,
    client: Any = None,
    repo: str | None = None,
    pr: int | None = None,
) -> Acknowledgement | None:
    """The acknowledgement when the PR carries `label`, naming who added it where that is known.

    Who: the sender of a `labeled` event for this very label, else the actor of the PR's latest
    `labeled` issue event (one API call; a failure there only loses the name).
    """
    if not label or label not in labels:
        return None
    by = event_sender if event_action == "labeled" and event_label == label else None
    if by is None and client is not None and repo and pr:
        try:
            by = client.label_added_by(repo, pr, label)
        except GitHubError:
            by = None
    return Acknowledgement(label=label, by=f"@{by}" if by else None)


def post_comment(
    diff: DiffReport,
    client: Any,
    *,
    repo: str,
    pr: int,
    tag: str = DEFAULT_TAG,
    mode: str = "update",
    skip_no_diff: bool = False,
    links: EvidenceLinks | None = None,
) -> Any:
    """Render `diff` and upsert it as the PR comment for `tag`; returns the CommentResult."""
    from costguard.integrations.github import upsert_comment
    from costguard.render.markdown import render_comment

    body = render_comment(diff, tag=tag, links=links)
    if skip_no_diff and not worth_a_comment(diff):
        return upsert_comment(
            client, repo, pr, body, tag=tag, mode="update", skip_if_unchanged=True, create=False
        )
    return upsert_comment(
        client,
        repo,
        pr,
        body,
        tag=tag,
        mode=mode,
        skip_if_unchanged=(mode == "update" or skip_no_diff),
    )


def comment_preview(
    diff: DiffReport, *, tag: str = DEFAULT_TAG, links: EvidenceLinks | None = None
) -> str:
    """The exact body `post_comment` would send (hidden marker first, size limit applied)."""
    from costguard.integrations.github import compose_body
    from costguard.render.markdown import render_comment

    return compose_body(render_comment(diff, tag=tag, links=links), tag)
