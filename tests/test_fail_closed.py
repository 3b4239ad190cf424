"""A gate that fails closed: non-finite, null, boolean, negative and inconsistent numbers in a
policy, a config or a report are exit 2 with file:line:key; an incomplete report never passes
`check` and is never a baseline (README "Reliability")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costguard import api
from tests.conftest import run_cli, write

BUDGET = """\
rules:
  spend:
    metric: monthly_spend
    max: {limit}
"""
REGRESSION = """\
{extra}rules:
  spend:
    metric: monthly_spend
    max: 100000
  spend_increase_pct:
    metric: monthly_spend_increase_pct
    max: 5
"""


def one_line_exit_2(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def report_file(project_dir: Path) -> Path:
    report = api.run(api.load_project(project_dir / "costguard.yaml"))
    return report.write(project_dir / "head.json")


@pytest.mark.parametrize("limit", [".nan", '"NaN"', ".inf", "-.inf", "true", "null", '"1e9"'])
def test_a_non_numeric_policy_limit_is_exit_2_never_a_pass(
    project_dir: Path, report_file: Path, limit: str
):
    write(project_dir / "policy.yaml", BUDGET.format(limit=limit))
    proc = run_cli("check", "-p", "policy.yaml", "head.json", cwd=project_dir)
    if limit == "null":  # max: null and no min: the rule has no bound
        one_line_exit_2(proc, "policy.yaml:", "rules.spend")
    else:
        one_line_exit_2(proc, "policy.yaml:4", "rules.spend.max")


def _edited(report_file: Path, name: str, edit) -> Path:
    data = json.loads(report_file.read_text())
    edit(data)
    out = report_file.with_name(name)
    out.write_text(json.dumps(data, indent=2, allow_nan=True))
    return out


def _set_total(value):
    return lambda d: d["totals"].__setitem__("cost_per_month", value)


HOSTILE_REPORTS = {
    "nan": (_set_total(float("nan")), "NaN"),
    "null": (_set_total(None), "totals.cost_per_month"),
    "minus-inf": (_set_total(float("-inf")), "Infinity"),
    "negative": (_set_total(-5.0), "totals.cost_per_month"),
    "boolean": (_set_total(True), "totals.cost_per_month"),
    "string": (_set_total("12.5"), "totals.cost_per_month"),
    "missing": (lambda d: d["totals"].pop("cost_per_month"), "totals.cost_per_month"),
    "inconsistent": (_set_total(0.01), "inconsistent"),
    "complete-string-false": (lambda d: d.__setitem__("complete", "false"), "complete"),
    "complete-yes": (lambda d: d.__setitem__("complete", "yes"), "complete"),
    "complete-one": (lambda d: d.__setitem__("complete", 1), "complete"),
    "tier-nan": (
        lambda d: next(iter(d["tiers"].values())).__setitem__("cost_per_month", float("nan")),
        "NaN",
    ),
    "record-bool": (lambda d: d["records"][0].__setitem__("cost_usd", False), "records[0]"),
}


@pytest.mark.parametrize("case", list(HOSTILE_REPORTS))
def test_check_never_passes_a_hostile_report(project_dir: Path, report_file: Path, case: str):
    edit, needle = HOSTILE_REPORTS[case]
    bad = _edited(report_file, f"{case}.json", edit)
    write(project_dir / "policy.yaml", BUDGET.format(limit=100000))
    proc = run_cli("check", "-p", "policy.yaml", bad.name, cwd=project_dir)
    line = one_line_exit_2(proc, f"{bad.name}:", needle)
    assert ":" in line.split(bad.name, 1)[1][:8]  # file:LINE


def test_an_incomplete_report_fails_every_rule(project_dir: Path, report_file: Path):
    bad = _edited(report_file, "partial.json", lambda d: d.__setitem__("complete", False))
    write(project_dir / "policy.yaml", BUDGET.format(limit=100000))
    proc = run_cli("check", "-p", "policy.yaml", bad.name, cwd=project_dir)
    assert proc.returncode == 1 and "incomplete" in proc.stdout


@pytest.mark.parametrize(
    ("extra", "code", "status"),
    [("", 0, "SKIP"), ("on_no_baseline: warn\n", 0, "WARN"), ("on_no_baseline: fail\n", 1, "FAIL")],
)
def test_an_incomplete_baseline_is_no_usable_baseline_never_zero_dollars(
    project_dir: Path, report_file: Path, extra: str, code: int, status: str
):
    def shrink(d):  # an interrupted run: half the spend, marked incomplete
        d["complete"] = False
        d["incomplete_reason"] = "interrupted (SIGTERM)"

    base = _edited(report_file, "base.json", shrink)
    write(project_dir / "policy.yaml", REGRESSION.format(extra=extra))
    proc = run_cli(
        "check", "-p", "policy.yaml", "head.json", "--baseline", base.name, cwd=project_dir
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "no usable baseline" in proc.stdout + proc.stderr
    assert "incomplete" in proc.stdout + proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "spend_increase_pct" in ln)
    assert status in row.upper()
    assert "$0" not in proc.stdout


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("requests_per_month: 1000000", "requests_per_month: .inf", "traffic.requests_per_month"),
        ("requests_per_month: 1000000", "requests_per_month: .nan", "traffic.requests_per_month"),
        ("requests_per_month: 1000000", "requests_per_month: true", "traffic.requests_per_month"),
        ("input_per_mtok: 0.10", "input_per_mtok: .inf", "tiers[0].pricing.input_per_mtok"),
        ("input_per_mtok: 0.10", 'input_per_mtok: "0.10"', "tiers[0].pricing.input_per_mtok"),
        (
            "decode_tokens_per_s: 2000",
            "decode_tokens_per_s: .inf",
            "tiers[1].pricing.decode_tokens_per_s",
        ),
        ("seed: 3", "seed: 10000000000000000000000000000000", "traffic.seed"),
    ],
)
def test_non_finite_or_coerced_config_numbers_are_exit_2(
    project_dir: Path, old: str, new: str, key: str
):
    cfg = project_dir / "costguard.yaml"
    cfg.write_text(cfg.read_text().replace(old, new))
    proc = run_cli("run", "--out", "r.json", cwd=project_dir)
    one_line_exit_2(proc, "costguard.yaml:", key)
    assert not (project_dir / "r.json").exists()


def test_fixture_booleans_are_booleans(project_dir: Path):
    fx = project_dir / "fixtures" / "support.yaml"
    fx.write_text(fx.read_text().replace("weight: 2", "weight: true"))
    proc = run_cli("run", "--out", "r.json", cwd=project_dir)
    one_line_exit_2(proc, "support.yaml:", "fixtures[0].weight")


# -- no silent wrong answers ----------------------------------------------------------------------


def test_calibrate_holdout_refuses_suites_the_config_does_not_know_like_run(project_dir: Path):
    config = project_dir / "costguard.yaml"
    text = config.read_text()
    start, end = text.index("router:"), text.index("\nsuites:") + 1
    text = (
        text[:start]
        + "router:\n  kind: length\n  thresholds: [{max_prompt_tokens: 5, tier: small}]\n"
        + "  default_tier: large\n"
        + text[end:]
    )
    text = text.replace("support: {output_tokens_prior: 100}", "support: {share: 0.7}")
    text = text.replace("coding: {output_tokens_prior: 400}", "coding: {share: 0.3}")
    config.write_text(text)
    write(
        project_dir / "holdout" / "billing.yaml",
        """\
        suite: billing
        fixtures:
          - id: invoice
            messages: [{role: user, content: "Why was I charged twice for March?"}]
        """,
    )
    run = run_cli("run", "--fixtures", "holdout", "--out", "r.json", cwd=project_dir)
    refused = one_line_exit_2(run, "billing", "no share")
    cal = run_cli(
        "calibrate", "--target-share", "large=0.5", "--holdout", "holdout", cwd=project_dir
    )
    assert one_line_exit_2(cal, "billing", "no share") == refused
    assert "0.0%" not in cal.stdout


def _semantic_report(hits: int, false_hit_rate: float | None):
    from costguard.report.run_report import RunReport

    return RunReport(
        {
            "kind": "run",
            "schema_version": "1.0",
            "complete": True,
            "totals": {},
            "tiers": {},
            "suites": {},
            "records": [],
            "cache": {
                "semantic": {"enabled": True, "hits": hits, "false_hit_rate": false_hit_rate}
            },
        }
    )


@pytest.mark.parametrize(
    ("on_unmeasured", "status"), [("warn", "warn"), ("fail", "fail"), ("ignore", "skip")]
)
def test_a_rule_on_a_rate_over_zero_events_follows_on_unmeasured(
    tmp_path: Path, on_unmeasured: str, status: str
):
    from costguard.policy.engine import MetricContext, evaluate, load_policy

    policy = write(
        tmp_path / "p.yaml",
        f"""\
        quality: {{on_unmeasured: {on_unmeasured}}}
        rules:
          false_hits:
            metric: semantic_false_hit_rate
            max: 0.05
        """,
    )
    result = evaluate(load_policy(policy), MetricContext(report=_semantic_report(0, None)))
    (verdict,) = result.verdicts
    assert verdict.status == status and verdict.actual is None
    assert "n/a" in verdict.message and "0.0%" not in verdict.message
    measured = evaluate(load_policy(policy), MetricContext(report=_semantic_report(10, 0.2)))
    assert measured.verdicts[0].status == "fail"


def test_zero_semantic_hits_show_n_a_not_zero_percent(project_dir: Path):
    cfg = project_dir / "costguard.yaml"
    cfg.write_text(cfg.read_text() + "caches: {semantic: {enabled: true, threshold: 0.999}}\n")
    proc = run_cli("run", "--out", "r.json", cwd=project_dir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((project_dir / "r.json").read_text())
    semantic = report["cache"]["semantic"]
    assert semantic["enabled"] and semantic["hits"] == 0
    assert semantic["false_hit_rate"] is None
    assert "false-hit rate n/a" in proc.stdout


# -- timing rules that do not flake ---------------------------------------------------------------


def test_router_overhead_rule_gates_on_cpu_time_not_on_a_busy_machines_wall_clock():
    from costguard.policy.engine import MetricContext, Rule
    from costguard.policy.metrics.routing import _router_overhead_p99
    from costguard.report.run_report import RunReport

    def report(source: str) -> RunReport:
        overhead = {
            "source": source,
            "method": "probes",
            "p99_s": 2.883,  # wall clock on a loaded 2-core runner
            "cpu_p99_s": 0.062,  # the routing work itself
            "conditions": {"cpus": 2, "load_average_1m": 14.2, "measured_at": "2026-12-01"},
        }
        return RunReport({"timing": {"router_overhead": overhead}})

    rule = Rule(metric="router_overhead_p99", max=0.25)
    value = _router_overhead_p99(MetricContext(report=report("measured")), rule)
    assert value.value == 0.062 and "CPU time" in (value.note or "")
    stored = _router_overhead_p99(MetricContext(report=report("stored")), rule)
    assert "not under this run's conditions" in (stored.note or "")
    assert "load average 14.2" in (stored.note or "")
