"""The CLI on the bundled example (repo root) and on small projects, as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def example_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("example") / "report.json"
    proc = run_cli("run", "--out", str(out), cwd=REPO)
    return proc, out


def test_run_on_bundled_example_prints_summary_and_writes_report(example_report) -> None:
    proc, out = example_report
    assert proc.returncode == 0, proc.stderr
    assert "Projected monthly spend" in proc.stdout
    assert "everything on the largest tier (large), no caches" in proc.stdout
    assert "* estimated" in proc.stdout  # output tokens are estimates until responses are recorded
    report = json.loads(out.read_text())
    assert report["complete"] is True
    assert report["totals"]["fixtures"] >= 300
    assert len({r["suite"] for r in report["records"]}) >= 4
    assert set(report["tiers"]) == {"small", "quantized", "large"}
    assert report["counterfactual"]["saving_per_month"] > 0
    # The example counts with cl100k_base + a hand-written Llama 3 layout: a stand-in, so every
    # prompt count is labelled approximate, and the report says why.
    assert not any(t["tokenizer_exact"] for t in report["stack"]["tiers"])
    assert {t["tokenizer_counts"] for t in report["stack"]["tiers"]} == {"approximate"}
    assert {k for k, n in report["provenance"]["input_tokens"].items() if n} == {"approximate"}
    assert any("stand-in for the model's own" in w for w in report["warnings"])
    assert "[approximate token counts: the tokenizer is a stand-in]" in proc.stdout


def test_check_strict_fails_and_names_broken_rules(example_report) -> None:
    _, out = example_report
    proc = run_cli("check", "--policy", "policies/strict.yaml", str(out), cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL monthly_spend:" in proc.stdout and "policies/strict.yaml:" in proc.stdout


def test_check_default_passes(example_report) -> None:
    _, out = example_report
    proc = run_cli("check", "--policy", "policies/default.yaml", str(out), cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all rules passed" in proc.stdout or "passed with" in proc.stdout


def test_check_without_report_runs_the_projection(project_dir: Path) -> None:
    (project_dir / "p.yaml").write_text(
        "rules:\n  spend:\n    metric: monthly_spend\n    max: 0.01\n"
    )
    proc = run_cli("check", "--policy", "p.yaml", "--format", "json", cwd=project_dir)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["verdict"] == "fail" and result["verdicts"][0]["rule"] == "spend"


def test_warn_rule_does_not_fail(project_dir: Path) -> None:
    (project_dir / "p.yaml").write_text(
        "rules:\n  spend:\n    metric: monthly_spend\n    max: 0.01\n    level: warn\n"
    )
    proc = run_cli("check", "--policy", "p.yaml", cwd=project_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARN spend:" in proc.stdout


def test_incomplete_report_never_passes(project_dir: Path, tmp_path: Path) -> None:
    assert run_cli("run", "--out", "r.json", cwd=project_dir).returncode == 0
    data = json.loads((project_dir / "r.json").read_text())
    data["complete"] = False
    data["incomplete_reason"] = "server failed mid-run"
    (project_dir / "r.json").write_text(json.dumps(data))
    (project_dir / "p.yaml").write_text(
        "rules:\n  spend:\n    metric: monthly_spend\n    max: 1000000\n"
    )
    proc = run_cli("check", "--policy", "p.yaml", "r.json", cwd=project_dir)
    assert proc.returncode == 1
    assert "incomplete" in proc.stdout


def test_schema_command_writes_schemas_that_accept_the_example(tmp_path: Path) -> None:
    import jsonschema

    proc = run_cli("schema", "--out-dir", str(tmp_path), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    stack_schema = json.loads((tmp_path / "costguard.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((REPO / "costguard.yaml").read_text()), stack_schema)
    policy_schema = json.loads((tmp_path / "policy.schema.json").read_text())
    jsonschema.validate(
        yaml.safe_load((REPO / "policies" / "default.yaml").read_text()), policy_schema
    )
    fixture_schema = json.loads((tmp_path / "fixtures.schema.json").read_text())
    jsonschema.validate(
        yaml.safe_load((REPO / "fixtures" / "support.yaml").read_text()), fixture_schema
    )
    bad = yaml.safe_load((REPO / "costguard.yaml").read_text())
    bad["traffic"]["requests_per_mnth"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, stack_schema)


def test_import_logs_round_trip(project_dir: Path) -> None:
    log = project_dir / "requests.jsonl"
    log.write_text(
        json.dumps(
            {
                "model": "gpt-x",
                "messages": [{"role": "user", "content": "Where is my parcel?"}],
                "temperature": 0,
                "max_tokens": 64,
                "usage": {"completion_tokens": 37},
            }
        )
        + "\n"
        + json.dumps(
            {
                "request": {
                    "model": "gpt-x",
                    "messages": [{"role": "user", "content": "Where is my parcel?"}],
                    "temperature": 0,
                    "max_tokens": 64,
                }
            }
        )
        + "\n"
        + json.dumps(
            {
                "model": "gpt-x",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                ],
            }
        )
        + "\n"
    )
    proc = run_cli(
        "import-logs",
        "requests.jsonl",
        "--suite",
        "support",
        "--out",
        "fixtures/imported.yaml",
        "--dedupe",
        cwd=project_dir,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 fixtures" in proc.stdout
    data = yaml.safe_load((project_dir / "fixtures" / "imported.yaml").read_text())
    first = data["fixtures"][0]
    assert first["weight"] == 2 and first["expect"] == {"output_tokens": 37}
    assert first["sampling"] == {"temperature": 0, "max_tokens": 64}
    # The imported file loads like any fixture file.
    run = run_cli("run", "--out", "r.json", cwd=project_dir)
    assert run.returncode == 0, run.stderr


def test_import_logs_bad_line(project_dir: Path) -> None:
    (project_dir / "bad.jsonl").write_text('{"model": "x"}\n')
    proc = run_cli("import-logs", "bad.jsonl", "--suite", "s", "--out", "o.yaml", cwd=project_dir)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("costguard: error: bad.jsonl:1: messages:")
    assert not (project_dir / "o.yaml").exists()


def test_python_dash_m_and_version() -> None:
    proc = run_cli("--version", cwd=REPO)
    assert proc.returncode == 0 and "costguard" in proc.stdout


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli("run", "--frobnicate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "No such option" in proc.stderr and "Traceback" not in proc.stderr


def test_bundled_example_says_approximate_in_the_pr_comment_and_a_policy_can_demand_exact(
    example_report, tmp_path: Path
) -> None:
    from costguard.compare.diff import Baseline, diff_reports
    from costguard.render.markdown import render
    from costguard.report.run_report import load_report

    _, out = example_report
    head = load_report(out)
    diff = diff_reports(Baseline(None, "none", reason="first run"), head)
    body = render(diff, context="comment", tag="t")
    assert "Prompt token counts are **approximate** on tier(s) small, quantized, large" in body
    policy = tmp_path / "exact.yaml"
    policy.write_text("rules:\n  exact_counts: {metric: approximate_token_share, max: 0}\n")
    proc = run_cli("check", "--policy", str(policy), str(out), cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL exact_counts:" in proc.stdout and "counted approximately" in proc.stdout
