"""Regression rules against a baseline, waivers with expiry, and the acknowledge label."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from costguard import api
from costguard.compare.diff import Baseline
from costguard.errors import ConfigError
from costguard.policy.engine import (
    Acknowledgement,
    MetricContext,
    acknowledge,
    evaluate,
    load_policy,
)
from costguard.report.run_report import RunReport
from tests.conftest import run_cli, write

POLICY = """\
rules:
  budget:
    metric: monthly_spend
    max: 100000
  spend_increase:
    metric: monthly_spend_increase
    max: 1.00
  spend_increase_pct:
    metric: monthly_spend_increase_pct
    max: 5
  support_increase:
    metric: suite_spend_increase_pct
    suite: support
    max: 10
  worst_suite:
    metric: suite_spend_increase
    max: 0.50
    level: warn
  quality:
    metric: quality_drop
    max: 1.0
  escalation:
    metric: escalation_rate_increase
    max: 5
"""


@pytest.fixture
def runs(project_dir: Path) -> tuple[RunReport, RunReport]:
    """Base and head where the head's support prompt grew (support spend +~15%)."""
    base = api.run(api.load_project(project_dir / "costguard.yaml"))
    fx = project_dir / "fixtures" / "support.yaml"
    fx.write_text(
        fx.read_text().replace(
            "Where is my order 12345? It has been two weeks.",
            "Where is my order 12345? It has been two weeks. "
            + "I have emailed support several times. " * 20,
        )
    )
    head = api.run(api.load_project(project_dir / "costguard.yaml"))
    return base, head


def _verdicts(
    policy_text: str, path: Path, base: RunReport | None, head: RunReport, **kw: object
) -> dict:
    policy = load_policy(write(path, policy_text))
    result = evaluate(policy, MetricContext(report=head, baseline=base), **kw)  # type: ignore[arg-type]
    return {v.rule: v for v in result.verdicts}


def test_regression_rules_measure_the_diff(
    runs: tuple[RunReport, RunReport], tmp_path: Path
) -> None:
    base, head = runs
    v = _verdicts(POLICY, tmp_path / "p.yaml", base, head)
    delta = head.monthly_cost - base.monthly_cost
    assert delta > 1.0
    assert v["budget"].status == "pass"
    assert v["spend_increase"].status == "fail" and v["spend_increase"].actual == pytest.approx(
        delta
    )
    assert v["spend_increase"].message.startswith(f"+${delta:,.2f} (estimated) breaks <= +$1.00")
    assert v["spend_increase_pct"].actual == pytest.approx(100 * delta / base.monthly_cost)
    support = 100 * delta / base.suites["support"]["cost_per_month"]
    assert support > 10 and v["support_increase"].status == "fail"
    assert v["support_increase"].actual == pytest.approx(support)
    assert (
        v["worst_suite"].status == "warn" and "largest: suite support" in v["worst_suite"].message
    )
    assert (
        v["quality"].status == "skip" and v["quality"].message == "neither run has quality scores"
    )
    assert v["escalation"].status == "pass" and v["escalation"].actual == 0


def test_without_baseline_regression_rules_are_skipped(
    runs: tuple[RunReport, RunReport], tmp_path: Path
) -> None:
    _, head = runs
    v = _verdicts(POLICY, tmp_path / "p.yaml", None, head)
    assert v["budget"].status == "pass"
    for name in (
        "spend_increase",
        "spend_increase_pct",
        "support_increase",
        "quality",
        "escalation",
    ):
        assert (
            v[name].status == "skip"
            and v[name].message == "no baseline yet: nothing to compare with"
        )


def test_quality_drop_and_escalation_increase(
    runs: tuple[RunReport, RunReport], tmp_path: Path
) -> None:
    base, head = runs
    base.data["quality"] = {"score": 0.918, "suites": {"support": {"score": 0.95}}}
    head.data["quality"] = {"score": 0.895, "suites": {"support": {"score": 0.94}}}
    base.data["routing"]["escalation_rate"] = 0.12
    head.data["routing"]["escalation_rate"] = 0.19
    v = _verdicts(
        POLICY + "  support_quality:\n    metric: quality_drop\n    suite: support\n    max: 2\n",
        tmp_path / "p.yaml",
        base,
        head,
    )
    assert v["quality"].status == "fail" and v["quality"].actual == pytest.approx(2.3)
    assert v["quality"].message.startswith("+2.3 pts breaks <= +1.0 pts")
    assert v["support_quality"].status == "pass" and v["support_quality"].actual == pytest.approx(
        1.0
    )
    assert v["escalation"].status == "fail" and v["escalation"].actual == pytest.approx(7.0)


def test_waivers_soften_until_they_expire(
    runs: tuple[RunReport, RunReport], tmp_path: Path
) -> None:
    base, head = runs
    waivers = """\
waivers:
  - rule: spend_increase
    reason: "launch of the ticket summary feature (FIN-42)"
    expires: 2030-06-30
    approved_by: finance
  - rule: support_increase
    reason: "old exception"
    expires: 2020-01-31
  - rule: budget
    reason: "stale"
    expires: 2021-05-01
"""
    v = _verdicts(POLICY + waivers, tmp_path / "p.yaml", base, head, today=dt.date(2030, 6, 30))
    assert v["spend_increase"].status == "warn"
    assert v["spend_increase"].waived_by == (
        "waiver until 2030-06-30, approved by finance: launch of the ticket summary feature (FIN-42)"
    )
    assert v["support_increase"].status == "fail"
    assert "the waiver expired on 2020-01-31 (old exception)" in v["support_increase"].message
    assert (
        v["budget"].status == "pass"
        and "waiver for this rule expired on 2021-05-01: remove it" in v["budget"].message
    )
    # the day after, the first waiver has expired too: the rule fails again
    later = _verdicts(POLICY + waivers, tmp_path / "p.yaml", base, head, today=dt.date(2030, 7, 1))
    assert later["spend_increase"].status == "fail" and later["spend_increase"].waived_by is None


def test_waiver_errors_name_the_line(tmp_path: Path) -> None:
    unknown = (
        POLICY + "waivers:\n  - rule: spend_increase\n    reason: ok\n    expires: 2030-01-01\n"
        "  - rule: no_such_rule\n    reason: x\n    expires: 2030-01-01\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_policy(write(tmp_path / "p.yaml", unknown))
    lines = POLICY.count("\n") + 5
    assert str(exc.value).startswith(
        f"{tmp_path / 'p.yaml'}:{lines}: waivers[1].rule: waiver for unknown rule"
    )
    with pytest.raises(ConfigError, match=r"waivers\[0\]\.expires"):
        load_policy(
            write(
                tmp_path / "q.yaml",
                POLICY + "waivers:\n  - {rule: budget, reason: x, expires: soon}\n",
            )
        )
    with pytest.raises(ConfigError, match=r"waivers\[0\]"):
        load_policy(
            write(
                tmp_path / "r.yaml",
                POLICY + "waivers:\n  - {rule: budget, reason: '  ', expires: 2030-01-01}\n",
            )
        )


def test_acknowledgement_turns_regression_failures_into_warnings(
    runs: tuple[RunReport, RunReport], tmp_path: Path
) -> None:
    base, head = runs
    tight = POLICY.replace("max: 100000", "max: 1")  # the budget rule is not a regression rule
    ack = Acknowledgement(label="cost-increase-ok", by="@octocat")
    v = _verdicts(tight, tmp_path / "p.yaml", base, head, acknowledgement=ack)
    assert v["budget"].status == "fail" and v["budget"].waived_by is None
    for name in ("spend_increase", "support_increase"):
        assert v[name].status == "warn"
        assert (
            v[name].waived_by == "acknowledged by the label 'cost-increase-ok' (added by @octocat)"
        )
    # the same applied afterwards to a recorded result (a DiffReport's policy section)
    diff, result = api.compare(head, Baseline(base, "b"), policy=write(tmp_path / "t.yaml", tight))
    assert result is not None and result.verdict == "fail"
    recorded = acknowledge(result.to_dict(), ack)
    statuses = {v["rule"]: v["status"] for v in recorded["verdicts"]}
    assert statuses["spend_increase"] == "warn" and statuses["budget"] == "fail"
    assert recorded["acknowledgement"] == {"label": "cost-increase-ok", "by": "@octocat"}


def test_check_cli_with_baseline_file(runs: tuple[RunReport, RunReport], project_dir: Path) -> None:
    base, head = runs
    base.write(project_dir / "base.json")
    head.write(project_dir / "head.json")
    write(project_dir / "policy.yaml", POLICY)
    proc = run_cli(
        "check",
        "--policy",
        "policy.yaml",
        "head.json",
        "--baseline",
        "base.json",
        cwd=project_dir,
        env={"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(project_dir)},
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("Projected monthly spend +$")
    line = POLICY.splitlines().index("  spend_increase:") + 1
    assert (
        f"::error file=policy.yaml,line={line},title=costguard%3A spend_increase::" in proc.stdout
    )
    proc = run_cli(
        "check",
        "--policy",
        "policy.yaml",
        "head.json",
        "--baseline",
        "missing.json",
        cwd=project_dir,
    )
    assert proc.returncode == 0, proc.stdout
    assert "no baseline yet: baseline missing.json does not exist" in proc.stderr
    assert "::error" not in proc.stdout  # annotations only inside GitHub Actions
