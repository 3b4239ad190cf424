"""`GitHubClient`: the REST routes costguard uses (comments, labels, pull requests, artifacts) and
GraphQL minimize, with retries; the token never appears in a message."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from costguard.errors import GitHubError
from costguard.integrations.github.body import _normalized
from costguard.integrations.github.http import (
    _RETRY_5XX,
    _TOKEN_RE,
    API_VERSION,
    DEFAULT_API_URL,
    _check_url,
    _gh_message,
    _is_requests_error,
    _is_transport_error,
    _links,
    _one_line,
    _pr_number,
    _Reply,
    _reply,
    _same_origin,
    _split_repo,
    graphql_url_for,
)

log = logging.getLogger("costguard.integrations.github")


PER_PAGE = 100
"""GitHub's maximum `per_page` for list endpoints."""


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


class GitHubClient:
    """A small GitHub REST/GraphQL client for PR comments and labels.

    `session` may be any object with a `requests.Session`-like `request()` method.
    Transient failures (5xx, connection errors, rate limits) are retried `max_retries` times with
    exponential backoff starting at `backoff_s`; a server-requested wait (`retry-after`, or
    `x-ratelimit-reset` when `x-ratelimit-remaining` is 0) is honoured, but if it is longer than
    `max_wait_s` the call fails at once with a clear message instead of stalling the job.
    """

    def __init__(
        self,
        token: str | None = None,
        api_url: str | None = None,
        *,
        session: Any = None,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        sleep: Callable[[float], Any] = time.sleep,
        graphql_url: str | None = None,
        max_wait_s: float = 90.0,
        timeout_s: float = 30.0,
    ) -> None:
        raw = token if token is not None else os.environ.get("GITHUB_TOKEN", "")
        raw = (raw or "").strip()
        if not raw:
            raise GitHubError(
                "no GitHub token: set GITHUB_TOKEN (in a workflow: "
                "env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }})"
            )
        if not _TOKEN_RE.fullmatch(raw):
            # never echo it: requests would put the whole header value into its exception
            raise GitHubError(
                "GITHUB_TOKEN contains spaces, line breaks or non-ASCII characters; "
                "set it to the bare token"
            )
        self._token = raw
        api = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).strip().rstrip("/")
        try:
            self.api_url = _check_url(api, "GITHUB_API_URL")
            if graphql_url:
                gql = graphql_url
            elif api_url is None and os.environ.get("GITHUB_GRAPHQL_URL"):
                # only trust the env var when the REST URL also came from the environment
                gql = os.environ["GITHUB_GRAPHQL_URL"]
            else:
                gql = graphql_url_for(self.api_url)
            self.graphql_url = _check_url(gql.strip().rstrip("/"), "GITHUB_GRAPHQL_URL")
        except GitHubError as exc:  # a URL that quotes the token must not print it
            raise GitHubError(self._scrub(str(exc))) from None
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = float(backoff_s)
        self.max_wait_s = float(max_wait_s)
        self.timeout_s = float(timeout_s)
        self._sleep = sleep
        self._session = session
        self._own_session = session is None

    # -- plumbing ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"GitHubClient(api_url={self.api_url!r}, graphql_url={self.graphql_url!r}, token=***)"
        )

    __str__ = __repr__

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_session and self._session is not None:
            self._session.close()
            self._session = None

    def _get_session(self) -> Any:
        if self._session is None:
            import requests  # lazy: only the GitHub paths need it

            self._session = requests.Session()
        return self._session

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "costguard",
        }

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _fail(self, message: str, status: int | None = None) -> GitHubError:
        err = GitHubError(self._scrub(_one_line(message, 600)))
        err.status = status  # type: ignore[attr-defined]
        return err

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        context: dict[str, Any] | None = None,
        recover: Callable[[], _Reply | None] | None = None,
    ) -> _Reply:
        """Send one API call with retries; return the reply or raise a one-line GitHubError.

        `recover` is called before re-sending after an *ambiguous* failure (5xx or a dropped
        connection: the write may have happened); if it finds the result, that is returned
        instead of writing twice.
        """
        if not url.startswith(("http://", "https://")):
            url = self.api_url + url
        path = urlsplit(url).path or "/"
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            ambiguous = False
            try:
                resp = self._get_session().request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=self._headers(),
                    timeout=self.timeout_s,
                )
            except Exception as exc:  # requests.RequestException and friends (lazy import)
                if not _is_transport_error(exc):
                    if _is_requests_error(exc):  # bad URL, bad header...: one clean line
                        raise self._fail(
                            f"could not send {method} {path} to GitHub ({type(exc).__name__}: "
                            f"{self._scrub(str(exc))})"
                        ) from None
                    raise
                last = f"{type(exc).__name__}: could not reach {urlsplit(url).netloc}"
                log.debug("%s %s -> %s", method, path, type(exc).__name__)
                wait = self._backoff(attempt)
                ambiguous = True
            else:
                reply = _reply(resp)
                log.debug("%s %s -> %s", method, path, reply.status)
                if reply.status < 400:
                    return reply
                wait = self._retry_wait(reply, attempt)
                if wait is None:
                    raise self._error(reply, method, url, context or {})
                ambiguous = reply.status >= 500
                last = f"{reply.status} {_gh_message(reply) or 'error'}"
            if attempt + 1 >= attempts:
                break
            if wait > self.max_wait_s:
                raise self._fail(
                    f"GitHub API rate limit reached on {method} {path}: GitHub asks to wait "
                    f"{wait:.0f}s, more than the {self.max_wait_s:.0f}s costguard will wait; "
                    "re-run the job later",
                    429,
                )
            log.warning(
                "GitHub API %s %s failed (%s); retrying in %.1fs (attempt %d of %d)",
                method,
                path,
                self._scrub(_one_line(last, 200)),
                wait,
                attempt + 2,
                attempts,
            )
            self._sleep(wait)
            if ambiguous and recover is not None:
                found = recover()
                if found is not None:
                    log.info(
                        "%s %s had succeeded despite the error; not sending it again", method, path
                    )
                    return found
        raise self._fail(
            f"GitHub API {method} {path} still failing after {attempts} attempt"
            f"{'s' if attempts != 1 else ''} (last: {last}); try again later "
            "(GitHub status: https://www.githubstatus.com)"
        )

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_s * (2**attempt), self.max_wait_s)

    def _retry_wait(self, reply: _Reply, attempt: int) -> float | None:
        """Seconds to wait before retrying `reply`, or None when it is not worth retrying."""
        status = reply.status
        if status in _RETRY_5XX:
            return self._backoff(attempt)
        if status not in (403, 429):
            return None
        h = reply.headers
        message = _gh_message(reply).lower()
        retry_after = h.get("retry-after")
        exhausted = h.get("x-ratelimit-remaining") == "0"
        if not (status == 429 or retry_after is not None or exhausted or "rate limit" in message):
            return None  # a plain permission 403
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                pass  # an HTTP date: fall through
        if exhausted and h.get("x-ratelimit-reset", "").isdigit():
            return max(0.0, int(h["x-ratelimit-reset"]) - time.time()) + 1.0
        # secondary limit without a hint: GitHub says wait at least a minute, growing each time
        return min(max(60.0, self._backoff(attempt)), self.max_wait_s)

    def _error(self, reply: _Reply, method: str, url: str, ctx: dict[str, Any]) -> GitHubError:
        status = reply.status
        msg = _gh_message(reply) or "no message"
        repo = ctx.get("repo", "?")
        what = ctx.get("what", f"{method} {urlsplit(url).path}")
        if status == 401:
            return self._fail(
                "GitHub rejected the token (401 Bad credentials): check GITHUB_TOKEN", 401
            )
        if status == 403:
            return self._fail(
                f"GitHub refused to {what} in {repo} (403 {msg}): the token needs "
                "`pull-requests: write` and `issues: write` permissions; pull requests from "
                "forks only get a read-only GITHUB_TOKEN, so post the comment from a separate "
                "`workflow_run` workflow (see the costguard docs)",
                403,
            )
        if status == 404:
            if ctx.get("graphql"):
                return self._fail(
                    f"GitHub GraphQL endpoint {self.graphql_url} not found (404): set "
                    "GITHUB_GRAPHQL_URL (GitHub Enterprise Server: https://HOST/api/graphql)",
                    404,
                )
            if "comment_id" in ctx:
                return self._fail(
                    f"comment {ctx['comment_id']} in repository {repo} not found, or the token "
                    "cannot see it",
                    404,
                )
            if "pr" in ctx:
                return self._fail(
                    f"repository {repo} or pull request #{ctx['pr']} not found, or the token "
                    "cannot see it",
                    404,
                )
            return self._fail(f"{urlsplit(url).path} not found on {self.api_url} (404)", 404)
        if status == 422:
            return self._fail(f"GitHub rejected the request to {what} in {repo} (422 {msg})", 422)
        return self._fail(
            f"GitHub API error {status} on {method} {urlsplit(url).path}: {msg}", status
        )

    def _paginate(self, path: str, ctx: dict[str, Any]) -> list[Any]:
        items: list[Any] = []
        url: str | None = path
        params: dict[str, Any] | None = {"per_page": PER_PAGE}
        seen: set[str] = set()
        while url:
            reply = self._request("GET", url, params=params, context=ctx)
            if not isinstance(reply.data, list):
                raise self._fail(f"unexpected reply from GitHub for {path}: expected a list")
            items.extend(reply.data)
            nxt = _links(reply.headers.get("link", "")).get("next")
            if nxt is not None:
                if not _same_origin(nxt, self.api_url):
                    raise self._fail(
                        f"GitHub pagination pointed to another host ({urlsplit(nxt).netloc}); "
                        "refusing to send the token there"
                    )
                if nxt in seen:
                    raise self._fail(f"GitHub pagination for {path} loops; giving up")
                seen.add(nxt)
            url, params = nxt, None  # the link already carries per_page and page
        return items

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

    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, what: str) -> Any:
        ctx = {"graphql": True, "what": what, "repo": "the repository"}
        reply = self._request(
            "POST",
            self.graphql_url,
            json={"query": query, "variables": variables or {}},
            context=ctx,
        )
        data = reply.data if isinstance(reply.data, dict) else {}
        errors = data.get("errors") or []
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
            kind = first.get("type", "")
            msg = first.get("message", "unknown error")
            if kind == "FORBIDDEN" or "not accessible" in msg:
                raise self._fail(
                    f"GitHub refused to {what} (GraphQL FORBIDDEN: {msg}): the token needs "
                    "`pull-requests: write` and `issues: write` permissions; fork pull requests "
                    "get a read-only GITHUB_TOKEN (use the `workflow_run` pattern)",
                    403,
                )
            raise self._fail(f"GitHub GraphQL error while trying to {what}: {msg}", 422)
        return data.get("data")

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
