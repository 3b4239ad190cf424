"""`costguard comment github` and `costguard ci` end to end: real subprocesses, real git, real HTTP.

The GitHub API is the local double (tests/doubles/github_api.py) on 127.0.0.1, reached through
GITHUB_API_URL exactly as a GitHub Enterprise Server would be.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from costguard.integrations.github import is_ours, marker
from tests.conftest import git, run_cli, write
from tests.doubles.github_api import GitHubAPI

TOKEN = "ghs_PrC0mm3ntT0k3n_never_print_me_0987654321"
REPO = "octo/widgets"

PASSING = """\
rules:
  budget:
    metric: monthly_spend
    max: 100000
  spend_increase_pct:
    metric: monthly_spend_increase_pct
    max: 50
"""
OVER_BUDGET = """\
rules:
  budget:
    metric: monthly_spend
    max: 100000
  spend_increase:
    metric: monthly_spend_increase
    max: 0.01
"""


@pytest.fixture
def gh():
    with GitHubAPI(token=TOKEN, prefix="/api/v3") as api:
        for pr in (7, 8, 9):
            api.add_pr("octo", "widgets", pr)
        yield api


def _env(gh: GitHubAPI, **extra: str) -> dict[str, str]:
    return {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": gh.url, **extra}


def _comment(
    project: Path, gh: GitHubAPI, *args: str, pr: int = 7, **env: str
) -> subprocess.CompletedProcess:
    proc = run_cli(
        "comment",
        "github",
        "--repo",
        REPO,
        "--pr",
        str(pr),
        *args,
        cwd=project,
        env=_env(gh, **env),
    )
    assert TOKEN not in proc.stdout + proc.stderr
    return proc


def ours(gh: GitHubAPI, pr: int = 7, tag: str = "default") -> list[dict]:
    return [c for c in gh.comments("octo", "widgets", pr) if is_ours(c["body"], marker(tag))]


def writes(gh: GitHubAPI) -> list[str]:
    return [r.route for r in gh.writes()]


def test_first_run_creates_second_updates_in_place_third_leaves_it(
    git_project: Path, gh: GitHubAPI
) -> None:
    write(git_project / "policy.yaml", PASSING)
    first = _comment(git_project, gh, "--base-ref", "HEAD~1", "--policy", "policy.yaml")
    assert first.returncode == 0, first.stderr
    assert (
        "posted the PR comment: https://github.example/octo/widgets/pull/7#issuecomment-"
        in first.stderr
    )
    [c] = ours(gh)
    assert c["body"].startswith(marker("default") + "\n## 💰 Projected monthly spend +$")
    assert "ticket-a" in c["body"] and "✅ passed" in c["body"]

    # the PR gets another push: the template grows again (working tree = the new head)
    (git_project / "prompts" / "summary.jinja").write_text(
        (git_project / "prompts" / "summary.jinja").read_text() + " Mention the customer tier."
    )
    second = _comment(git_project, gh, "--base-ref", "HEAD~1", "--policy", "policy.yaml")
    assert second.returncode == 0, second.stderr
    assert "updated the PR comment in place" in second.stderr
    [c2] = ours(gh)
    assert c2["id"] == c["id"] and c2["body"] != c["body"]
    assert writes(gh) == [
        "POST /api/v3/repos/octo/widgets/issues/7/comments",
        f"PATCH /api/v3/repos/octo/widgets/issues/comments/{c['id']}",
    ]

    third = _comment(git_project, gh, "--base-ref", "HEAD~1", "--policy", "policy.yaml")
    assert "already up to date" in third.stderr and len(writes(gh)) == 2
    assert len(gh.comments("octo", "widgets", 7)) == 1


def test_skip_no_diff_leaves_a_no_change_run_alone(git_project: Path, gh: GitHubAPI) -> None:
    write(git_project / "policy.yaml", PASSING)
    # nothing changed against HEAD: no comment is created
    quiet = _comment(
        git_project, gh, "--base-ref", "HEAD", "--policy", "policy.yaml", "--skip-no-diff", pr=8
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "nothing changed: no PR comment posted (--skip-no-diff)" in quiet.stderr
    assert ours(gh, 8) == [] and writes(gh) == []
    # without the flag the same run does post ("no change" is still news on a PR without a comment)
    loud = _comment(git_project, gh, "--base-ref", "HEAD", "--policy", "policy.yaml", pr=8)
    assert loud.returncode == 0 and "Projected monthly spend unchanged" in ours(gh, 8)[0]["body"]
    # a comment that already says so is not touched again
    again = _comment(
        git_project, gh, "--base-ref", "HEAD", "--policy", "policy.yaml", "--skip-no-diff", pr=8
    )
    assert "already up to date" in again.stderr and len(writes(gh)) == 1


def test_skip_no_diff_still_refreshes_a_stale_comment(git_project: Path, gh: GitHubAPI) -> None:
    assert _comment(git_project, gh, "--base-ref", "HEAD~1").returncode == 0  # "+$..." on the PR
    stale = ours(gh)[0]
    proc = _comment(
        git_project, gh, "--base-ref", "HEAD", "--skip-no-diff"
    )  # the change was reverted
    assert "updated the PR comment in place" in proc.stderr
    [fresh] = ours(gh)
    assert fresh["id"] == stale["id"] and "Projected monthly spend unchanged" in fresh["body"]


def test_over_budget_change_posts_the_comment_then_exits_1(
    git_project: Path, gh: GitHubAPI
) -> None:
    write(git_project / "policy.yaml", OVER_BUDGET)
    proc = _comment(git_project, gh, "--base-ref", "HEAD~1", "--policy", "policy.yaml", pr=9)
    assert proc.returncode == 1, proc.stderr
    [c] = ours(gh, 9)
    assert "❌ failed" in c["body"] and "| ❌ | spend&#95;increase |" in c["body"]
    assert "posted the PR comment" in proc.stderr


def test_acknowledge_label_turns_the_failure_into_a_warning(
    git_project: Path, gh: GitHubAPI
) -> None:
    write(git_project / "policy.yaml", OVER_BUDGET)
    gh.add_label("octo", "widgets", 9, "cost-increase-ok", actor="alice")
    proc = _comment(
        git_project,
        gh,
        "--base-ref",
        "HEAD~1",
        "--policy",
        "policy.yaml",
        "--acknowledge-label",
        "cost-increase-ok",
        pr=9,
    )
    assert proc.returncode == 0, proc.stderr
    body = ours(gh, 9)[0]["body"]
    assert "⚠️ passed with warnings" in body
    assert "Regressions acknowledged by the label cost-increase-ok (added by @&#8203;alice)" in body
    assert "| ⚠️ | spend&#95;increase |" in body
    # without the label on the PR the option changes nothing
    other = _comment(
        git_project,
        gh,
        "--base-ref",
        "HEAD~1",
        "--policy",
        "policy.yaml",
        "--acknowledge-label",
        "cost-increase-ok",
        pr=8,
    )
    assert other.returncode == 1


def test_posting_a_finished_diff_file_and_dry_run(git_project: Path, gh: GitHubAPI) -> None:
    write(git_project / "policy.yaml", OVER_BUDGET)
    made = run_cli(
        "diff",
        "--base-ref",
        "HEAD~1",
        "--policy",
        "policy.yaml",
        "--out",
        "d.json",
        "--format",
        "json",
        cwd=git_project,
    )
    assert made.returncode == 0, made.stderr  # `diff` reports, it does not gate
    assert json.loads(made.stdout)["policy"]["verdict"] == "fail"
    dry = run_cli(
        "comment",
        "github",
        "--diff",
        "d.json",
        "--dry-run",
        "--tag",
        "nightly",
        cwd=git_project,
        env={"GITHUB_TOKEN": TOKEN},
    )
    assert dry.returncode == 1 and TOKEN not in dry.stdout + dry.stderr
    assert dry.stdout.startswith(marker("nightly") + "\n## 💰 Projected monthly spend +$")
    assert gh.requests == []
    posted = _comment(git_project, gh, "--diff", "d.json", "--tag", "nightly")
    assert posted.returncode == 1 and ours(gh, 7, "nightly")[0]["body"] == dry.stdout.rstrip("\n")
    mixed = _comment(git_project, gh, "--diff", "d.json", "--policy", "policy.yaml")
    assert mixed.returncode == 2 and "--diff posts a finished DiffReport" in mixed.stderr


def test_token_never_appears_in_output_or_errors(project_dir: Path, gh: GitHubAPI) -> None:
    from costguard import api
    from costguard.compare.diff import Baseline

    diff, _ = api.compare(
        api.run(api.load_project(project_dir / "costguard.yaml")), Baseline(None, "none", "x")
    )
    diff.write(project_dir / "d.json")
    cases = [
        (
            _env(gh, GITHUB_TOKEN="ghs_wrong_" + TOKEN),
            "7",
            "GitHub rejected the token (401 Bad credentials)",
        ),
        (_env(gh), "404", "repository octo/widgets or pull request #404 not found"),
        (
            {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": "ftp://" + TOKEN},
            "7",
            "must be an http(s) URL",
        ),
        (_env(gh, GITHUB_TOKEN=TOKEN[:12] + " " + TOKEN[12:]), "7", "contains spaces, line breaks"),
        ({}, "7", "no GitHub token: set GITHUB_TOKEN"),
    ]
    for env, pr, needle in cases:
        proc = run_cli(
            "comment",
            "github",
            "--repo",
            REPO,
            "--pr",
            pr,
            "--diff",
            "d.json",
            cwd=project_dir,
            env=env,
        )
        assert proc.returncode == 2, (needle, proc.stdout, proc.stderr)
        assert needle in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert (
            TOKEN not in proc.stdout + proc.stderr and "ghs_wrong_" not in proc.stdout + proc.stderr
        )
        assert TOKEN[12:] not in proc.stdout + proc.stderr
    assert not any(r.method == "POST" for r in gh.requests)


def test_ci_in_a_simulated_pull_request_workflow(
    git_project: Path, gh: GitHubAPI, tmp_path_factory
) -> None:
    runner = tmp_path_factory.mktemp("runner")
    write(git_project / "policies" / "budget.yaml", OVER_BUDGET)
    base_sha = git(git_project, "rev-parse", "HEAD~1").strip()
    event = runner / "event.json"
    event.write_text(
        json.dumps(
            {
                "action": "synchronize",
                "pull_request": {
                    "number": 9,
                    "base": {"sha": base_sha, "ref": "main"},
                    "labels": [],
                },
            }
        )
    )
    env = _env(
        gh,
        GITHUB_ACTIONS="true",
        GITHUB_REPOSITORY=REPO,
        GITHUB_EVENT_PATH=str(event),
        GITHUB_OUTPUT=str(runner / "output"),
        GITHUB_STEP_SUMMARY=str(runner / "summary.md"),
        GITHUB_WORKSPACE=str(git_project),
    )
    proc = run_cli("ci", "--policy", "policies/budget.yaml", cwd=git_project, env=env)
    assert TOKEN not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr
    line = OVER_BUDGET.splitlines().index("  spend_increase:") + 1
    assert (
        f"::error file=policies/budget.yaml,line={line},title=costguard%3A spend_increase::"
        in proc.stdout
    )
    [c] = ours(gh, 9)
    assert f"Compared with the PR base main ({base_sha[:12]})" in c["body"]
    outputs = dict(line.split("=", 1) for line in (runner / "output").read_text().splitlines())
    diff = json.loads((git_project / "costguard-diff.json").read_text())
    assert (
        outputs["verdict"] == "fail"
        and outputs["has-baseline"] == "true"
        and outputs["changed"] == "true"
    )
    assert outputs["monthly-cost"] == f"{diff['totals']['cost_per_month']['head']:.2f}"
    assert outputs["delta-pct"] == f"{diff['totals']['cost_per_month']['delta_pct']:.2f}"
    assert (
        outputs["report-path"] == "costguard-report.json"
        and outputs["diff-path"] == "costguard-diff.json"
    )
    assert outputs["comment-url"] == c["html_url"]
    summary = (runner / "summary.md").read_text()
    assert summary.startswith("## 💰 Projected monthly spend +$") and "costguard:tag" not in summary

    # --fail-on never: same findings, exit 0; no token: no comment, still outputs and summary
    env.pop("GITHUB_TOKEN")
    quiet = run_cli(
        "ci", "--policy", "policies/budget.yaml", "--fail-on", "never", cwd=git_project, env=env
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "not commenting on the PR: GITHUB_TOKEN is not set" in quiet.stderr
    assert len(ours(gh, 9)) == 1


def test_ci_keeps_going_when_the_token_cannot_comment(project_dir: Path, tmp_path_factory) -> None:
    """A fork PR's read-only token: the comment fails, the verdict and outputs still stand."""
    runner = tmp_path_factory.mktemp("runner")
    write(project_dir / "policy.yaml", PASSING)
    with GitHubAPI(token=TOKEN, read_only=True) as ro:
        ro.add_pr("octo", "widgets", 7, labels=["cost-increase-ok"])
        env = {
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_API_URL": ro.url,
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(runner / "output"),
        }
        proc = run_cli(
            "ci",
            "--policy",
            "policy.yaml",
            "--baseline",
            "none.json",
            "--repo",
            REPO,
            "--pr",
            "7",
            "--acknowledge-label",
            "cost-increase-ok",
            cwd=project_dir,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert (
            "costguard: warning: could not post the PR comment: GitHub refused to comment"
            in proc.stderr
        )
        assert "::warning title=costguard::could not post the PR comment" in proc.stdout
        assert TOKEN not in proc.stdout + proc.stderr
        assert ro.comments("octo", "widgets", 7) == []
    outputs = (runner / "output").read_text()
    assert (
        "verdict=pass\n" in outputs
        and "has-baseline=false\n" in outputs
        and "comment-url=\n" in outputs
    )
