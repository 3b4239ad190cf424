"""Quality through the real pipeline and CLI: offline runs, unmeasured fixtures, floors that break
the build, the PR comment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costguard import api
from costguard.compare.diff import Baseline, diff_reports
from costguard.render.markdown import render_comment
from tests.conftest import run_cli

QUALITY_FIXTURES = """\
suite: support
fixtures:
  - id: refund-window
    messages: [{role: user, content: "How long do I have to return boots?"}]
    expect:
      output_tokens: 40
      reference: "You can return unworn boots within 30 days for a full refund."
      assertions:
        - contains: "30 days"
        - icontains: full refund
          weight: 2
  - id: sentiment
    messages: [{role: user, content: "Classify: 'Arrived early, great boots.'"}]
    expect:
      output_tokens: 2
      assertions: [{equals: positive}, {max_output_tokens: 3}]
  - id: no-assertions
    messages: [{role: user, content: "Hello"}]
    expect: {output_tokens: 5}
"""


@pytest.fixture
def quality_project(project_dir: Path) -> Path:
    (project_dir / "fixtures" / "quality.yaml").write_text(QUALITY_FIXTURES)
    return project_dir


def test_offline_run_without_recordings_counts_unmeasured_fixtures(quality_project: Path) -> None:
    report = api.run(api.load_project(quality_project / "costguard.yaml"))
    quality = report.get("quality")
    assert quality is not None
    assert (quality["score"], quality["fixtures"], quality["measured"], quality["unmeasured"]) == (
        None,
        2,
        0,
        2,
    )
    assert quality["unmeasured_reasons"] == {"no recorded response on tier small": 2}
    by_id = {r["id"]: r for r in report.records}
    assert by_id["refund-window"]["quality"]["measured"] is False
    assert "quality" not in by_id["no-assertions"] and "quality" not in by_id["reset-password"]
    assert any(
        w.startswith("quality is unmeasured for 2 of 2 fixtures with assertions")
        for w in report.get("warnings")
    )
    assert "latency" not in report.data  # nothing measured it


def test_cli_run_says_how_many_fixtures_were_unmeasured(quality_project: Path) -> None:
    proc = run_cli("run", cwd=quality_project)
    assert proc.returncode == 0, proc.stderr
    assert (
        "Quality: not measured (2 fixtures with assertions, none with a response to score)"
        in proc.stdout
    )


def test_diff_and_comment_carry_the_unmeasured_count(quality_project: Path) -> None:
    project = api.load_project(quality_project / "costguard.yaml")
    base, head = api.run(project), api.run(project)
    diff = diff_reports(Baseline(base, "base"), head)
    quality = diff.model.quality
    assert quality is not None
    assert quality.unmeasured.head == 2 and quality.fixtures.head == 2
    assert "Quality is not (fully) measured for 2 of 2 fixtures with assertions" in render_comment(
        diff
    )


def test_on_unmeasured_fail_breaks_the_build_offline(quality_project: Path) -> None:
    (quality_project / "p.yaml").write_text(
        "quality: {on_unmeasured: fail}\nrules:\n  floor: {metric: quality_score, min: 0.5}\n"
    )
    proc = run_cli("check", "--policy", "p.yaml", "--format", "json", cwd=quality_project)
    assert proc.returncode == 1, proc.stderr
    (verdict,) = json.loads(proc.stdout)["verdicts"]
    assert (
        verdict["status"] == "fail"
        and "2 fixture(s) in scope have no measured quality" in verdict["message"]
    )
    (quality_project / "p.yaml").write_text("rules:\n  floor: {metric: quality_score, min: 0.5}\n")
    proc = run_cli("check", "--policy", "p.yaml", cwd=quality_project)
    assert proc.returncode == 0 and "WARN floor: nothing measured" in proc.stdout
