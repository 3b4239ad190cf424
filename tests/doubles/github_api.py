"""A GitHub-REST-compatible HTTP double for the PR-comment paths.

GitHub itself is unreachable from the test machines, so costguard's GitHub client is tested
against this server over real HTTP on 127.0.0.1. It implements just the routes costguard uses,
with GitHub's shapes: issue comments (list with `per_page`/`page` and a `link` header carrying
`rel="next"`/`"last"`/`"prev"`/`"first"`, create, edit, delete), GET of an issue/PR, the issue's
labels and events (`labeled` events recorded by `add_label`), the repository's workflow artifacts
(`GET .../actions/artifacts?name=`, newest first, seeded by `add_artifact`), and `POST /graphql`
for the `minimizeComment` mutation, a `nodes(ids:)` query for `isMinimized` and the
`issueOrPullRequest(number:) { comments(first:, after:) { nodes { databaseId viewerDidAuthor } } }`
query (cursor-paginated; `viewerDidAuthor` is true for comments written by `login`, the token's
identity). `GET /user` answers like GitHub: 403 "Resource not accessible by integration" for an app
installation token (a `login` ending in `[bot]`, like the Actions GITHUB_TOKEN), the user otherwise.
`graphql_authorship=False` makes the authorship query fail (an old GitHub Enterprise Server).
Everything else on `/graphql` answers with GraphQL-style `errors`.

    with GitHubAPI(token="t0k") as gh:
        gh.add_pr("octo", "repo", 7, labels=["costguard:skip"])
        gh.inject(502, times=2)                      # the next two requests fail
        client = GitHubClient("t0k", api_url=gh.url)
        ...
        gh.comments("octo", "repo", 7)               # state, for assertions
        gh.requests                                  # every request seen (method, path, ...)

`GitHubAPI(prefix="/api/v3")` serves the REST API under a path prefix the way GitHub Enterprise
Server does (`https://HOST/api/v3/...`), with GraphQL at `/api/graphql`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

DOCS = "https://docs.github.com/rest"
BODY_LIMIT = 65536
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30
_CLASSIFIERS = {"SPAM", "ABUSE", "OFF_TOPIC", "OUTDATED", "DUPLICATE", "RESOLVED", "LOW_QUALITY"}


@dataclass
class Request:
    """One request as the double saw it (headers keep their original case in `raw_headers`)."""

    method: str
    path: str  # full path as sent, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON when possible, else the raw text (or None)

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class _Injection:
    status: int
    body: Any
    headers: dict[str, str]
    method: str | None
    path: str | None
    process: bool
    query: str | None = None

    def matches(self, method: str, path: str, body: Any = None) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.query is not None:
            text = body.get("query") if isinstance(body, dict) else None
            if not isinstance(text, str) or self.query not in text:
                return False
        return not (self.path and self.path not in path)


@dataclass
class _Issue:
    owner: str
    repo: str
    number: int
    labels: list[str]
    is_pr: bool
    comment_ids: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    head_sha: str | None = None


class GitHubAPI:
    """The double. Use as a context manager; `.url` is the REST base URL to hand to the client."""

    def __init__(
        self,
        token: str = "test-token",
        *,
        prefix: str = "",
        login: str = "github-actions[bot]",
        read_only: bool = False,
        graphql_authorship: bool = True,
    ) -> None:
        self.token = token
        self.graphql_authorship = graphql_authorship
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.login = login
        self.read_only = read_only
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._issues: dict[tuple[str, str, int], _Issue] = {}
        self._comments: dict[int, dict[str, Any]] = {}
        self._minimized: dict[int, str] = {}
        self._injections: list[_Injection] = []
        self._artifacts: list[dict[str, Any]] = []
        self._next_id = 1000
        self._clock = datetime(2024, 1, 1, tzinfo=timezone.utc)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> GitHubAPI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.api = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def origin(self) -> str:
        assert self._server is not None, "the double is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """REST base URL (what GITHUB_API_URL would hold)."""
        return self.origin + self.prefix

    @property
    def graphql_path(self) -> str:
        if self.prefix.endswith("/api/v3"):
            return self.prefix[: -len("/v3")] + "/graphql"
        return self.prefix + "/graphql"

    @property
    def graphql_url(self) -> str:
        return self.origin + self.graphql_path

    # -- state setup and inspection -----------------------------------------------------------

    def add_pr(
        self,
        owner: str,
        repo: str,
        number: int,
        labels: list[str] | None = None,
        *,
        head_sha: str | None = None,
    ) -> None:
        with self._lock:
            key = (owner.lower(), repo.lower(), int(number))
            self._issues[key] = _Issue(
                owner, repo, int(number), list(labels or []), True, head_sha=head_sha
            )

    def add_label(
        self, owner: str, repo: str, number: int, name: str, *, actor: str = "octocat"
    ) -> None:
        """Label the issue/PR as `actor` did, recording a `labeled` issue event."""
        with self._lock:
            issue = self._issues[(owner.lower(), repo.lower(), int(number))]
            if name not in issue.labels:
                issue.labels.append(name)
            issue.events.append(
                {
                    "id": 9000 + len(issue.events),
                    "event": "labeled",
                    "actor": {"login": actor},
                    "label": {"name": name, "color": "ededed"},
                    "created_at": self._tick(),
                }
            )

    def add_issue(
        self, owner: str, repo: str, number: int, labels: list[str] | None = None
    ) -> None:
        with self._lock:
            key = (owner.lower(), repo.lower(), int(number))
            self._issues[key] = _Issue(owner, repo, int(number), list(labels or []), False)

    def add_comment(
        self, owner: str, repo: str, number: int, body: str, *, user: str = "octocat"
    ) -> dict[str, Any]:
        """Seed a comment directly (no HTTP); `user` defaults to a human, not the token's login."""
        with self._lock:
            issue = self._issues[(owner.lower(), repo.lower(), int(number))]
            return copy.deepcopy(self._create(issue, body, user))

    def add_artifact(
        self,
        owner: str,
        repo: str,
        name: str,
        *,
        run_id: int,
        head_branch: str = "main",
        head_sha: str = "0" * 40,
        fork: bool = False,
        expired: bool = False,
    ) -> dict[str, Any]:
        """Record a workflow artifact as a run uploaded it (newest last; `fork`: a fork PR's run)."""
        with self._lock:
            repo_id = 4242
            self._next_id += 1
            art = {
                "id": self._next_id,
                "node_id": f"MDg6QXJ0aWZhY3Q{run_id}",
                "name": name,
                "size_in_bytes": 1024,
                "url": f"{self.url}/repos/{owner}/{repo}/actions/artifacts/{self._next_id}",
                "archive_download_url": f"{self.url}/repos/{owner}/{repo}/actions/artifacts/"
                f"{self._next_id}/zip",
                "expired": expired,
                "created_at": self._tick(),
                "workflow_run": {
                    "id": run_id,
                    "repository_id": repo_id,
                    "head_repository_id": repo_id + 1 if fork else repo_id,
                    "head_branch": head_branch,
                    "head_sha": head_sha,
                },
                "_repo": (owner.lower(), repo.lower()),
            }
            self._artifacts.append(art)
            return {k: v for k, v in art.items() if not k.startswith("_")}

    def set_minimized(self, comment_id: int, reason: str = "OUTDATED") -> None:
        with self._lock:
            self._minimized[int(comment_id)] = reason

    def comments(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        """Current comments of the issue/PR, oldest first, each with an extra `minimized` key."""
        with self._lock:
            issue = self._issues[(owner.lower(), repo.lower(), int(number))]
            out = []
            for cid in issue.comment_ids:
                c = copy.deepcopy(self._comments[cid])
                c["minimized"] = cid in self._minimized
                out.append(c)
            return out

    def inject(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        process: bool = False,
        query: str | None = None,
    ) -> None:
        """Queue a canned response for the next matching request(s).

        `method`/`path` (a substring of the request path) restrict which requests it hits;
        `query`, a substring of a GraphQL request's query, restricts it further.
        `process=True` first performs the request for real and then answers with the injected
        response anyway (a 502 after the write happened: the ambiguous failure).
        """
        if body is None:
            body = {"message": _REASONS.get(status, "Error"), "documentation_url": DOCS}
        with self._lock:
            for _ in range(times):
                self._injections.append(
                    _Injection(status, body, dict(headers or {}), method, path, process, query)
                )

    def writes(self) -> list[Request]:
        """Requests that change state: REST POST/PATCH/DELETE and GraphQL mutations (a GraphQL
        query is a POST that changes nothing)."""
        return [
            r
            for r in self.requests
            if r.method in ("POST", "PATCH", "DELETE")
            and not (
                r.path.endswith("/graphql")
                and isinstance(r.body, dict)
                and not str(r.body.get("query", "")).lstrip().startswith("mutation")
            )
        ]

    def requests_for(self, method: str, path_part: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # -- request handling ------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        text = raw.decode("utf-8", errors="replace") if raw else None
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = Request(method, split.path, query, headers, body)
        with self._lock:
            self.requests.append(req)
            injection = next(
                (i for i in self._injections if i.matches(method, split.path, body)), None
            )
            if injection is not None:
                self._injections.remove(injection)
        if injection is not None and not injection.process:
            _send(h, injection.status, injection.body, injection.headers)
            return
        status, payload, extra = self._route(req)
        if injection is not None:
            _send(h, injection.status, injection.body, injection.headers)
            return
        _send(h, status, payload, extra)

    def _route(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        auth = req.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() not in ("bearer", "token") or given.strip() != self.token:
            return 401, {"message": "Bad credentials", "documentation_url": DOCS}, {}
        if req.method == "POST" and req.path == self.graphql_path:
            return self._graphql(req)
        if not req.path.startswith(self.prefix + "/"):
            return _not_found()
        path = req.path[len(self.prefix) :]
        if path == "/user" and req.method == "GET":
            if self.login.endswith("[bot]"):
                return _forbidden()
            return 200, {"login": self.login, "id": 77, "type": "User"}, {}
        with self._lock:
            m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/issues/comments/(\d+)", path)
            if m:
                return self._comment_route(req, m.group(1), m.group(2), int(m.group(3)))
            m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/actions/artifacts", path)
            if m and req.method == "GET":
                return self._list_artifacts(req, m.group(1), m.group(2))
            m = re.fullmatch(
                r"/repos/([^/]+)/([^/]+)/(issues|pulls)/(\d+)(/comments|/labels|/events)?", path
            )
            if m:
                owner, repo, kind, number, sub = m.groups()
                issue = self._issues.get((owner.lower(), repo.lower(), int(number)))
                if issue is None or (kind == "pulls" and not issue.is_pr):
                    return _not_found()
                if sub == "/comments":
                    if req.method == "GET":
                        return self._list(req, issue)
                    if req.method == "POST":
                        return self._post_comment(req, issue)
                elif sub == "/events" and req.method == "GET" and kind == "issues":
                    return self._page(req, copy.deepcopy(issue.events))
                elif sub == "/labels" and req.method == "GET":
                    labels = [_label(name, i) for i, name in enumerate(issue.labels)]
                    return self._page(req, labels)
                elif sub is None and req.method == "GET":
                    return 200, self._issue_json(issue, kind), {}
        return _not_found()

    def _comment_route(
        self, req: Request, owner: str, repo: str, cid: int
    ) -> tuple[int, Any, dict[str, str]]:
        c = self._comments.get(cid)
        if c is None or (c["_owner"], c["_repo"]) != (owner.lower(), repo.lower()):
            return _not_found()
        if req.method == "GET":
            return 200, _public(c), {}
        if req.method in ("PATCH", "DELETE") and self.read_only:
            return _forbidden()
        if req.method == "PATCH":
            body = (req.body or {}).get("body") if isinstance(req.body, dict) else None
            error = _validate_body(body)
            if error:
                return error
            c["body"] = body
            c["updated_at"] = self._tick()
            return 200, _public(c), {}
        if req.method == "DELETE":
            del self._comments[cid]
            self._minimized.pop(cid, None)
            for issue in self._issues.values():
                if cid in issue.comment_ids:
                    issue.comment_ids.remove(cid)
            return 204, None, {}
        return _not_found()

    def _post_comment(self, req: Request, issue: _Issue) -> tuple[int, Any, dict[str, str]]:
        if self.read_only:
            return _forbidden()
        body = req.body.get("body") if isinstance(req.body, dict) else None
        error = _validate_body(body)
        if error:
            return error
        c = self._create(issue, body, self.login)
        return 201, _public(c), {"Location": c["url"]}

    def _list(self, req: Request, issue: _Issue) -> tuple[int, Any, dict[str, str]]:
        items = [_public(self._comments[cid]) for cid in issue.comment_ids]
        return self._page(req, items)

    def _list_artifacts(
        self, req: Request, owner: str, repo: str
    ) -> tuple[int, Any, dict[str, str]]:
        """GitHub lists artifacts newest first, wrapped in {total_count, artifacts}."""
        name = req.query.get("name")
        found = [
            {k: v for k, v in a.items() if not k.startswith("_")}
            for a in reversed(self._artifacts)
            if a["_repo"] == (owner.lower(), repo.lower()) and (name is None or a["name"] == name)
        ]
        status, chunk, headers = self._page(req, found)
        if status != 200:
            return status, chunk, headers
        return 200, {"total_count": len(found), "artifacts": chunk}, headers

    def _page(self, req: Request, items: list[Any]) -> tuple[int, Any, dict[str, str]]:
        try:
            per_page = int(req.query.get("per_page", DEFAULT_PER_PAGE))
            page = int(req.query.get("page", 1))
        except ValueError:
            return 422, {"message": "Invalid request.", "documentation_url": DOCS}, {}
        per_page = max(1, min(MAX_PER_PAGE, per_page))
        page = max(1, page)
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers: dict[str, str] = {}
        if len(items) > per_page:
            base = self.origin + req.path

            def link(p: int) -> str:
                q = dict(req.query)
                q.update({"per_page": str(per_page), "page": str(p)})
                return f"<{base}?{urlencode(q)}>"

            rels = []
            if page > 1:
                rels.append(f'{link(min(page - 1, last))}; rel="prev"')
            if page < last:
                rels.append(f'{link(page + 1)}; rel="next"')
                rels.append(f'{link(last)}; rel="last"')
            if page > 1:
                rels.append(f'{link(1)}; rel="first"')
            headers["Link"] = ", ".join(rels)
        return 200, chunk, headers

    def _graphql(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(req.body, dict) or not isinstance(req.body.get("query"), str):
            return 400, {"message": "Problems parsing JSON", "documentation_url": DOCS}, {}
        query: str = req.body["query"]
        variables = req.body.get("variables") or {}
        with self._lock:
            if re.search(r"\bminimizeComment\s*\(", query):
                return self._gql_minimize(query, variables)
            if re.search(r"\bnodes\s*\(\s*ids\s*:", query):
                return self._gql_nodes(variables)
            if "viewerDidAuthor" in query and self.graphql_authorship:
                return self._gql_comments(variables)
        field_name = re.findall(r"\{\s*(\w+)", query)
        name = field_name[0] if field_name else "?"
        return (
            200,
            {
                "errors": [
                    {
                        "path": ["query", name],
                        "extensions": {"code": "undefinedField", "fieldName": name},
                        "locations": [{"line": 1, "column": 1}],
                        "message": f"Field '{name}' doesn't exist on type 'Query'",
                    }
                ]
            },
            {},
        )

    def _gql_minimize(self, query: str, variables: dict[str, Any]) -> tuple[int, Any, dict]:
        # subjectId/classifier either inline in the query or passed as variables
        subject = _gql_arg(query, variables, "subjectId")
        classifier = _gql_arg(query, variables, "classifier")
        if classifier not in _CLASSIFIERS:
            return (
                200,
                {
                    "errors": [
                        {
                            "message": f"Argument 'classifier' on InputObject 'MinimizeCommentInput' "
                            f"has an invalid value ({classifier}).",
                        }
                    ]
                },
                {},
            )
        cid = self._by_node_id(subject)
        if cid is None:
            return (
                200,
                {
                    "data": {"minimizeComment": None},
                    "errors": [
                        {
                            "type": "NOT_FOUND",
                            "path": ["minimizeComment"],
                            "message": f"Could not resolve to a node with the global id of '{subject}'",
                        }
                    ],
                },
                {},
            )
        if self.read_only:
            return (
                200,
                {
                    "data": {"minimizeComment": None},
                    "errors": [
                        {
                            "type": "FORBIDDEN",
                            "path": ["minimizeComment"],
                            "message": "Resource not accessible by integration",
                        }
                    ],
                },
                {},
            )
        self._minimized[cid] = classifier
        return (
            200,
            {
                "data": {
                    "minimizeComment": {
                        "clientMutationId": None,
                        "minimizedComment": {
                            "isMinimized": True,
                            "minimizedReason": classifier.lower(),
                        },
                    }
                }
            },
            {},
        )

    def _gql_comments(self, variables: dict[str, Any]) -> tuple[int, Any, dict]:
        issue = self._issues.get(
            (
                str(variables.get("owner", "")).lower(),
                str(variables.get("name", "")).lower(),
                int(variables.get("number") or 0),
            )
        )
        if issue is None:
            return (
                200,
                {
                    "data": {"repository": None},
                    "errors": [
                        {"type": "NOT_FOUND", "message": "Could not resolve to a Repository"}
                    ],
                },
                {},
            )
        start = int(variables.get("after") or 0)
        page = issue.comment_ids[start : start + 100]
        nodes = [
            {
                "databaseId": cid,
                "viewerDidAuthor": self._comments[cid]["user"]["login"] == self.login,
            }
            for cid in page
        ]
        more = start + 100 < len(issue.comment_ids)
        conn = {
            "pageInfo": {"hasNextPage": more, "endCursor": str(start + len(page))},
            "nodes": nodes,
        }
        return 200, {"data": {"repository": {"issueOrPullRequest": {"comments": conn}}}}, {}

    def _gql_nodes(self, variables: dict[str, Any]) -> tuple[int, Any, dict]:
        ids = next((v for v in variables.values() if isinstance(v, list)), [])
        nodes = []
        for node_id in ids:
            cid = self._by_node_id(node_id)
            if cid is None:
                nodes.append(None)
            else:
                nodes.append({"id": node_id, "isMinimized": cid in self._minimized})
        return 200, {"data": {"nodes": nodes}}, {}

    # -- helpers --------------------------------------------------------------------------------

    def _tick(self) -> str:
        self._clock += timedelta(seconds=1)
        return self._clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _create(self, issue: _Issue, body: str, user: str) -> dict[str, Any]:
        self._next_id += 1
        cid = self._next_id
        now = self._tick()
        api = f"{self.url}/repos/{issue.owner}/{issue.repo}"
        kind = "pull" if issue.is_pr else "issues"
        c = {
            "id": cid,
            "node_id": f"IC_kwDOdouble{cid:08d}",
            "url": f"{api}/issues/comments/{cid}",
            "html_url": f"https://github.example/{issue.owner}/{issue.repo}/{kind}/"
            f"{issue.number}#issuecomment-{cid}",
            "issue_url": f"{api}/issues/{issue.number}",
            "body": body,
            "user": {"login": user, "type": "Bot" if user.endswith("[bot]") else "User"},
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
            "_owner": issue.owner.lower(),
            "_repo": issue.repo.lower(),
        }
        self._comments[cid] = c
        issue.comment_ids.append(cid)
        return c

    def _by_node_id(self, node_id: Any) -> int | None:
        for cid, c in self._comments.items():
            if c["node_id"] == node_id:
                return cid
        return None

    def _issue_json(self, issue: _Issue, kind: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "number": issue.number,
            "state": "open",
            "title": f"#{issue.number}",
            "labels": [_label(n, i) for i, n in enumerate(issue.labels)],
            "comments": len(issue.comment_ids),
            "html_url": f"https://github.example/{issue.owner}/{issue.repo}/"
            f"{'pull' if issue.is_pr else 'issues'}/{issue.number}",
        }
        if kind == "pulls":
            data["head"] = {
                "sha": issue.head_sha or f"{issue.number:040d}",
                "ref": f"pr-{issue.number}",
            }
        if issue.is_pr and kind == "issues":
            data["pull_request"] = {"url": f"{self.url}/repos/{issue.owner}/{issue.repo}/pulls/"}
        return data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def _dispatch(self, method: str) -> None:
        self.server.api._handle(self, method)  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")


_REASONS = {
    400: "Bad Request",
    401: "Bad credentials",
    403: "Forbidden",
    404: "Not Found",
    422: "Validation Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _send(h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str]) -> None:
    if status == 204 or payload is None:
        data = b""
    elif isinstance(payload, (bytes, bytearray)):
        data = bytes(payload)
    elif isinstance(payload, str):
        data = payload.encode("utf-8")
    else:
        data = json.dumps(payload).encode("utf-8")
    h.send_response(status)
    names = {k.lower() for k in headers}
    if "content-type" not in names and data:
        h.send_header("Content-Type", "application/json; charset=utf-8")
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    if data:
        h.wfile.write(data)


def _not_found() -> tuple[int, Any, dict[str, str]]:
    return 404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"}, {}


def _forbidden() -> tuple[int, Any, dict[str, str]]:
    return (
        403,
        {
            "message": "Resource not accessible by integration",
            "documentation_url": f"{DOCS}/issues/comments#create-an-issue-comment",
            "status": "403",
        },
        {"x-accepted-github-permissions": "issues=write; pull_requests=write"},
    )


def _validate_body(body: Any) -> tuple[int, Any, dict[str, str]] | None:
    if not isinstance(body, str) or not body:
        return (
            422,
            {
                "message": 'Invalid request.\n\n"body" wasn\'t supplied.',
                "documentation_url": DOCS,
                "status": "422",
            },
            {},
        )
    if len(body) > BODY_LIMIT:
        return (
            422,
            {
                "message": "Validation Failed",
                "errors": [
                    {
                        "resource": "IssueComment",
                        "code": "custom",
                        "field": "body",
                        "message": f"body is too long (maximum is {BODY_LIMIT} characters)",
                    }
                ],
                "documentation_url": DOCS,
                "status": "422",
            },
            {},
        )
    return None


def _public(c: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in c.items() if not k.startswith("_")}


def _label(name: str, i: int) -> dict[str, Any]:
    return {"id": 5000 + i, "node_id": f"LA_double{i}", "name": name, "color": "ededed"}


def _gql_arg(query: str, variables: dict[str, Any], name: str) -> Any:
    # `name: $var`, `name: "x"` or `name: ENUM` -- not the `$name: Type` variable declaration
    m = re.search(rf"(?<![\w$]){name}\s*:\s*(\$\w+|\"[^\"]*\"|\w+)", query)
    if not m:
        return None
    token = m.group(1)
    if token.startswith("$"):
        return variables.get(token[1:])
    return token.strip('"')
