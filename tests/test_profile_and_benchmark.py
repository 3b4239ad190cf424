"""`costguard run --profile` accounts for the run's wall time, and the projection benchmark notices
a failed run (it used to read `returncode` of a child reaped by os.wait4: always None)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli


def _benchmark():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "projection_bench", REPO / "benchmarks" / "projection.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_run_profile_prints_every_stage_and_what_they_cover(project_dir: Path) -> None:
    proc = run_cli("run", "-q", "--out", "r.json", "--profile", cwd=project_dir)
    assert proc.returncode == 0, proc.stderr
    stages = dict(re.findall(r"^  (\w+)\s+([\d.]+) s", proc.stderr, re.M))
    report_stages = json.loads((project_dir / "r.json").read_text())["timing"]["stages"]
    assert set(report_stages) <= set(stages)
    assert {"startup", "load", "tokens", "route", "records", "aggregate", "report", "write"} <= set(
        stages
    )
    covered = re.search(r"stages cover\s+([\d.]+) s\s+([\d.]+)% of the wall time", proc.stderr)
    assert covered is not None
    assert float(covered.group(1)) == pytest.approx(
        sum(float(v) for k, v in stages.items() if k != "stages"), abs=0.01
    )
    assert 0 < float(covered.group(2)) <= 100


def test_benchmark_run_that_fails_raises_with_its_exit_code_and_stderr(tmp_path: Path) -> None:
    bench = _benchmark()
    with pytest.raises(bench.RunFailed) as failed:
        bench.timed_run(["run", "-c", "missing.yaml"], tmp_path, REPO)
    assert "exit 2" in str(failed.value.code) and "missing.yaml" in str(failed.value.code)


def test_benchmark_measures_a_run_and_its_bytes_written(project_dir: Path) -> None:
    bench = _benchmark()
    measured = bench.timed_run(["run", "-q", "--out", "r.json"], project_dir, REPO)
    assert measured.seconds > 0 and measured.rss_mb > 10
    report_mb = (project_dir / "r.json").stat().st_size / 1e6
    assert measured.written_mb is not None and measured.written_mb >= report_mb * 0.99
