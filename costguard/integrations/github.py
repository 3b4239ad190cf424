"""The GitHub client behind the PR comment (DESIGN.md §7).

One comment per PR and per `--tag`, found again by a hidden marker and updated in place:

    client = GitHubClient()                       # GITHUB_TOKEN / GITHUB_API_URL from the env
    upsert_comment(client, "octo/repo", 42, markdown, tag="nightly", mode="update")

How a comment is recognised as ours: its body *starts* with the marker line
`<!-- costguard:tag=TAG -->` (HTML comments are invisible in rendered Markdown) AND the token's
own identity wrote it (`own_comments`: GraphQL `viewerDidAuthor`, else `GET /user`, else the
explicit `COSTGUARD_COMMENT_AUTHOR`). Anyone can paste the marker into a comment of their own;
such a comment is never edited, hidden or deleted, and is reported as a warning with its URL.
A comment that merely quotes the marker somewhere in its middle is never a candidate, and
`tag=a` never matches `tag=ab` because the whole first line must be equal to the marker.

Works against github.com and GitHub Enterprise Server: the REST base URL comes from the
argument, `GITHUB_API_URL` (set by Actions runners) or https://api.github.com; the GraphQL URL
(only needed for `hide-and-new`) from the argument, `GITHUB_GRAPHQL_URL`, or is derived from the
REST URL (`.../api/v3` -> `.../api/graphql`, otherwise `<api>/graphql`).

The token is never part of an exception message, a log line or `repr()`. `requests` is
imported lazily so that importing costguard does not pay for it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from costguard.errors import GitHubError

log = logging.getLogger("costguard.integrations.github")

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
COMMENT_LIMIT = 65536
"""GitHub's maximum issue/PR comment body ("body is too long (maximum is 65536 characters)")."""
PER_PAGE = 100
"""GitHub's maximum `per_page` for list endpoints."""
MAX_TAG_LENGTH = 100
MARKER_RESERVE = 200
"""Room `truncate_body` leaves by default for the marker line that `upsert_comment` adds."""
MODES = ("update", "new", "hide-and-new", "delete-and-new")

Mode = Literal["update", "new", "hide-and-new", "delete-and-new"]
Action = Literal["created", "updated", "unchanged", "skipped"]

_TAG_RE = re.compile(r"[A-Za-z0-9._/-]+")
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_REPO_RE = re.compile(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)")
_LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="([^"]*)"')
_RETRY_5XX = frozenset({500, 502, 503, 504})

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


# --------------------------------------------------------------------------------------------
# marker and body helpers


def marker(tag: str = "default") -> str:
    """The hidden marker for `tag`: `<!-- costguard:tag=TAG -->`.

    Tags may only use letters, digits and `. _ / -` (at most 100 characters), so that a tag can
    neither end the HTML comment early nor make one tag's marker a prefix trick for another.
    """
    if not isinstance(tag, str) or not tag:
        raise GitHubError("the comment --tag must not be empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise GitHubError(
            f"the comment --tag is {len(tag)} characters long; at most {MAX_TAG_LENGTH} allowed"
        )
    if not _TAG_RE.fullmatch(tag):
        raise GitHubError(f"invalid comment --tag {tag!r}: use only letters, digits and . _ / -")
    return f"<!-- costguard:tag={tag} -->"


def is_ours(body: str | None, mark: str) -> bool:
    """True when `body` is one of our comments for this marker: its first line IS the marker."""
    if not body:
        return False
    first = body.lstrip().split("\n", 1)[0].strip()
    return first == mark


def gh_len(text: str) -> int:
    """Length as a conservative GitHub would count it: UTF-16 code units.

    GitHub's limit is in characters. Counting UTF-16 units is >= the code-point count (an emoji
    outside the BMP counts 2), so staying under it keeps us under whichever way GitHub counts.
    """
    return len(text.encode("utf-16-le")) // 2


def _note(removed: int) -> str:
    return (
        f"\n\n> ✂️ … {removed:,} characters of details truncated (GitHub's comment limit is "
        f"{COMMENT_LIMIT:,} characters); see the job summary or the report artifact for the "
        "full report …\n\n"
    )


def truncate_body(body: str, limit: int = COMMENT_LIMIT, *, reserve: int = MARKER_RESERVE) -> str:
    """Fit `body` into `limit - reserve` characters (as counted by `gh_len`).

    A body that fits is returned unchanged. Otherwise the head (~70 %) and the tail are kept,
    the middle is cut at line boundaries and replaced by a visible note saying how many
    characters were dropped and where the full report is. An open code fence or `<details>`
    block at the cut is closed so that the note is not swallowed by it.
    """
    budget = limit - reserve
    if budget < 400:
        raise ValueError(f"limit {limit} minus reserve {reserve} is too small to truncate into")
    if gh_len(body) <= budget:
        return body
    lines = body.splitlines(keepends=True)
    avail = budget - gh_len(_note(len(body))) - 64  # slack for fence/details repairs
    while True:
        out = _cut_middle(body, lines, avail)
        over = gh_len(out) - budget
        if over <= 0:
            return out
        avail -= over + 16  # pathological repairs: shrink and try again


def _cut_middle(body: str, lines: list[str], avail: int) -> str:
    head_budget = max(0, int(avail * 0.7))
    head: list[str] = []
    used = 0
    for line in lines:
        n = gh_len(line)
        if used + n > head_budget:
            break
        head.append(line)
        used += n
    consumed = len(head)
    if not head and lines:  # the first line alone is too long: keep a prefix of it
        head = [_prefix_within(lines[0], head_budget)]
        used = gh_len(head[0])
        consumed = 1
    tail_budget = avail - used
    tail: list[str] = []
    tused = 0
    for line in reversed(lines[consumed:]):
        n = gh_len(line)
        if tused + n > tail_budget:
            break
        tail.append(line)
        tused += n
    tail.reverse()
    head_text = "".join(head)
    tail_text = "".join(tail)
    removed = len(body) - len(head_text) - len(tail_text)
    fix_head = ""
    if _fences(head_text) % 2:
        fix_head += "\n```"
    open_details = _open_details(head_text)
    if open_details > 0:
        fix_head += "\n\n</details>" * open_details
    fix_tail = "```\n" if _fences(tail_text) % 2 else ""
    if not fix_tail:
        # the tail's unmatched </details> get their opening tag back ...
        fix_tail += "<details><summary>… (continued)</summary>\n\n" * _unopened_details(tail_text)
        # ... and a table cut in the middle keeps its header
        fix_tail += _table_header_for(lines, len(lines) - len(tail), tail)
    return head_text.rstrip("\n") + fix_head + _note(removed) + fix_tail + tail_text


_DETAILS_RE = re.compile(r"<(/?)details\b", re.IGNORECASE)
_TABLE_SEPARATOR_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _open_details(text: str) -> int:
    """`<details>` opened in `text` and not closed in it."""
    depth = 0
    for m in _DETAILS_RE.finditer(text):
        depth = depth - 1 if m.group(1) else depth + 1
        depth = max(depth, 0)
    return depth


def _unopened_details(text: str) -> int:
    """`</details>` in `text` whose opening tag is not in it."""
    depth = missing = 0
    for m in _DETAILS_RE.finditer(text):
        if m.group(1):
            if depth:
                depth -= 1
            else:
                missing += 1
        else:
            depth += 1
    return missing


def _table_header_for(lines: list[str], start: int, tail: list[str]) -> str:
    """The header and separator rows of the table that `lines[start]` continues, if any."""
    if not tail or not tail[0].lstrip().startswith("|") or _TABLE_SEPARATOR_RE.match(tail[0]):
        return ""
    if len(tail) > 1 and _TABLE_SEPARATOR_RE.match(tail[1]):
        return ""  # the tail starts with a whole table
    for i in range(start - 1, 0, -1):
        if not lines[i].lstrip().startswith("|"):
            return ""
        if _TABLE_SEPARATOR_RE.match(lines[i]):
            return lines[i - 1] + lines[i]
    return ""


def _fences(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.lstrip().startswith("```"))


def _prefix_within(text: str, budget: int) -> str:
    cut = text[:budget]
    while gh_len(cut) > budget:
        cut = cut[: len(cut) - (gh_len(cut) - budget)]
    return cut


def compose_body(body: str, tag: str = "default") -> str:
    """The exact body `upsert_comment` posts: marker line first, then `body`, within the limit.

    Lines equal to our marker inside `body` are dropped, so the marker appears exactly once.
    """
    mark = marker(tag)
    cleaned = "\n".join(
        line for line in body.replace("\r\n", "\n").split("\n") if line.strip() != mark
    ).strip("\n")
    room = COMMENT_LIMIT - gh_len(mark) - 1
    return mark + "\n" + truncate_body(cleaned, room, reserve=0)


def _normalized(body: str | None) -> str:
    return (body or "").replace("\r\n", "\n").strip()


# --------------------------------------------------------------------------------------------
# the client


@dataclass(frozen=True)
class _Reply:
    status: int
    data: Any
    headers: dict[str, str]  # lower-cased names


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def graphql_url_for(api_url: str) -> str:
    """GraphQL endpoint for a REST base URL: GHES `/api/v3` -> `/api/graphql`, else `/graphql`."""
    api = api_url.rstrip("/")
    if api.endswith("/api/v3"):
        return api[: -len("/v3")] + "/graphql"
    return api + "/graphql"


def _check_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GitHubError(
            f"{name} must be an http(s) URL like https://api.github.com or "
            f"https://HOST/api/v3, got {url!r}"
        )
    if parts.username or parts.password:
        raise GitHubError(f"{name} must not contain credentials; put the token in GITHUB_TOKEN")
    return url


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())


def _split_repo(repo: str) -> tuple[str, str]:
    m = _REPO_RE.fullmatch(repo or "")
    if not m:
        raise GitHubError(f"invalid repository {repo!r}: expected OWNER/NAME, e.g. octo/widgets")
    return m.group(1), m.group(2)


def _pr_number(pr: int | str) -> int:
    try:
        n = int(str(pr).lstrip("#"))
    except ValueError:
        n = 0
    if n <= 0:
        raise GitHubError(f"invalid pull request number {pr!r}")
    return n


def _is_transport_error(exc: Exception) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover - requests is a dependency
        return isinstance(exc, (ConnectionError, TimeoutError))
    return isinstance(
        exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)
    )


def _is_requests_error(exc: Exception) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, requests.RequestException)


def _reply(resp: Any) -> _Reply:
    headers = {str(k).lower(): str(v) for k, v in resp.headers.items()}
    data: Any = None
    if resp.status_code != 204 and resp.content:
        try:
            data = resp.json()
        except ValueError:
            data = {"message": _one_line(resp.text, 200)}
    return _Reply(resp.status_code, data, headers)


def _gh_message(reply: _Reply) -> str:
    data = reply.data
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or "")]
    for e in data.get("errors") or []:
        if isinstance(e, dict) and e.get("message"):
            parts.append(str(e["message"]))
        elif isinstance(e, str):
            parts.append(e)
    return _one_line(": ".join(p for p in parts if p), 300)


def _links(header: str) -> dict[str, str]:
    links: dict[str, str] = {}
    for url, rels in _LINK_RE.findall(header or ""):
        for rel in rels.split():
            links[rel] = url
    return links


# --------------------------------------------------------------------------------------------
# upsert


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
