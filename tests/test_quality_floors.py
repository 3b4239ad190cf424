"""Quality floors in policies: overall / suite / tier floors, and `quality.on_unmeasured`."""

from __future__ import annotations

from pathlib import Path

import pytest

from costguard.engine.quality.assess import quality_section
from costguard.engine.records import RequestRecord
from costguard.errors import ConfigError
from costguard.policy.engine import MetricContext, evaluate, load_policy
from costguard.report.run_report import RunReport


def record(fid: str, suite: str, monthly: float, quality: dict | None) -> RequestRecord:
    return RequestRecord(
        fixture_id=fid,
        suite=suite,
        location="f.yaml:1",
        content_hash=fid,
        weight=1.0,
        monthly_requests=monthly,
        arrival_index=0,
        route_tier="small",
        route_reason="r",
        quality=quality,
    )


def q(score: float | None, tier: str, *, passed: bool | None = None, complete: bool = True) -> dict:
    if score is None:
        return {
            "measured": False,
            "complete": False,
            "score": None,
            "reason": f"no recorded response on tier {tier}",
            "tier": tier,
            "assertions": [{"type": "contains", "weight": 1.0, "measured": False}],
        }
    ok = score == 1.0 if passed is None else passed
    assertions = [
        {
            "type": "contains",
            "weight": 1.0,
            "measured": True,
            "passed": ok,
            "score": score,
            "message": "m",
        }
    ]
    if not complete:
        assertions.append(
            {
                "type": "judge",
                "weight": 1.0,
                "measured": False,
                "message": "no recorded judge reply",
            }
        )
    return {
        "measured": True,
        "complete": complete,
        "score": score,
        "passed": ok,
        "tier": tier,
        "assertions": assertions,
    }


RECORDS = [
    record("a", "support", 300.0, q(1.0, "small")),
    record("b", "support", 100.0, q(0.0, "small")),
    record("c", "coding", 600.0, q(0.5, "large", passed=False, complete=False)),
    record("d", "coding", 50.0, q(None, "large")),
    record("e", "coding", 50.0, None),  # no assertions: not part of quality
]


def test_quality_section_weights_fixtures_by_traffic_and_counts_unmeasured() -> None:
    section = quality_section(RECORDS)
    assert section is not None
    assert section["score"] == pytest.approx((300 * 1.0 + 100 * 0.0 + 600 * 0.5) / 1000)
    assert section["pass_rate"] == pytest.approx(0.3)
    assert {
        k: section[k] for k in ("fixtures", "measured", "unmeasured", "partial", "passed", "failed")
    } == {"fixtures": 4, "measured": 3, "unmeasured": 1, "partial": 1, "passed": 1, "failed": 2}
    assert section["suites"]["support"]["score"] == pytest.approx(0.75)
    assert section["suites"]["coding"]["score"] == 0.5
    assert section["tiers"]["small"]["score"] == pytest.approx(0.75)
    assert section["tiers"]["large"]["unmeasured"] == 1
    assert section["unmeasured_reasons"] == {
        "no recorded judge reply": 1,
        "no recorded response on tier large": 1,
    }
    assert section["assertions"]["contains"] == {
        "measured": 3,
        "passed": 1,
        "failed": 2,
        "unmeasured": 1,
    }
    assert quality_section([RECORDS[-1]]) is None


def report() -> RunReport:
    section = quality_section(RECORDS)
    return RunReport(
        {
            "complete": True,
            "quality": section,
            "totals": {},
            "tiers": {},
            "suites": {},
            "records": [],
        }
    )


def policy(tmp_path: Path, rules: str, on_unmeasured: str | None = None) -> Path:
    head = f"quality: {{on_unmeasured: {on_unmeasured}}}\n" if on_unmeasured else ""
    path = tmp_path / "policy.yaml"
    path.write_text(head + "rules:\n" + rules)
    return path


def verdicts(
    tmp_path: Path, rules: str, on_unmeasured: str | None = None
) -> dict[str, tuple[str, str]]:
    result = evaluate(
        load_policy(policy(tmp_path, rules, on_unmeasured)), MetricContext(report=report())
    )
    return {v.rule: (v.status, v.message) for v in result.verdicts}


def test_floors_overall_per_suite_and_per_tier(tmp_path: Path) -> None:
    rules = """\
  overall: {metric: quality_score, min: 0.70}
  support: {metric: quality_score, suite: support, min: 0.70}
  small:   {metric: quality_score, tier: small, min: 0.80}
  passing: {metric: quality_pass_rate, suite: support, min: 0.5}
"""
    got = verdicts(tmp_path, rules, "ignore")
    assert got["overall"][0] == "fail" and got["overall"][1].startswith("60.0% breaks >= 70.0%")
    assert got["support"] == ("pass", "75.0% within >= 70.0%; 2 of 2 fixtures measured")
    assert got["small"][0] == "fail"
    assert got["passing"][0] == "pass"


def test_on_unmeasured_fail_breaks_a_rule_with_unmeasured_fixtures_in_scope(tmp_path: Path) -> None:
    rules = """\
  coding: {metric: quality_score, suite: coding, min: 0.1}
  support: {metric: quality_score, suite: support, min: 0.1}
  coding_warn: {metric: quality_score, suite: coding, min: 0.1, level: warn}
"""
    got = verdicts(tmp_path, rules, "fail")
    assert got["coding"][0] == "fail"
    assert (
        "2 fixture(s) in scope have no measured quality (on_unmeasured: fail)" in got["coding"][1]
    )
    assert got["support"][0] == "pass"  # every support fixture was measured
    assert got["coding_warn"][0] == "warn"  # the rule's level still decides what breaking it means


def test_on_unmeasured_warn_is_the_default_and_never_hides_a_broken_floor(tmp_path: Path) -> None:
    got = verdicts(
        tmp_path,
        "  low: {metric: quality_score, suite: coding, min: 0.1}\n"
        "  high: {metric: quality_score, suite: coding, min: 0.9}\n",
    )
    assert got["low"][0] == "warn"
    assert got["high"][0] == "fail"


def test_on_unmeasured_ignore_judges_the_measured_fixtures_alone(tmp_path: Path) -> None:
    got = verdicts(tmp_path, "  low: {metric: quality_score, suite: coding, min: 0.1}\n", "ignore")
    assert got["low"][0] == "pass"
    assert "on_unmeasured: ignore" in got["low"][1]


def test_nothing_measured_in_scope(tmp_path: Path) -> None:
    data = report().data
    data["quality"] = quality_section([record("d", "coding", 50.0, q(None, "large"))])
    rules = "  floor: {metric: quality_score, min: 0.9}\n"
    for mode, status in (("fail", "fail"), ("warn", "warn"), ("ignore", "skip")):
        result = evaluate(
            load_policy(policy(tmp_path, rules, mode)), MetricContext(report=RunReport(data))
        )
        assert result.verdicts[0].status == status, mode
    assert result.verdicts[0].message == "0 of 1 fixtures measured"


def test_unmeasured_count_metric(tmp_path: Path) -> None:
    got = verdicts(
        tmp_path,
        "  all_measured: {metric: quality_unmeasured, max: 0}\n"
        "  support_measured: {metric: quality_unmeasured, suite: support, max: 0}\n",
    )
    assert got["all_measured"] == ("fail", "2 breaks <= 0; of 4 fixtures with assertions")
    assert got["support_measured"][0] == "pass"


def test_a_floor_on_a_run_without_assertions_is_skipped(tmp_path: Path) -> None:
    data = {"complete": True, "totals": {}, "tiers": {}, "suites": {}, "records": []}
    result = evaluate(
        load_policy(policy(tmp_path, "  floor: {metric: quality_score, min: 0.9}\n", "fail")),
        MetricContext(report=RunReport(data)),
    )
    assert (result.verdicts[0].status, result.verdicts[0].message) == (
        "skip",
        "the run has no fixtures with quality assertions",
    )


def test_bad_quality_policies_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"policy.yaml:2: rules.both: give suite: or tier:, not both"
    ):
        load_policy(
            policy(tmp_path, "  both: {metric: quality_score, suite: a, tier: b, min: 0.5}\n")
        )
    with pytest.raises(ConfigError, match=r"policy.yaml:1: quality.on_unmeasured"):
        load_policy(policy(tmp_path, "  q: {metric: quality_score, min: 0.5}\n", "sometimes"))
