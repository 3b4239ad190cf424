"""Cache policy rules (hit-rate floors per layer and tier, semantic false-hit ceiling) and the
cache tables in the terminal output."""

from __future__ import annotations

from pathlib import Path

import pytest

from costguard import api
from costguard.errors import ConfigError
from costguard.policy.engine import MetricContext, Rule, evaluate, load_policy
from costguard.policy.metrics.caches import _semantic_false_hit_rate
from costguard.report.run_report import RunReport
from tests.conftest import run_cli, write
from tests.test_prefix_pipeline import SHARED_PREFIX, _project


def _verdicts(report: RunReport, policy: Path) -> dict[str, tuple[str, str]]:
    result = evaluate(load_policy(policy), MetricContext(report=report))
    return {v.rule: (v.status, v.message) for v in result.verdicts}


def test_prefix_hit_rate_floor_per_tier_and_cache_hit_rate_per_layer(tmp_path: Path) -> None:
    report = api.run(api.load_project(_project(tmp_path, SHARED_PREFIX)))
    rate = report.data["cache"]["prefix"]["tiers"]["small"]["hit_rate_tokens"]
    assert 0.3 < rate < 0.9
    policy = write(
        tmp_path / "policy.yaml",
        f"""\
        rules:
          small_prefix_floor: {{metric: prefix_hit_rate, tier: small, min: {rate - 0.01}}}
          small_prefix_too_high: {{metric: prefix_hit_rate, tier: small, min: {rate + 0.01}, level: warn}}
          suite_prefix: {{metric: prefix_hit_rate, suite: support, min: 0.1}}
          large_prefix: {{metric: prefix_hit_rate, tier: large, min: 0.5}}
          overall_prefix_layer: {{metric: cache_hit_rate, layer: prefix, min: 0.66, max: 0.67}}  # 2 of 3 calls reuse blocks
          semantic_off: {{metric: semantic_false_hit_rate, max: 0.05}}
        """,
    )
    verdicts = _verdicts(report, policy)
    assert (
        verdicts["small_prefix_floor"][0] == "pass"
        and "simulated" in verdicts["small_prefix_floor"][1]
    )
    assert verdicts["small_prefix_too_high"][0] == "warn"
    assert verdicts["suite_prefix"][0] == "pass"
    assert verdicts["large_prefix"] == ("skip", "no requests reach tier 'large'")
    assert verdicts["overall_prefix_layer"][0] == "pass"
    assert verdicts["semantic_off"] == ("skip", "the semantic cache is disabled")


def test_semantic_false_hit_rate_reads_the_report() -> None:
    base = {
        "kind": "run",
        "schema_version": "1.0",
        "complete": True,
        "totals": {},
        "tiers": {},
        "suites": {},
    }
    semantic = {
        "enabled": True,
        "hits": 10,
        "wrong_hits": 2,
        "unjudged_hits": 1,
        "false_hit_rate": 0.2,
        "answer_sources": {"reference": 10},
    }
    report = RunReport({**base, "cache": {"semantic": semantic}})
    value = _semantic_false_hit_rate(
        MetricContext(report=report), Rule(metric="semantic_false_hit_rate", max=0.1)
    )
    assert value.value == 0.2 and value.estimated is True
    assert "1 hit(s) could not be judged" in (value.note or "") and "stand-ins" in (
        value.note or ""
    )
    no_hits = RunReport(
        {**base, "cache": {"semantic": {**semantic, "hits": 0, "false_hit_rate": None}}}
    )
    vacuous = _semantic_false_hit_rate(MetricContext(report=no_hits), Rule(metric="x", max=0.1))
    assert vacuous.value is None and vacuous.vacuous  # n/a, never 0%


def test_cache_metric_selectors_are_checked(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "p.yaml", "rules:\n  r: {metric: prefix_hit_rate, layer: exact, min: 0.1}\n"
    )
    with pytest.raises(ConfigError, match="takes no 'layer'"):
        load_policy(bad)


def test_terminal_shows_cache_layers_and_prefix_tiers(tmp_path: Path) -> None:
    _project(tmp_path, SHARED_PREFIX, small="    kv_cache: {num_gpu_blocks: 4000}")
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Cache layers" in out and "prefix (KV)" in out
    assert "Prefix caches (simulated, per tier)" in out
    assert "64.0k tok," in out and "declared" in out  # the capacity cell may wrap
    assert "of prompt tokens reused" in out
