"""`upsert_comment`: one comment per pull request and tag, updated in place (or new, hidden or
deleted and new, by mode)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from costguard.errors import GitHubError
from costguard.integrations.github.body import _normalized, compose_body, is_ours, marker
from costguard.integrations.github.client import AUTHOR_ENV, GitHubClient, log

MODES = ("update", "new", "hide-and-new", "delete-and-new")


Mode = Literal["update", "new", "hide-and-new", "delete-and-new"]


Action = Literal["created", "updated", "unchanged", "skipped"]


@dataclass(frozen=True)
class CommentResult:
    """What `upsert_comment` did. `warnings` lists non-fatal clean-up failures (e.g. an old
    comment that could not be hidden); the new comment was posted regardless."""

    action: Action
    comment_id: int | None
    url: str | None
    warnings: tuple[str, ...] = ()


def own_comments(
    client: GitHubClient, repo: str, pr: int, comments: list[dict[str, Any]]
) -> tuple[Callable[[dict[str, Any]], bool], str]:
    """Which comments the token's own identity wrote, and how that was established.

    In order: GraphQL `viewerDidAuthor` (works for every token type, including the Actions
    GITHUB_TOKEN), the login from `GET /user` (personal tokens; GitHub Enterprise Servers
    without the GraphQL field), then the explicit `COSTGUARD_COMMENT_AUTHOR` login. When none
    of them answers, no comment counts as ours: costguard then only ever posts new comments.
    A marker alone never makes a comment ours -- anyone can paste it.
    """
    try:
        ids = client.authored_comment_ids(repo, pr)
    except GitHubError as err:
        log.info("GraphQL viewerDidAuthor unavailable (%s); trying GET /user", err)
    else:
        return (lambda c: _comment_id(c) in ids), "GraphQL viewerDidAuthor"
    try:
        login = client.viewer_login()
        how = f"the token's login {login} from GET /user"
    except GitHubError as err:
        log.info("GET /user unavailable (%s); trying %s", err, AUTHOR_ENV)
        login = os.environ.get(AUTHOR_ENV, "").strip()
        how = f"{AUTHOR_ENV}={login}"
    if not login:
        log.warning(
            "cannot tell which PR comments this token wrote (GraphQL viewerDidAuthor and GET /user "
            "both failed, %s is not set): existing comments are left alone",
            AUTHOR_ENV,
        )
        return (lambda c: False), f"identity unknown: set {AUTHOR_ENV}"
    return (lambda c: _login_matches(c, login)), how


def _comment_id(c: dict[str, Any]) -> int | None:
    value = c.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _login_matches(c: dict[str, Any], login: str) -> bool:
    user = c.get("user") if isinstance(c.get("user"), dict) else {}
    author = user.get("login") if isinstance(user, dict) else None
    if not isinstance(author, str):
        return False
    want = login.lower()
    got = author.lower()
    # apps appear as `slug[bot]` in REST; a login given without the suffix still means the bot
    return got == want or (user.get("type") == "Bot" and got == want + "[bot]")


def upsert_comment(
    client: GitHubClient,
    repo: str,
    pr: int,
    body: str,
    *,
    tag: str = "default",
    mode: Mode = "update",
    skip_if_unchanged: bool = False,
    create: bool = True,
) -> CommentResult:
    """Post or refresh costguard's comment for `tag` on pull request `pr` of `repo`.

    Modes: `update` edits the newest comment of ours in place (creates one if there is none;
    older duplicates are left alone); `new` always posts a new one; `hide-and-new` posts a new
    one and then minimizes the previous ones as OUTDATED; `delete-and-new` posts a new one and
    then deletes the previous ones. The new comment is posted *before* the old ones are hidden
    or deleted, so a failure never leaves the PR without a report; clean-up failures come back
    as `warnings`. With `skip_if_unchanged`, nothing is written when our newest comment already
    has exactly this body (action "unchanged"). With `create=False` an existing comment is
    refreshed (as in `update` mode) but none is created: action "skipped" when there is none.
    """
    if mode not in MODES:
        raise GitHubError(f"unknown comment mode {mode!r}: use one of {', '.join(MODES)}")
    mark = marker(tag)
    if not (body or "").strip():
        raise GitHubError("refusing to post an empty PR comment")
    full = compose_body(body, tag)
    comments = client.list_comments(repo, pr)
    marked = [c for c in comments if isinstance(c, dict) and is_ours(c.get("body"), mark)]
    warnings: list[str] = []
    ours: list[dict[str, Any]] = []
    if marked:
        authored, how = own_comments(client, repo, pr, comments)
        for c in marked:
            if authored(c):
                ours.append(c)
                continue
            who = ((c.get("user") or {}) if isinstance(c.get("user"), dict) else {}).get("login")
            why = (
                f"costguard cannot tell whether this token wrote it ({how})"
                if how.startswith("identity unknown")
                else f"this token's identity did not write it ({how})"
            )
            text = (
                f"ignored comment {c.get('html_url') or c.get('id')}"
                f"{f' by @{who}' if who else ''}: it carries costguard's marker for tag "
                f"{tag!r} but {why}; it was not edited, hidden or deleted"
            )
            warnings.append(text)
            log.warning("%s", text)
    ours.sort(key=lambda c: (str(c.get("created_at") or ""), int(c.get("id") or 0)))
    newest = ours[-1] if ours else None

    if (
        skip_if_unchanged
        and newest is not None
        and _normalized(newest.get("body")) == _normalized(full)
    ):
        log.info("PR comment %s is already up to date", newest.get("html_url"))
        return CommentResult("unchanged", newest.get("id"), newest.get("html_url"), tuple(warnings))

    if not create:
        if newest is None:
            log.info("no PR comment to refresh; not creating one")
            return CommentResult("skipped", None, None, tuple(warnings))
        mode = "update"
    known = [int(c.get("id") or 0) for c in comments if isinstance(c, dict)]
    if mode == "update" and newest is not None:
        try:
            c = client.update_comment(repo, int(newest["id"]), full)
        except GitHubError as err:
            if getattr(err, "status", None) != 404:
                raise
            log.info("PR comment %s vanished meanwhile; posting a new one", newest.get("id"))
        else:
            log.info("updated PR comment %s", c.get("html_url"))
            return CommentResult("updated", c.get("id"), c.get("html_url"), tuple(warnings))

    c = client.create_comment(repo, pr, full, known_ids=known)
    log.info("posted PR comment %s", c.get("html_url"))
    previous = ours if mode in ("hide-and-new", "delete-and-new") else []
    if mode == "hide-and-new" and previous:
        try:
            states = client.minimized_states([str(p.get("node_id")) for p in previous])
        except GitHubError:
            states = {}
        previous = [p for p in previous if not states.get(str(p.get("node_id")), False)]
    for old in previous:
        try:
            if mode == "hide-and-new":
                client.minimize_comment(str(old.get("node_id")))
            else:
                client.delete_comment(repo, int(old["id"]))
        except GitHubError as err:
            if mode == "delete-and-new" and getattr(err, "status", None) == 404:
                continue  # already gone
            verb = "hide" if mode == "hide-and-new" else "delete"
            warnings.append(f"could not {verb} old comment {old.get('id')}: {err}")
            log.warning("could not %s old PR comment %s: %s", verb, old.get("id"), err)
    return CommentResult("created", c.get("id"), c.get("html_url"), tuple(warnings))
