"""The metric registry: built-ins listed explicitly, plugins through the `costguard.metrics`
entry-point group, found the way every front end finds them (a real `costguard check` process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from costguard.errors import ConfigError
from costguard.policy.metric import Metric, MetricValue
from costguard.policy.registry import BUILTIN_METRICS, ENTRY_POINT_GROUP, MetricRegistry
from tests.conftest import run_cli

PLUGIN = '''\
"""A user's metric package: spend per suite fixture, read from the report."""

from costguard.policy.metric import Metric, MetricValue


def _spend_per_fixture(ctx, rule):
    fixtures = len(ctx.report.records)
    return MetricValue(ctx.report.totals["cost_per_month"] / fixtures if fixtures else None)


METRICS = [
    Metric("spend_per_fixture", "usd", "monthly spend divided by the fixtures run", _spend_per_fixture)
]
'''


def install_plugin(site: Path, entry_points: str, module: str = PLUGIN) -> Path:
    """Lay a distribution out in `site` as an installer does: its module plus a .dist-info
    whose entry_points.txt declares the `costguard.metrics` entry points."""
    dist = site / "acme_metrics-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "acme_metrics.py").write_text(module)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-metrics\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (dist / "RECORD").write_text("")
    return site


def test_builtins_are_listed_without_import_side_effects() -> None:
    names = [m.name for m in BUILTIN_METRICS]
    assert len(names) == len(set(names)) == 25
    assert {"monthly_spend", "escalation_rate", "quality_score", "quality_drop"} <= set(names)
    registry = MetricRegistry(entry_points=False)
    assert list(registry) == names and registry.source("monthly_spend") == "costguard"
    # Importing a metric module registers nothing: the registry is what lists them.
    import costguard.policy.metrics.routing  # noqa: F401

    assert list(MetricRegistry(entry_points=False)) == names


def test_a_taken_name_is_an_error_naming_both_sources() -> None:
    registry = MetricRegistry(entry_points=False)
    clash = Metric("monthly_spend", "usd", "again", lambda ctx, rule: MetricValue(0.0))
    with pytest.raises(ConfigError, match="'monthly_spend' is already defined by costguard"):
        registry.add(clash, source="metric plugin 'x'")


def test_plugin_metric_installed_through_the_entry_point_group_gates_a_run(
    project_dir: Path, tmp_path: Path
) -> None:
    site = install_plugin(
        tmp_path / "site",
        f"""\
        [{ENTRY_POINT_GROUP}]
        acme = acme_metrics:METRICS
        """,
    )
    (project_dir / "p.yaml").write_text(
        "rules:\n  per_fixture:\n    metric: spend_per_fixture\n    max: 0.000001\n"
    )
    env = {"PYTHONPATH": f"{Path(__file__).parent.parent}:{site}"}
    proc = run_cli("check", "--policy", "p.yaml", "--format", "json", cwd=project_dir, env=env)
    assert proc.returncode == 1, proc.stderr
    (verdict,) = json.loads(proc.stdout)["verdicts"]
    assert verdict["metric"] == "spend_per_fixture" and verdict["status"] == "fail"
    assert verdict["actual"] > 0 and verdict["unit"] == "usd"
    # Without the plugin installed the same policy is bad input, naming the file and the key.
    proc = run_cli("check", "--policy", "p.yaml", cwd=project_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "p.yaml:2: rules.per_fixture.metric: unknown metric 'spend_per_fixture'" in proc.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("acme_metrics:missing", "failed to load: AttributeError"),
        ("acme_metrics:NOT_METRICS", "gave int: expected a Metric or an iterable of Metrics"),
        ("acme_metrics:CLASH", "metric 'monthly_spend' is already defined by costguard"),
    ],
)
def test_a_broken_plugin_is_one_line_exit_2(
    project_dir: Path, tmp_path: Path, target: str, message: str
) -> None:
    module = (
        PLUGIN
        + "\nNOT_METRICS = 3\n"
        + "CLASH = Metric('monthly_spend', 'usd', 'mine', _spend_per_fixture)\n"
    )
    site = install_plugin(tmp_path / "site", f"[{ENTRY_POINT_GROUP}]\nacme = {target}\n", module)
    (project_dir / "p.yaml").write_text("rules:\n  spend:\n    metric: monthly_spend\n    max: 1\n")
    env = {"PYTHONPATH": f"{Path(__file__).parent.parent}:{site}"}
    proc = run_cli("check", "--policy", "p.yaml", cwd=project_dir, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert f"metric plugin 'acme' ({target}" in proc.stderr and message in proc.stderr


def test_the_registry_loads_plugins_once_and_lazily(tmp_path: Path) -> None:
    """Importing the policy engine does not import plugins; the first lookup does, once."""
    site = install_plugin(
        tmp_path / "site", f"[{ENTRY_POINT_GROUP}]\nacme = acme_metrics:METRICS\n"
    )
    code = textwrap.dedent(
        """
        import sys
        from costguard.policy.engine import METRICS
        assert "acme_metrics" not in sys.modules
        assert "spend_per_fixture" in METRICS and len(METRICS) == 26
        print(METRICS.source("spend_per_fixture"))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{Path(__file__).parent.parent}:{site}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"metric plugin 'acme' (acme_metrics:METRICS, entry point group {ENTRY_POINT_GROUP})"
    )
