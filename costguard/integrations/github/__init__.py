"""The GitHub client behind the PR comment (docs/pull-requests.md).

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

from costguard.integrations.github.body import (
    COMMENT_LIMIT,
    MARKER_RESERVE,
    MAX_TAG_LENGTH,
    compose_body,
    gh_len,
    is_ours,
    marker,
    truncate_body,
)
from costguard.integrations.github.client import AUTHOR_ENV, PER_PAGE, GitHubClient, log
from costguard.integrations.github.comments import (
    MODES,
    Action,
    CommentResult,
    Mode,
    own_comments,
    upsert_comment,
)
from costguard.integrations.github.http import API_VERSION, DEFAULT_API_URL, graphql_url_for

__all__ = [
    "API_VERSION",
    "AUTHOR_ENV",
    "Action",
    "COMMENT_LIMIT",
    "CommentResult",
    "DEFAULT_API_URL",
    "GitHubClient",
    "MARKER_RESERVE",
    "MAX_TAG_LENGTH",
    "MODES",
    "Mode",
    "PER_PAGE",
    "compose_body",
    "gh_len",
    "graphql_url_for",
    "is_ours",
    "log",
    "marker",
    "own_comments",
    "truncate_body",
    "upsert_comment",
]
