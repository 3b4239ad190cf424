"""`GitHubClient`: the REST routes costguard uses (comments, labels, pull requests, artifacts), the
token's identity and GraphQL minimize, over `Transport` (retries, pagination, errors)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from costguard.errors import GitHubError
from costguard.integrations.github.body import _normalized
from costguard.integrations.github.http import _pr_number, _Reply, _split_repo
from costguard.integrations.github.transport import PER_PAGE, Transport, log

__all__ = ["AUTHOR_ENV", "PER_PAGE", "GitHubClient", "log"]


_MINIMIZE_MUTATION = (
    "mutation($subjectId: ID!) {"
    " minimizeComment(input: {subjectId: $subjectId, classifier: OUTDATED}) {"
    " minimizedComment { isMinimized minimizedReason } } }"
)


_MINIMIZED_QUERY = (
    "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Minimizable { isMinimized } } }"
)


_AUTHORED_QUERY = (
    "query($owner: String!, $name: String!, $number: Int!, $after: String) {"
    " repository(owner: $owner, name: $name) { issueOrPullRequest(number: $number) {"
    " ... on PullRequest { comments(first: 100, after: $after) { ...page } }"
    " ... on Issue { comments(first: 100, after: $after) { ...page } } } } }"
    " fragment page on IssueCommentConnection {"
    " pageInfo { hasNextPage endCursor } nodes { databaseId viewerDidAuthor } }"
)
"""Which of the PR's comments the token's own identity wrote. `IssueComment.viewerDidAuthor`
answers for every kind of token, including the Actions GITHUB_TOKEN (an app installation token,
which gets 403 from `GET /user`)."""


AUTHOR_ENV = "COSTGUARD_COMMENT_AUTHOR"
"""The explicit fallback: the login whose comments costguard may touch (e.g.
`github-actions[bot]`), used only when neither GraphQL nor `GET /user` can say who the token is."""


class GitHubClient(Transport):
    """A small GitHub REST/GraphQL client for PR comments and labels.

    `session` may be any object with a `requests.Session`-like `request()` method; retries and
    waits are `Transport`'s.
    """

    # -- REST ----------------------------------------------------------------------------------

    def list_comments(self, repo: str, pr: int) -> list[dict[str, Any]]:
        """All comments of the PR (issue comments, oldest first), following `rel="next"`."""
        owner, name = _split_repo(repo)
        n = _pr_number(pr)
        ctx = {"repo": repo, "pr": n, "what": f"read the comments of pull request #{n}"}
        return self._paginate(f"/repos/{owner}/{name}/issues/{n}/comments", ctx)

    def authored_comment_ids(self, repo: str, pr: int, *, max_pages: int = 100) -> set[int]:
        """Database ids of the PR's comments written by this token's identity (GraphQL
        `viewerDidAuthor`, 100 comments per call). Raises GitHubError when GraphQL cannot say."""
        owner, name = _split_repo(repo)
        n = _pr_number(pr)
        ids: set[int] = set()
        after: str | None = None
        for _ in range(max_pages):
            data = self.graphql(
                _AUTHORED_QUERY,
                {"owner": owner, "name": name, "number": n, "after": after},
                what=f"find which comments of pull request #{n} this token wrote",
            )
            item = ((data or {}).get("repository") or {}).get("issueOrPullRequest")
            conn = item.get("comments") if isinstance(item, dict) else None
            if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list):
                raise self._fail(f"unexpected GraphQL reply for the comments of #{n}")
            for node in conn["nodes"]:
                if not isinstance(node, dict):
                    continue
                did, db_id = node.get("viewerDidAuthor"), node.get("databaseId")
                if did is True and isinstance(db_id, int) and not isinstance(db_id, bool):
                    ids.add(db_id)
            page = conn.get("pageInfo") or {}
            if page.get("hasNextPage") is not True or not isinstance(page.get("endCursor"), str):
                return ids
            after = page["endCursor"]
        raise self._fail(f"GraphQL pagination for the comments of #{n} does not end; giving up")

    def viewer_login(self) -> str:
        """Login of the token's user (`GET /user`); GitHub answers 403 for app installation
        tokens such as the Actions GITHUB_TOKEN."""
        reply = self._request("GET", "/user", context={"what": "read the token's own user"})
        login = reply.data.get("login") if isinstance(reply.data, dict) else None
        if not isinstance(login, str) or not login:
            raise self._fail("unexpected reply from GitHub for GET /user: no login")
        return login

    def create_comment(
        self, repo: str, pr: int, body: str, *, known_ids: Iterable[int] | None = None
    ) -> dict[str, Any]:
        """Post a new comment. With `known_ids` (the ids present before), an ambiguous failure
        is checked against the PR before re-posting, so a retry never leaves two copies."""
        owner, name = _split_repo(repo)
        n = _pr_number(pr)
        ctx = {"repo": repo, "pr": n, "what": f"comment on pull request #{n}"}
        recover: Callable[[], _Reply | None] | None = None
        if known_ids is not None:
            before = set(known_ids)
            want = _normalized(body)

            def _recover() -> _Reply | None:
                try:
                    current = self.list_comments(repo, n)
                except GitHubError:
                    return None
                for c in reversed(current):
                    if c.get("id") not in before and _normalized(c.get("body")) == want:
                        return _Reply(201, c, {})
                return None

            recover = _recover
        reply = self._request(
            "POST",
            f"/repos/{owner}/{name}/issues/{n}/comments",
            json={"body": body},
            context=ctx,
            recover=recover,
        )
        return reply.data

    def update_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        owner, name = _split_repo(repo)
        ctx = {"repo": repo, "comment_id": comment_id, "what": f"edit comment {comment_id}"}
        reply = self._request(
            "PATCH",
            f"/repos/{owner}/{name}/issues/comments/{int(comment_id)}",
            json={"body": body},
            context=ctx,
        )
        return reply.data

    def delete_comment(self, repo: str, comment_id: int) -> None:
        owner, name = _split_repo(repo)
        ctx = {"repo": repo, "comment_id": comment_id, "what": f"delete comment {comment_id}"}
        self._request(
            "DELETE", f"/repos/{owner}/{name}/issues/comments/{int(comment_id)}", context=ctx
        )

    def pr_head_sha(self, repo: str, pr: int) -> str:
        """The commit at the head of the pull request now."""
        owner, name = _split_repo(repo)
        n = _pr_number(pr)
        ctx = {"repo": repo, "pr": n, "what": f"read pull request #{n}"}
        reply = self._request("GET", f"/repos/{owner}/{name}/pulls/{n}", context=ctx)
        sha = (
            ((reply.data or {}).get("head") or {}).get("sha")
            if isinstance(reply.data, dict)
            else None
        )
        if not isinstance(sha, str) or not sha:
            raise self._fail(f"unexpected reply from GitHub for pull request #{n}: no head commit")
        return sha

    def pr_labels(self, repo: str, pr: int) -> list[str]:
        owner, name = _split_repo(repo)
        n = _pr_number(pr)
        ctx = {"repo": repo, "pr": n, "what": f"read the labels of pull request #{n}"}
        labels = self._paginate(f"/repos/{owner}/{name}/issues/{n}/labels", ctx)
        return [str(label.get("name")) for label in labels if isinstance(label, dict)]

    def label_added_by(self, repo: str, pr: int, label: str) -> str | None:
        """Login of whoever last added `label` to the PR (from its issue events), if known."""
        owner, name = _split_repo(repo)
        n = _pr_number(pr)
        ctx = {"repo": repo, "pr": n, "what": f"read the events of pull request #{n}"}
        events = self._paginate(f"/repos/{owner}/{name}/issues/{n}/events", ctx)
        actor = None
        for event in events:
            if (
                isinstance(event, dict)
                and event.get("event") == "labeled"
                and (event.get("label") or {}).get("name") == label
            ):
                actor = (event.get("actor") or {}).get("login") or actor
        return actor

    def latest_artifact(
        self, repo: str, name: str, *, branch: str | None = None, max_pages: int = 10
    ) -> dict[str, Any] | None:
        """The newest unexpired workflow artifact `name` uploaded by a run of `repo` itself.

        Runs for pull requests from forks are skipped even when their branch has the same
        name: a baseline must come from code that was merged, not from a fork's run. With
        `branch`, only runs on that branch count. None when there is no such artifact.
        """
        owner, repo_name = _split_repo(repo)
        ctx = {"repo": repo, "what": f"list the workflow artifacts named {name!r}"}
        newest: dict[str, Any] | None = None
        for page in range(1, max_pages + 1):
            reply = self._request(
                "GET",
                f"/repos/{owner}/{repo_name}/actions/artifacts",
                params={"name": name, "per_page": PER_PAGE, "page": page},
                context=ctx,
            )
            data = reply.data if isinstance(reply.data, dict) else {}
            artifacts = data.get("artifacts")
            if not isinstance(artifacts, list):
                raise self._fail(f"unexpected reply from GitHub listing the artifacts of {repo}")
            for art in artifacts:
                run = art.get("workflow_run") or {} if isinstance(art, dict) else {}
                if (
                    art.get("name") != name
                    or art.get("expired")
                    or run.get("id") is None
                    or run.get("head_repository_id") != run.get("repository_id")
                    or (branch is not None and run.get("head_branch") != branch)
                ):
                    continue
                if newest is None or str(art.get("created_at")) > str(newest.get("created_at")):
                    newest = art
            if newest is not None or len(artifacts) < PER_PAGE:
                break
        return newest

    # -- GraphQL -------------------------------------------------------------------------------

    def minimize_comment(self, node_id: str) -> bool:
        """Hide a comment as OUTDATED (GraphQL `minimizeComment`, by the REST `node_id`)."""
        data = self.graphql(
            _MINIMIZE_MUTATION, {"subjectId": node_id}, what=f"hide comment {node_id}"
        )
        minimized = ((data or {}).get("minimizeComment") or {}).get("minimizedComment") or {}
        return bool(minimized.get("isMinimized", True))

    def minimized_states(self, node_ids: list[str]) -> dict[str, bool]:
        """`isMinimized` for each node id (one GraphQL call per 100 ids)."""
        states: dict[str, bool] = {}
        for i in range(0, len(node_ids), 100):
            chunk = node_ids[i : i + 100]
            data = self.graphql(_MINIMIZED_QUERY, {"ids": chunk}, what="read comment states")
            for node in (data or {}).get("nodes") or []:
                if isinstance(node, dict) and node.get("id"):
                    states[node["id"]] = bool(node.get("isMinimized"))
        return states
