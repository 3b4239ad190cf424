"""REST and GraphQL plumbing of the client: URLs, replies, error messages without the token,
pagination links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from costguard.errors import GitHubError

DEFAULT_API_URL = "https://api.github.com"


API_VERSION = "2022-11-28"


_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


_REPO_RE = re.compile(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)")


_LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="([^"]*)"')


_RETRY_5XX = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class _Reply:
    status: int
    data: Any
    headers: dict[str, str]  # lower-cased names


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
