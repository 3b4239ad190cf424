"""GitHub Actions plumbing: workflow-command escaping, annotations, outputs, summary, event context."""

from __future__ import annotations

import json
from pathlib import Path

from costguard.cli.options import COMMENT_MODES
from costguard.integrations.actions import (
    annotation_lines,
    append_summary,
    escape_data,
    escape_property,
    outputs,
    pull_request_context,
    write_outputs,
)
from costguard.integrations.github import MODES
from costguard.integrations.pull_request import find_acknowledgement


def _diff(verdicts: list[dict]) -> dict:
    return {
        "base": {"available": True},
        "changed": True,
        "estimated": False,
        "totals": {
            "cost_per_month": {"base": 100.0, "head": 112.5, "delta": 12.5, "delta_pct": 12.5}
        },
        "policy": {"policy": "p.yaml", "verdict": "fail", "verdicts": verdicts},
    }


def _verdict(rule: str, status: str, line: int | None, file: str = "policies/budget.yaml") -> dict:
    return {
        "rule": rule,
        "metric": "monthly_spend_increase",
        "status": status,
        "line": line,
        "file": file,
        "message": "+$12.50 breaks <= +$10.00\n100% of it",
    }


def test_escaping_follows_the_workflow_command_rules() -> None:
    assert escape_data("50% of a\r\nb") == "50%25 of a%0D%0Ab"
    assert escape_property("a:b,c%") == "a%3Ab%2Cc%25"


def test_annotations_point_at_the_rule_line(tmp_path: Path) -> None:
    policy = tmp_path / "policies" / "budget.yaml"
    lines = annotation_lines(
        _diff(
            [
                _verdict("spend, increase", "fail", 12, str(policy)),
                _verdict("soft", "warn", 20, str(policy)),
                _verdict("ok", "pass", 3, str(policy)),
                _verdict("later", "skip", 5, str(policy)),
            ]
        ),
        workspace=str(tmp_path),
    )
    assert lines == [
        "::error file=policies/budget.yaml,line=12,title=costguard%3A spend%2C increase::"
        "spend, increase (monthly_spend_increase): +$12.50 breaks <= +$10.00%0A100%25 of it",
        "::warning file=policies/budget.yaml,line=20,title=costguard%3A soft::"
        "soft (monthly_spend_increase): +$12.50 breaks <= +$10.00%0A100%25 of it",
    ]
    assert annotation_lines({"policy": None}) == []


def test_outputs_and_summary_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert write_outputs({"a": "1"}) is False and append_summary("x") is False  # outside Actions
    values = outputs(_diff([]), report_path="r.json", diff_path=None)
    assert values == {
        "monthly-cost": "112.50",
        "base-monthly-cost": "100.00",
        "delta-usd": "12.50",
        "delta-pct": "12.50",
        "verdict": "fail",
        "changed": "true",
        "has-baseline": "true",
        "estimated": "false",
        "report-path": "r.json",
        "diff-path": "",
    }
    out = tmp_path / "output"
    assert write_outputs({"a": "1", "multi": "x\ny"}, str(out))
    text = out.read_text()
    assert text.startswith("a=1\nmulti<<costguard_") and "\nx\ny\ncostguard_" in text
    summary = tmp_path / "summary.md"
    assert append_summary("## one", str(summary)) and append_summary("## two\n", str(summary))
    assert summary.read_text() == "## one\n## two\n"


def test_pull_request_context_from_the_event(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "action": "labeled",
                "label": {"name": "cost-ok"},
                "sender": {"login": "bob"},
                "pull_request": {
                    "number": 42,
                    "base": {"sha": "abc123", "ref": "main"},
                    "labels": [{"name": "cost-ok"}, {"name": "area/router"}],
                },
            }
        )
    )
    ctx = pull_request_context(
        {"GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": "octo/widgets"}
    )
    assert (ctx.repo, ctx.number, ctx.base_sha, ctx.base_ref) == (
        "octo/widgets",
        42,
        "abc123",
        "main",
    )
    assert ctx.labels == ["cost-ok", "area/router"]
    ack = find_acknowledgement(
        "cost-ok",
        ctx.labels,
        event_action=ctx.action,
        event_label=ctx.label,
        event_sender=ctx.sender,
    )
    assert (
        ack is not None and ack.describe() == "acknowledged by the label 'cost-ok' (added by @bob)"
    )
    assert find_acknowledgement("other", ctx.labels) is None
    assert find_acknowledgement("cost-ok", ctx.labels).by is None  # type: ignore[union-attr]
    push = tmp_path / "push.json"
    push.write_text(json.dumps({"ref": "refs/heads/main"}))
    assert pull_request_context({"GITHUB_EVENT_PATH": str(push)}).number is None
    assert pull_request_context({}).repo is None


def test_cli_comment_modes_match_the_client() -> None:
    assert COMMENT_MODES == MODES
