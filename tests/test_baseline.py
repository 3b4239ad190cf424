"""Baselines: a git ref projected in a temporary worktree, report files, artifact directories, none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costguard import api
from costguard.compare.baseline import baseline_from_path
from costguard.errors import ConfigError, UsageError
from tests.conftest import TEMPLATE_V1, TEMPLATE_V2, git, minilm_dir, run_cli


def _count(text: str) -> int:
    """Prompt tokens of one user message, counted independently of costguard."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(minilm_dir()) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return len(tok.encode(f"<|user|>\n{text}\n<|assistant|>\n", add_special_tokens=False).ids)


def test_diff_base_ref_reports_exactly_the_fixtures_the_template_edit_touched(
    git_project: Path,
) -> None:
    proc = run_cli(
        "diff", "--base-ref", "HEAD~1", "--format", "json", "--out", "diff.json", cwd=git_project
    )
    assert proc.returncode == 0, proc.stderr
    diff = json.loads(proc.stdout)
    assert json.loads((git_project / "diff.json").read_text()) == diff
    sha = git(git_project, "rev-parse", "HEAD~1").strip()
    assert (
        diff["base"]["available"] is True
        and diff["base"]["source"] == f"git ref HEAD~1 ({sha[:12]})"
    )

    items = {f["id"]: f for f in diff["fixtures"]["items"]}
    assert set(items) == {"ticket-a", "ticket-b"}
    assert (
        diff["fixtures"]["unchanged"] == 4
        and diff["fixtures"]["added"] == diff["fixtures"]["removed"] == 0
    )
    total_delta = 0.0
    for fid, ticket in (("ticket-a", "A-1"), ("ticket-b", "B-22")):
        f = items[fid]
        old = _count(TEMPLATE_V1.replace("{{ ticket }}", ticket))
        new = _count(TEMPLATE_V2.replace("{{ ticket }}", ticket))
        assert f["input_tokens"]["base"] == old and f["input_tokens"]["head"] == new
        assert f["input_tokens"]["delta"] == new - old > 0
        assert f["output_tokens"]["delta"] == 0 and f["prompt_changed"] is True
        # small tier: $0.10 per million input tokens, for each of the fixture's monthly requests
        expected = (new - old) * 0.10 / 1e6 * f["monthly_requests"]["head"]
        assert f["cost_per_month"]["delta"] == pytest.approx(expected)
        total_delta += expected
    assert diff["totals"]["cost_per_month"]["delta"] == pytest.approx(total_delta)
    # the throw-away worktree is gone
    assert git(git_project, "worktree", "list").count("\n") == 1


def test_base_ref_without_costguard_config_is_no_baseline_yet(git_project: Path) -> None:
    (git_project / "README.md").write_text("project\n")
    git(git_project, "checkout", "-q", "--orphan", "empty")
    git(git_project, "rm", "-rq", "--cached", ".")
    git(git_project, "add", "README.md")
    git(git_project, "commit", "-qm", "before costguard")
    git(git_project, "checkout", "-qf", "main")
    proc = run_cli("diff", "--base-ref", "empty", "--format", "markdown", cwd=git_project)
    assert proc.returncode == 0, proc.stderr
    assert "no baseline yet: costguard.yaml does not exist at empty" in proc.stderr
    assert "(no baseline yet)" in proc.stdout and "**No baseline yet:**" in proc.stdout


def test_unknown_ref_and_no_repository_are_one_line_errors(
    git_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    proc = run_cli("diff", "--base-ref", "origin/nope", cwd=git_project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "git ref 'origin/nope' not found" in proc.stderr and "fetch-depth" in proc.stderr
    outside = tmp_path_factory.mktemp("not-a-git_project")
    with pytest.raises(UsageError, match="needs a git repository"):
        api.load_baseline(base_ref="HEAD", config=outside / "costguard.yaml")


def test_bad_config_at_the_base_names_the_ref_and_line(git_project: Path) -> None:
    cfg = git_project / "costguard.yaml"
    good = cfg.read_text()
    cfg.write_text(
        good.replace(
            "traffic: {requests_per_month: 1000000, seed: 3}",
            "traffic: {requests_per_month: 1000000, seed: 3, bogus: 1}",
        )
    )
    git(git_project, "commit", "-qam", "broken")
    cfg.write_text(good)
    git(git_project, "commit", "-qam", "fixed")
    proc = run_cli("diff", "--base-ref", "HEAD~1", cwd=git_project)
    assert proc.returncode == 2, proc.stdout
    line = proc.stderr.strip()
    assert line.startswith("costguard: error: HEAD~1:costguard.yaml:") and "bogus" in line
    assert "(in the base HEAD~1)" in line and "costguard-base-" not in line
    assert git(git_project, "worktree", "list").count("\n") == 1


def test_report_file_artifact_directory_and_missing_path(
    project_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp_path = tmp_path_factory.mktemp("downloads")
    assert (
        run_cli(
            "run", "-q", "--out", "artifact/nested/costguard-report.json", cwd=project_dir
        ).returncode
        == 0
    )
    found = baseline_from_path(project_dir / "artifact")
    assert found.available and found.source.endswith("artifact/nested/costguard-report.json")
    assert baseline_from_path(
        project_dir / "artifact" / "nested" / "costguard-report.json"
    ).available

    renamed = tmp_path / "dl"
    renamed.mkdir()
    (project_dir / "artifact" / "nested" / "costguard-report.json").rename(
        renamed / "base-run.json"
    )
    (renamed / "other.json").write_text('{"not": "a report"}')
    assert baseline_from_path(renamed).available  # found by content, not by name

    empty = tmp_path / "empty"
    empty.mkdir()
    none = baseline_from_path(empty)
    assert not none.available and "no costguard RunReport in artifact directory" in (
        none.reason or ""
    )
    missing = baseline_from_path(tmp_path / "never-uploaded.json")
    assert not missing.available and "does not exist" in (missing.reason or "")

    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="broken.json:1: not valid JSON"):
        baseline_from_path(tmp_path / "broken.json")
