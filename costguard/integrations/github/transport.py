"""`Transport`: GitHub REST and GraphQL calls with retries, pagination and one-line errors; the
token never appears in a message, a log line or `repr()`. `GitHubClient` adds the routes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import urlsplit

from costguard.errors import GitHubError
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
    _Reply,
    _reply,
    _same_origin,
    graphql_url_for,
)

log = logging.getLogger("costguard.integrations.github")


PER_PAGE = 100
"""GitHub's maximum `per_page` for list endpoints."""


class Transport:
    """The authenticated connection to one GitHub (github.com or Enterprise Server).

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
        return f"{type(self).__name__}(api_url={self.api_url!r}, graphql_url={self.graphql_url!r}, token=***)"

    __str__ = __repr__

    def __enter__(self) -> Self:
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
                retry_wait = self._retry_wait(reply, attempt)
                if retry_wait is None:
                    raise self._error(reply, method, url, context or {})
                wait = retry_wait
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
