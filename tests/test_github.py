"""costguard.integrations.github against the GitHub API double (tests/doubles/github_api.py) over real HTTP."""

from __future__ import annotations

import logging
import time

import pytest

from costguard.errors import GitHubError
from costguard.integrations.github import (
    COMMENT_LIMIT,
    CommentResult,
    GitHubClient,
    compose_body,
    gh_len,
    graphql_url_for,
    is_ours,
    marker,
    truncate_body,
    upsert_comment,
)
from tests.doubles.github_api import GitHubAPI

TOKEN = "ghs_S3cretTok3nValue_do_not_leak_1234567890"
REPO = "octo/widgets"
PR = 7


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_GRAPHQL_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gh():
    with GitHubAPI(token=TOKEN) as api:
        api.add_pr("octo", "widgets", PR, labels=["cost-ok", "area/router"])
        yield api


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(gh: GitHubAPI, sleeps: Sleeps):
    with GitHubClient(TOKEN, api_url=gh.url, sleep=sleeps) as c:
        yield c


def ours(gh: GitHubAPI, tag: str = "default") -> list[dict]:
    return [c for c in gh.comments("octo", "widgets", PR) if is_ours(c["body"], marker(tag))]


def writes(gh: GitHubAPI) -> list[str]:
    return [r.method for r in gh.writes()]


# -- upsert: create, update, skip --------------------------------------------------------------


def test_first_upsert_creates_second_updates_in_place(gh: GitHubAPI, client: GitHubClient):
    first = upsert_comment(client, REPO, PR, "## Cost\n+3 %")
    assert first.action == "created"
    assert first.url and first.url.endswith(f"#issuecomment-{first.comment_id}")

    second = upsert_comment(client, REPO, PR, "## Cost\n+5 %")
    assert second == CommentResult("updated", first.comment_id, first.url)

    comments = gh.comments("octo", "widgets", PR)
    assert len(comments) == 1
    body = comments[0]["body"]
    assert body.startswith(marker("default") + "\n")
    assert body.count(marker("default")) == 1
    assert body.endswith("+5 %")
    assert writes(gh) == ["POST", "PATCH"]


def test_skip_if_unchanged_makes_no_write(gh: GitHubAPI, client: GitHubClient):
    first = upsert_comment(client, REPO, PR, "same report", skip_if_unchanged=True)
    before = len(gh.requests)
    again = upsert_comment(client, REPO, PR, "same report", skip_if_unchanged=True)
    assert again == CommentResult("unchanged", first.comment_id, first.url)
    later = gh.requests[before:]
    assert [r.method for r in later] == ["GET", "POST"]  # listing + authorship query only
    assert "viewerDidAuthor" in later[1].body["query"]
    # a changed body is written
    assert upsert_comment(client, REPO, PR, "new", skip_if_unchanged=True).action == "updated"


def test_skip_if_unchanged_also_applies_to_new_modes(gh: GitHubAPI, client: GitHubClient):
    upsert_comment(client, REPO, PR, "r", mode="new")
    res = upsert_comment(client, REPO, PR, "r", mode="hide-and-new", skip_if_unchanged=True)
    assert res.action == "unchanged"
    assert len(gh.comments("octo", "widgets", PR)) == 1
    assert writes(gh) == ["POST"]


def test_update_edits_newest_and_leaves_older_duplicates(gh: GitHubAPI, client: GitHubClient):
    old = gh.add_comment("octo", "widgets", PR, compose_body("old 1"), user=gh.login)
    gh.add_comment("octo", "widgets", PR, "a human comment")
    newer = gh.add_comment("octo", "widgets", PR, compose_body("old 2"), user=gh.login)
    res = upsert_comment(client, REPO, PR, "fresh")
    assert res.action == "updated" and res.comment_id == newer["id"]
    by_id = {c["id"]: c["body"] for c in gh.comments("octo", "widgets", PR)}
    assert by_id[old["id"]].endswith("old 1")
    assert by_id[newer["id"]].endswith("fresh")
    assert len(by_id) == 3


def test_update_falls_back_to_create_when_comment_vanished(gh: GitHubAPI, client: GitHubClient):
    upsert_comment(client, REPO, PR, "v1")
    gh.inject(404, method="PATCH")
    res = upsert_comment(client, REPO, PR, "v2")
    assert res.action == "created"
    assert writes(gh) == ["POST", "PATCH", "POST"]


# -- modes --------------------------------------------------------------------------------------


def test_mode_new_always_creates(gh: GitHubAPI, client: GitHubClient):
    a = upsert_comment(client, REPO, PR, "r1", mode="new")
    b = upsert_comment(client, REPO, PR, "r1", mode="new")
    assert a.action == b.action == "created" and a.comment_id != b.comment_id
    assert len(ours(gh)) == 2


def test_mode_hide_and_new_minimizes_previous(gh: GitHubAPI, client: GitHubClient):
    first = upsert_comment(client, REPO, PR, "r1", mode="hide-and-new")
    second = upsert_comment(client, REPO, PR, "r2", mode="hide-and-new")
    assert second.action == "created" and not second.warnings
    state = {c["id"]: c["minimized"] for c in gh.comments("octo", "widgets", PR)}
    assert state == {first.comment_id: True, second.comment_id: False}
    mutation = [
        r for r in gh.requests_for("POST", "/graphql") if "minimizeComment" in r.body["query"]
    ]
    assert len(mutation) == 1
    assert "classifier: OUTDATED" in mutation[0].body["query"]
    node_id = next(
        c["node_id"] for c in gh.comments("octo", "widgets", PR) if c["id"] == first.comment_id
    )
    assert mutation[0].body["variables"] == {"subjectId": node_id}

    # a third run hides only the second one: the already-hidden first one is not touched again
    upsert_comment(client, REPO, PR, "r3", mode="hide-and-new")
    mutations = [
        r for r in gh.requests_for("POST", "/graphql") if "minimizeComment" in r.body["query"]
    ]
    assert len(mutations) == 2
    assert [c["minimized"] for c in gh.comments("octo", "widgets", PR)] == [True, True, False]


def test_hide_failure_is_a_warning_not_an_error(gh: GitHubAPI, client: GitHubClient):
    upsert_comment(client, REPO, PR, "r1")
    forbidden = {
        "data": {"minimizeComment": None},
        "errors": [{"type": "FORBIDDEN", "message": "Resource not accessible by integration"}],
    }
    gh.inject(200, body=forbidden, path="/graphql", times=2, query="minimizeComment")
    res = upsert_comment(client, REPO, PR, "r2", mode="hide-and-new")
    assert res.action == "created"
    assert len(res.warnings) == 1 and "pull-requests: write" in res.warnings[0]
    assert len(ours(gh)) == 2


def test_mode_delete_and_new_deletes_previous_only_ours(gh: GitHubAPI, client: GitHubClient):
    human = gh.add_comment("octo", "widgets", PR, "LGTM")
    other_tag = upsert_comment(client, REPO, PR, "nightly", tag="nightly")
    upsert_comment(client, REPO, PR, "r1", mode="new")
    upsert_comment(client, REPO, PR, "r2", mode="new")
    res = upsert_comment(client, REPO, PR, "r3", mode="delete-and-new")
    ids = [c["id"] for c in gh.comments("octo", "widgets", PR)]
    assert ids == [human["id"], other_tag.comment_id, res.comment_id]
    assert len(gh.requests_for("DELETE")) == 2


def test_unknown_mode_is_rejected(client: GitHubClient):
    with pytest.raises(GitHubError, match="unknown comment mode"):
        upsert_comment(client, REPO, PR, "x", mode="replace")  # type: ignore[arg-type]


# -- finding our comment -------------------------------------------------------------------------


def test_pagination_finds_our_comment_on_page_two(gh: GitHubAPI, client: GitHubClient):
    for i in range(120):
        gh.add_comment("octo", "widgets", PR, f"chatter {i}")
    mine = gh.add_comment("octo", "widgets", PR, compose_body("old"), user=gh.login)
    for i in range(30):
        gh.add_comment("octo", "widgets", PR, f"more {i}")
    assert len(client.list_comments(REPO, PR)) == 151

    res = upsert_comment(client, REPO, PR, "new report")
    assert res.action == "updated" and res.comment_id == mine["id"]
    lists = gh.requests_for("GET", "/comments")
    assert lists[-2].query == {"per_page": "100"}
    assert lists[-1].query == {"per_page": "100", "page": "2"}
    assert len(gh.comments("octo", "widgets", PR)) == 151


def test_double_link_headers_follow_github(gh: GitHubAPI):
    import requests

    for i in range(75):
        gh.add_comment("octo", "widgets", PR, f"c{i}")
    url = f"{gh.url}/repos/octo/widgets/issues/{PR}/comments"
    auth = {"Authorization": f"token {TOKEN}"}
    r1 = requests.get(url, headers=auth, timeout=5)
    assert len(r1.json()) == 30  # GitHub's default page size
    assert r1.links["next"]["url"].endswith("per_page=30&page=2")
    assert r1.links["last"]["url"].endswith("page=3")
    r3 = requests.get(r1.links["last"]["url"], headers=auth, timeout=5)
    assert len(r3.json()) == 15 and "next" not in r3.links and "prev" in r3.links
    big = requests.get(url, params={"per_page": 500}, headers=auth, timeout=5)
    assert len(big.json()) == 75 and "link" not in big.headers  # capped at 100, one page


def test_foreign_comment_quoting_the_marker_is_not_ours(gh: GitHubAPI, client: GitHubClient):
    mark = marker("default")
    middle = gh.add_comment("octo", "widgets", PR, f"Look what the bot wrote:\n{mark}\n| a | b |")
    end = gh.add_comment("octo", "widgets", PR, f"fixture text\n{mark}")
    quoted = gh.add_comment("octo", "widgets", PR, f"> {mark}\n> quoted reply")
    res = upsert_comment(client, REPO, PR, "report")
    assert res.action == "created"
    bodies = {c["id"]: c["body"] for c in gh.comments("octo", "widgets", PR)}
    assert bodies[middle["id"]].startswith("Look what")
    assert bodies[end["id"]] == f"fixture text\n{mark}"
    assert bodies[quoted["id"]].startswith("> ")
    assert writes(gh) == ["POST"]


def test_tags_are_independent(gh: GitHubAPI, client: GitHubClient):
    a = upsert_comment(client, REPO, PR, "A", tag="a")
    ab = upsert_comment(client, REPO, PR, "AB", tag="ab")
    nested = upsert_comment(client, REPO, PR, "A/B", tag="a/b")
    assert len({a.comment_id, ab.comment_id, nested.comment_id}) == 3
    assert upsert_comment(client, REPO, PR, "A2", tag="a").comment_id == a.comment_id
    assert len(gh.comments("octo", "widgets", PR)) == 3


def test_marker_rules():
    assert marker("nightly-1.2/gpu_a") == "<!-- costguard:tag=nightly-1.2/gpu_a -->"
    for bad in ("", "a b", "x-->", "<t>", "a\nb", "é", "t" * 101):
        with pytest.raises(GitHubError):
            marker(bad)
    body = compose_body(f"{marker('x')}\nhello\n{marker('x')}", "x")
    assert body == f"{marker('x')}\nhello"
    assert is_ours(body, marker("x")) and not is_ours(body, marker("y"))
    assert not is_ours(None, marker("x"))


# -- retries and rate limits -------------------------------------------------------------------


def test_retries_502_then_succeeds(gh: GitHubAPI, client: GitHubClient, sleeps: Sleeps):
    gh.inject(502, times=2)
    res = upsert_comment(client, REPO, PR, "after hiccup")
    assert res.action == "created"
    assert sleeps == [1.0, 2.0]  # exponential backoff
    assert len(gh.comments("octo", "widgets", PR)) == 1


def test_connection_error_is_retried_then_one_line(gh: GitHubAPI, sleeps: Sleeps):
    url = gh.url
    gh.stop()  # nothing listens any more
    c = GitHubClient(TOKEN, api_url=url, sleep=sleeps, max_retries=2)
    with pytest.raises(GitHubError) as info:
        c.list_comments(REPO, PR)
    msg = str(info.value)
    assert "\n" not in msg and "after 3 attempts" in msg and "ConnectionError" in msg
    assert sleeps == [1.0, 2.0]


def test_retries_exhausted_is_one_line(gh: GitHubAPI, sleeps: Sleeps):
    gh.inject(503, body={"message": "Service\nUnavailable"}, times=10)
    c = GitHubClient(TOKEN, api_url=gh.url, sleep=sleeps, max_retries=2)
    with pytest.raises(GitHubError) as info:
        c.pr_labels(REPO, PR)
    msg = str(info.value)
    assert "\n" not in msg
    assert "still failing after 3 attempts" in msg and "503 Service Unavailable" in msg


def test_ambiguous_create_failure_does_not_duplicate(gh: GitHubAPI, client: GitHubClient):
    # the POST is carried out, but the reply is lost as a 502: no second copy may be posted
    gh.inject(502, method="POST", process=True)
    res = upsert_comment(client, REPO, PR, "exactly once")
    assert res.action == "created"
    assert len(gh.comments("octo", "widgets", PR)) == 1
    assert res.comment_id == gh.comments("octo", "widgets", PR)[0]["id"]
    assert writes(gh) == ["POST"]


def test_secondary_rate_limit_with_retry_after(gh: GitHubAPI, client: GitHubClient, sleeps: Sleeps):
    gh.inject(
        403,
        body={"message": "You have exceeded a secondary rate limit. Please wait a few minutes."},
        headers={"retry-after": "1"},
    )
    assert client.pr_labels(REPO, PR) == ["cost-ok", "area/router"]
    assert sleeps == [1.0]


def test_rate_limit_reset_header_is_honoured(gh: GitHubAPI, client: GitHubClient, sleeps: Sleeps):
    reset = int(time.time()) + 2
    gh.inject(
        429,
        body={"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )
    assert client.list_comments(REPO, PR) == []
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 4


def test_secondary_rate_limit_without_hint_waits_a_minute(
    gh: GitHubAPI, client: GitHubClient, sleeps: Sleeps
):
    gh.inject(403, body={"message": "You have exceeded a secondary rate limit."})
    client.list_comments(REPO, PR)
    assert sleeps == [60.0]


def test_far_rate_limit_reset_fails_fast(gh: GitHubAPI, client: GitHubClient, sleeps: Sleeps):
    gh.inject(
        403,
        body={"message": "API rate limit exceeded for installation."},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 3600)},
    )
    with pytest.raises(GitHubError, match="rate limit") as info:
        client.list_comments(REPO, PR)
    assert "\n" not in str(info.value)
    assert sleeps == []


# -- error messages and token hygiene -------------------------------------------------------------


def test_401_message(gh: GitHubAPI):
    c = GitHubClient("ghp_wrongtoken_zzz", api_url=gh.url, sleep=lambda s: None)
    with pytest.raises(GitHubError) as info:
        c.list_comments(REPO, PR)
    assert str(info.value) == "GitHub rejected the token (401 Bad credentials): check GITHUB_TOKEN"
    assert "ghp_wrongtoken_zzz" not in str(info.value)


def test_403_read_only_fork_token_message(gh: GitHubAPI, client: GitHubClient):
    gh.read_only = True
    with pytest.raises(GitHubError) as info:
        upsert_comment(client, REPO, PR, "report")
    msg = str(info.value)
    assert "\n" not in msg
    assert "403 Resource not accessible by integration" in msg
    assert "pull-requests: write" in msg and "issues: write" in msg
    assert "fork" in msg and "workflow_run" in msg


def test_404_message_for_unknown_repo_and_pr(gh: GitHubAPI, client: GitHubClient):
    for repo, pr in (("octo/nope", PR), (REPO, 999)):
        with pytest.raises(GitHubError) as info:
            upsert_comment(client, repo, pr, "x")
        assert str(info.value) == (
            f"repository {repo} or pull request #{pr} not found, or the token cannot see it"
        )


def test_422_carries_githubs_message(client: GitHubClient):
    with pytest.raises(GitHubError) as info:
        client.create_comment(REPO, PR, "x" * (COMMENT_LIMIT + 1))
    msg = str(info.value)
    assert "\n" not in msg
    assert "422 Validation Failed: body is too long (maximum is 65536 characters)" in msg


def test_missing_token_says_set_github_token():
    with pytest.raises(GitHubError, match="set GITHUB_TOKEN"):
        GitHubClient()
    with pytest.raises(GitHubError, match="set GITHUB_TOKEN"):
        GitHubClient("   ")


def test_malformed_token_is_rejected_without_echoing_it():
    # requests would raise InvalidHeader quoting the whole "Bearer <token>" value
    for bad in ("ghp_abc\ndef", "ghp_abc def", "ghp_äbc"):
        with pytest.raises(GitHubError) as info:
            GitHubClient(bad, api_url="http://127.0.0.1:9")
        assert "abc" not in str(info.value) and "\n" not in str(info.value)


def test_empty_body_is_refused(client: GitHubClient):
    with pytest.raises(GitHubError, match="empty"):
        upsert_comment(client, REPO, PR, "  \n")


def test_bad_arguments_are_clean_errors(client: GitHubClient):
    with pytest.raises(GitHubError, match="OWNER/NAME"):
        client.list_comments("widgets", PR)
    with pytest.raises(GitHubError, match="pull request number"):
        client.list_comments(REPO, 0)
    with pytest.raises(GitHubError, match="http"):
        GitHubClient(TOKEN, api_url="api.github.com")


def test_token_never_leaks(
    gh: GitHubAPI, sleeps: Sleeps, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
):
    caplog.set_level(logging.DEBUG)
    c = GitHubClient(TOKEN, api_url=gh.url, sleep=sleeps, max_retries=1)
    texts = [repr(c), str(c)]
    gh.inject(502, body={"message": f"echoing {TOKEN}"})  # even a server echoing it back
    upsert_comment(c, REPO, PR, "r1", mode="hide-and-new")
    upsert_comment(c, REPO, PR, "r2", mode="hide-and-new")
    failures = [
        lambda: gh.inject(502, body={"message": f"boom {TOKEN}"}, times=5),
        lambda: gh.inject(403, body={"message": f"nope {TOKEN}"}),
        lambda: gh.inject(404),
        lambda: gh.inject(422, body={"message": "Validation Failed", "errors": [TOKEN]}),
        lambda: gh.inject(418, body={"message": TOKEN}),
        lambda: gh.inject(200, body={"errors": [{"message": TOKEN}]}, path="/graphql"),
    ]
    for arm in failures:
        arm()
        with pytest.raises(GitHubError) as info:
            if "graphql" in repr(gh._injections[0].path):
                c.minimize_comment("IC_x")
            else:
                c.list_comments(REPO, PR)
        texts += [str(info.value), repr(info.value), info.value.message]
    with pytest.raises(GitHubError) as info:
        GitHubClient("ghp_other", api_url=gh.url).list_comments(REPO, PR)
    texts.append(str(info.value))
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    assert any("retrying" in t for t in texts)  # we did log something
    for t in texts:
        assert TOKEN not in t
    assert "ghp_other" not in "".join(texts)
    # but the double did receive it, as a Bearer token
    assert gh.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


# -- configuration: env, GHES -----------------------------------------------------------------------


def test_env_token_and_api_url(gh: GitHubAPI, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", gh.url + "/")
    c = GitHubClient()
    assert c.api_url == gh.url and c.graphql_url == gh.url + "/graphql"
    assert upsert_comment(c, REPO, PR, "via env").action == "created"
    assert gh.requests[-1].headers["x-github-api-version"] == "2022-11-28"


def test_graphql_url_resolution(monkeypatch: pytest.MonkeyPatch):
    assert graphql_url_for("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url_for("https://ghe.corp/api/v3/") == "https://ghe.corp/api/graphql"
    assert GitHubClient(TOKEN).graphql_url == "https://api.github.com/graphql"
    ghes = GitHubClient(TOKEN, api_url="https://ghe.corp/api/v3")
    assert ghes.graphql_url == "https://ghe.corp/api/graphql"
    monkeypatch.setenv("GITHUB_API_URL", "https://ghe.corp/api/v3")
    monkeypatch.setenv("GITHUB_GRAPHQL_URL", "https://ghe.corp/custom/graphql")
    assert GitHubClient(TOKEN).graphql_url == "https://ghe.corp/custom/graphql"
    # an explicit api_url wins over env GraphQL settings that belong to another host
    assert GitHubClient(TOKEN, api_url="https://x.test").graphql_url == "https://x.test/graphql"
    assert GitHubClient(TOKEN, graphql_url="https://g.test/gql").graphql_url == "https://g.test/gql"


def test_ghes_prefix(sleeps: Sleeps):
    with GitHubAPI(token=TOKEN, prefix="/api/v3") as ghes:
        ghes.add_pr("corp", "svc", 3)
        for i in range(105):
            ghes.add_comment("corp", "svc", 3, f"c{i}")
        c = GitHubClient(TOKEN, api_url=ghes.url, sleep=sleeps)
        assert c.graphql_url == ghes.origin + "/api/graphql"
        upsert_comment(c, "corp/svc", 3, "one", mode="hide-and-new")
        upsert_comment(c, "corp/svc", 3, "two", mode="hide-and-new")
        assert [x["minimized"] for x in ghes.comments("corp", "svc", 3)[-2:]] == [True, False]
        assert all(r.path.startswith(("/api/v3/", "/api/graphql")) for r in ghes.requests)
        assert any(r.query.get("page") == "2" for r in ghes.requests)


def test_pagination_refuses_to_follow_links_to_other_hosts(gh: GitHubAPI, client: GitHubClient):
    gh.inject(200, body=[], headers={"Link": '<http://evil.test/x?page=2>; rel="next"'})
    with pytest.raises(GitHubError, match="refusing to send the token"):
        client.list_comments(REPO, PR)


def test_pr_labels(client: GitHubClient):
    assert client.pr_labels(REPO, PR) == ["cost-ok", "area/router"]


def test_graphql_errors_are_clean(gh: GitHubAPI, client: GitHubClient):
    with pytest.raises(GitHubError, match="Could not resolve to a node"):
        client.minimize_comment("IC_does_not_exist")


# -- truncation -------------------------------------------------------------------------------------


def _report(lines: int, unit: str = "| fixture | 0.0012 $ | +3 % |") -> str:
    head = "## costguard: +4.2 % monthly\n\n| tier | base | head |\n|---|---|---|\n"
    rows = "".join(f"{unit} {i}\n" for i in range(lines))
    return head + rows + "\n**Policy: ❌ budget exceeded**"


def test_truncate_keeps_head_tail_and_note():
    body = _report(5000)
    assert len(body) > COMMENT_LIMIT
    out = truncate_body(body)
    assert gh_len(out) <= COMMENT_LIMIT - 200
    assert out.startswith("## costguard: +4.2 % monthly")
    assert out.endswith("**Policy: ❌ budget exceeded**")
    assert "characters of details truncated (GitHub's comment limit is 65,536 characters)" in out
    assert "see the job summary or the report artifact" in out
    removed = int(out.split("… ")[1].split(" characters")[0].replace(",", ""))
    start, end = out.index("\n\n> ✂️"), out.index("…\n\n", out.index("truncated")) + 3
    header = "| tier | base | head |\n|---|---|---|\n"
    assert out[end:].startswith(header)  # the cut table keeps its header after the note
    kept = out[:start] + "\n" + out[end + len(header) :]
    assert len(body) - removed == len(kept)  # the count of dropped characters is exact
    # cut at line boundaries: every line kept is a whole line of the original
    assert set(kept.splitlines()) <= set(body.splitlines())


def test_truncate_leaves_short_bodies_alone():
    assert truncate_body("short") == "short"
    assert truncate_body("x" * (COMMENT_LIMIT - 200)) == "x" * (COMMENT_LIMIT - 200)


def test_truncate_multibyte_and_astral_characters():
    body = _report(4000, unit="| 日本語のフィクスチャ 🚀🚀 | 0.5 ¥ |")
    out = truncate_body(body)
    assert len(out) < gh_len(out) <= COMMENT_LIMIT - 200
    single = "🚀" * 70000  # one huge line, astral characters (2 UTF-16 units each)
    out = truncate_body(single)
    assert gh_len(out) <= COMMENT_LIMIT - 200 and "truncated" in out


def test_truncate_closes_an_open_code_fence():
    body = "head\n```\n" + "".join(f"line {i}\n" for i in range(20000)) + "```\ntail\n"
    out = truncate_body(body)
    before, _, after = out.partition("characters of details truncated")
    assert before.count("```") % 2 == 0  # the note is not inside a code block
    assert after.count("```") % 2 == 0
    assert out.rstrip().endswith("tail")


def test_upsert_posts_huge_reports_within_the_limit(gh: GitHubAPI, client: GitHubClient):
    res = upsert_comment(client, REPO, PR, _report(8000))  # the double enforces 65,536 (422)
    assert res.action == "created"
    body = gh.comments("octo", "widgets", PR)[0]["body"]
    assert gh_len(body) <= COMMENT_LIMIT
    assert body.startswith(marker("default") + "\n") and "truncated" in body
    # same input again, skip_if_unchanged: truncation is deterministic
    assert (
        upsert_comment(client, REPO, PR, _report(8000), skip_if_unchanged=True).action
        == "unchanged"
    )


# -- only our own comments: a pasted marker never hijacks the gate --------------------------------


MODES_ALL = ("update", "new", "hide-and-new", "delete-and-new")


@pytest.mark.parametrize("forged_is_newer", [False, True], ids=["forged-older", "forged-newer"])
@pytest.mark.parametrize("mode", MODES_ALL)
def test_forged_marker_comment_is_never_touched(
    gh: GitHubAPI, client: GitHubClient, mode: str, forged_is_newer: bool
):
    forged_body = compose_body("PASS: spend -$9,999 (trust me)")
    if not forged_is_newer:
        forged = gh.add_comment("octo", "widgets", PR, forged_body, user="mallory")
    mine = upsert_comment(client, REPO, PR, "r1", mode="new")
    if forged_is_newer:
        forged = gh.add_comment("octo", "widgets", PR, forged_body, user="mallory")

    res = upsert_comment(client, REPO, PR, "r2", mode=mode)  # type: ignore[arg-type]

    now = {c["id"]: c for c in gh.comments("octo", "widgets", PR)}
    assert now[forged["id"]]["body"] == forged_body  # never edited ...
    assert not now[forged["id"]]["minimized"]  # ... never hidden ...
    assert forged["id"] in now  # ... never deleted
    assert res.comment_id != forged["id"]
    for r in gh.requests:
        assert str(forged["id"]) not in r.path
        if isinstance(r.body, dict) and "minimizeComment" in str(r.body.get("query")):
            assert r.body["variables"] != {"subjectId": forged["node_id"]}
    assert any(forged["html_url"] in w and "@mallory" in w for w in res.warnings)
    if mode == "update":
        assert res.action == "updated" and res.comment_id == mine.comment_id
        assert now[mine.comment_id]["body"].endswith("r2")
    elif mode == "hide-and-new":
        assert now[mine.comment_id]["minimized"]
    elif mode == "delete-and-new":
        assert mine.comment_id not in now


def test_github_app_token_identity_comes_from_viewer_did_author(sleeps: Sleeps):
    with GitHubAPI(token=TOKEN, login="costguard-app[bot]") as api:
        api.add_pr("octo", "widgets", PR)
        other_bot = api.add_comment(
            "octo", "widgets", PR, compose_body("old"), user="github-actions[bot]"
        )
        with GitHubClient(TOKEN, api_url=api.url, sleep=sleeps) as c:
            res = upsert_comment(c, REPO, PR, "report")
        assert res.action == "created" and res.comment_id != other_bot["id"]
        assert len(res.warnings) == 1 and "@github-actions[bot]" in res.warnings[0]
        assert not api.requests_for("GET", "/user")  # GraphQL answered; no REST identity call


def test_personal_token_without_graphql_falls_back_to_get_user(sleeps: Sleeps):
    with GitHubAPI(token=TOKEN, login="octocat", graphql_authorship=False) as api:
        api.add_pr("octo", "widgets", PR)
        mine = api.add_comment("octo", "widgets", PR, compose_body("old"), user="octocat")
        forged = api.add_comment("octo", "widgets", PR, compose_body("forged"), user="mallory")
        with GitHubClient(TOKEN, api_url=api.url, sleep=sleeps) as c:
            res = upsert_comment(c, REPO, PR, "report")
        assert res.action == "updated" and res.comment_id == mine["id"]
        assert "GET /user" in res.warnings[0] and forged["html_url"] in res.warnings[0]


def test_actions_token_without_graphql_uses_the_explicit_author_setting(
    sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
):
    with GitHubAPI(token=TOKEN, graphql_authorship=False) as api:  # github-actions[bot]
        api.add_pr("octo", "widgets", PR)
        mine = api.add_comment("octo", "widgets", PR, compose_body("old"), user=api.login)
        forged = api.add_comment("octo", "widgets", PR, compose_body("forged"), user="mallory")
        with GitHubClient(TOKEN, api_url=api.url, sleep=sleeps) as c:
            # neither GraphQL nor GET /user (403 for app tokens) can say: nothing is ours
            blind = upsert_comment(c, REPO, PR, "report", mode="delete-and-new")
            assert blind.action == "created"
            assert len(api.comments("octo", "widgets", PR)) == 3  # nothing deleted
            assert all("COSTGUARD_COMMENT_AUTHOR" in w for w in blind.warnings)
            monkeypatch.setenv("COSTGUARD_COMMENT_AUTHOR", "github-actions[bot]")
            res = upsert_comment(c, REPO, PR, "report 2", mode="delete-and-new")
        left = {x["id"] for x in api.comments("octo", "widgets", PR)}
        assert forged["id"] in left and mine["id"] not in left and blind.comment_id not in left
        assert any(forged["html_url"] in w for w in res.warnings)


def _markdown_problems(text: str) -> list[str]:
    """Unbalanced <details> and table rows without a header, as GitHub would render them."""
    import re

    problems = []
    depth = 0
    for m in re.finditer(r"<(/?)details\b", text):
        depth += -1 if m.group(1) else 1
        if depth < 0:
            problems.append("a </details> without its <details>")
            depth = 0
    if depth:
        problems.append(f"{depth} <details> never closed")
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            block = lines[i:j]
            if len(block) < 2 or not re.match(r"^\s*\|?\s*:?-{3,}", block[1]):
                problems.append(f"table rows without a header at line {i + 1}: {block[0][:40]}")
            i = j
        else:
            i += 1
    return problems


@pytest.mark.parametrize("cut_at", [0.2, 0.5, 0.8])
def test_truncated_comment_stays_valid_markdown(cut_at: float):
    sections = []
    for s in range(6):
        rows = "".join(
            f"| fixture-{s}-{i} | {i * 0.001:.4f} $ | +{i % 7} % |\n" for i in range(900)
        )
        sections.append(
            f"<details><summary>Section {s}</summary>\n\n| fixture | cost | delta |\n"
            f"|---|---:|---:|\n{rows}\n</details>\n"
        )
    body = "## costguard: +4.2 % monthly\n\n" + "\n".join(sections) + "\n**Policy: ✅**"
    assert not _markdown_problems(body)
    limit = int(len(body) * cut_at)
    out = truncate_body(body, limit, reserve=0)
    assert gh_len(out) <= limit
    assert "truncated" in out
    assert _markdown_problems(out) == []
