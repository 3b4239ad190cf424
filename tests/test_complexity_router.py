"""The embedding routers with the real all-MiniLM-L6-v2 on the bundled example.

Every copy of the example shares the repository's cache directory (embeddings, token counts,
the stored router-overhead measurement), so only the first test of a fresh clone encodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from costguard import api
from costguard.engine.routing.calibration import calibrate, write_thresholds
from costguard.errors import ConfigError
from tests.conftest import REPO, replace_router, run_cli

SHARED_CACHE = REPO / ".costguard" / "cache"


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    """The bundled example in a temporary directory, with the repository's (shared) cache."""
    for name in ("fixtures", "policies", "tokenizers"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    config = tmp_path / "costguard.yaml"
    config.write_text(
        (REPO / "costguard.yaml").read_text()
        + f"cache_dir: {json.dumps(str(SHARED_CACHE))}\n"
        + f"allowed_paths: [{json.dumps(str(REPO))}]\n"  # the symlinks lead into the repository
    )
    return config


def short_hard(project: api.Project) -> list[str]:
    return [fx.id for fx in project.fixtures if "short-hard" in fx.tags]


def test_complexity_router_sends_short_hard_prompts_to_large_where_length_sends_them_to_small(
    bundled: Path,
) -> None:
    project = api.load_project(bundled)
    hard = short_hard(project)
    assert len(hard) == 25
    report = api.run(project)
    tiers = {r["id"]: r["route"]["tier"] for r in report.records}
    assert Counter(tiers[i] for i in hard) == {"large": 25}
    shares = report.get("routing")["routed_shares"]
    assert shares["large"] < 0.2  # the 25 hard prompts fit in a small strong-tier share

    # A length router given the very same tier shares (calibrated on prompt tokens) gets them all wrong.
    replace_router(
        bundled,
        "router:\n  kind: length\n  thresholds:\n    - {max_prompt_tokens: 100, tier: small}\n"
        "    - {max_prompt_tokens: 1000, tier: quantized}\n  default_tier: large\n",
    )
    length_project = api.load_project(bundled)
    result = calibrate(length_project, {"large": shares["large"], "quantized": shares["quantized"]})
    write_thresholds(length_project.stack, result)
    length_report = api.run(api.load_project(bundled))
    length_tiers = {r["id"]: r["route"]["tier"] for r in length_report.records}
    assert Counter(length_tiers[i] for i in hard) == {"small": 25}
    assert length_report.get("routing")["routed_shares"]["large"] == pytest.approx(
        shares["large"], abs=0.02
    )
    # the report's own length baseline (same shares) agrees with the length router
    length_row = report.get("routing")["comparison"]["baselines"]["length"]
    assert length_row["pgr"] < report.get("routing")["comparison"]["baselines"]["router"]["pgr"]


def test_calibrate_hits_the_target_share_and_writes_only_the_numbers(bundled: Path) -> None:
    before = bundled.read_text()
    proc = run_cli(
        "calibrate",
        "--target-strong-share",
        "0.25",
        "--write",
        "--format",
        "json",
        cwd=bundled.parent,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["written"] and result["targets"]["large"] == 0.25
    assert result["achieved"]["large"] == pytest.approx(0.25, abs=0.02)
    after = bundled.read_text()
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert 1 <= len(changed) <= 2 and all(
        "max_score:" in a and "max_score:" in b for a, b in changed
    )
    report = api.run(api.load_project(bundled))
    assert report.get("routing")["strong_share"] == pytest.approx(0.25, abs=0.02)


def test_calibrate_reports_drift_on_a_holdout_set(bundled: Path) -> None:
    proc = run_cli(
        "calibrate",
        "--target-strong-share",
        "0.15",
        "--fixtures",
        "fixtures/support.yaml",
        "--fixtures",
        "fixtures/rag.yaml",
        "--holdout",
        "fixtures/coding.yaml",
        cwd=bundled.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "holdout" in proc.stdout and "drift" in proc.stdout and "Not written" in proc.stdout
    proc = run_cli(
        "calibrate",
        "--target-strong-share",
        "0.15",
        "--fixtures",
        "fixtures/support.yaml",
        "--fixtures",
        "fixtures/rag.yaml",
        "--holdout",
        "fixtures/coding.yaml",
        "--format",
        "json",
        cwd=bundled.parent,
    )
    result = json.loads(proc.stdout)
    assert result["holdout_fixtures"] == 60 and result["fixtures"] == 166
    # coding traffic is much harder than support and RAG: far more of it lands on the large tier
    assert result["drift"]["large"] == pytest.approx(
        result["holdout"]["large"] - result["achieved"]["large"]
    )
    assert result["drift"]["large"] > 0.1


def test_a_warm_run_never_imports_torch(bundled: Path) -> None:
    api.run(api.load_project(bundled))  # make sure every embedding is cached
    code = (
        "import sys\n"
        "from costguard import api\n"
        "report = api.run(api.load_project('costguard.yaml'))\n"
        "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)\n"
        "print(report.get('routing')['router']['kind'], len(report.records), ','.join(heavy) or 'none')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=bundled.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    kind, n, heavy = proc.stdout.split()
    assert kind == "complexity" and int(n) > 300 and heavy == "none"


def test_report_and_terminal_show_the_routing_section(bundled: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = run_cli("run", "--out", str(out), cwd=bundled.parent)
    assert proc.returncode == 0, proc.stderr
    for text in (
        "Routing against baselines",
        "this router (complexity)",
        "all on large",
        "random, same shares",
        "length, same shares",
        "APGR",
        "CPT(50%)",
        "Routing (complexity router on all-MiniLM-L6-v2",
        "Router overhead",
        "Cascade small -> large below confidence",
        "quality from fixture labels",
    ):
        assert text in proc.stdout, text
    routing = json.loads(out.read_text())["routing"]
    assert routing["router"]["kind"] == "complexity" and routing["strong_tier"] == "large"
    assert set(routing["comparison"]["baselines"]) == {
        "router",
        "all_largest",
        "all_smallest",
        "random",
        "length",
    }
    assert routing["comparison"]["quality"]["source"] == "labels"
    assert routing["comparison"]["savings"]["vs_all_largest"]["saving_per_month"] > 0
    assert routing["escalation"]["enabled"] and routing["escalation"]["estimated"]
    assert routing["escalation"]["method"].startswith("logistic fit of the router score")
    overhead = json.loads(out.read_text())["timing"]["router_overhead"]
    assert (
        overhead["source"] in ("measured", "stored", "not_measured") and "overhead" not in routing
    )


def test_knn_router_scores_hard_prompts_above_easy_ones(bundled: Path) -> None:
    replace_router(
        bundled,
        "router:\n  kind: knn\n  k: 7\n  thresholds: [{max_score: 5, tier: small}]\n  default_tier: large\n",
    )
    project = api.load_project(bundled)
    records = {r.fixture_id: r for r in api.replay(project).records}
    tags = {fx.id: fx.tags for fx in project.fixtures}
    hard = [r.route_score for i, r in records.items() if "short-hard" in tags[i]]
    easy = [r.route_score for i, r in records.items() if "long-easy" in tags[i]]
    assert sum(hard) / len(hard) > 5 > sum(easy) / len(easy)


def test_knn_router_rejects_labels_outside_its_classes(bundled: Path, tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text(
        "suite: support\nfixtures:\n  - {id: a, label: medium, messages: [{role: user, content: hi}]}\n"
    )
    replace_router(
        bundled,
        "router:\n  kind: knn\n  train: [train.yaml]\n  thresholds: [{max_score: 5, tier: small}]\n"
        "  default_tier: large\n",
    )
    with pytest.raises(ConfigError, match="label 'medium' is not one of") as info:
        api.run(api.load_project(bundled))
    assert "train.yaml" in str(info.value)


def test_an_unknown_embedding_model_is_a_located_config_error(bundled: Path) -> None:
    bundled.write_text(
        bundled.read_text().replace("model: all-MiniLM-L6-v2", "model: no-such-embedder")
    )
    with pytest.raises(ConfigError, match="no-such-embedder") as info:
        api.run(api.load_project(bundled))
    assert str(info.value).startswith(f"{bundled}:") and "router.model" in str(info.value)
