"""The semantic cache on the bundled support FAQ with the real MiniLM model: the threshold sweep
shows wrong hits rising as the threshold drops, and the shipped threshold serves no adversarial
near-duplicate (a reversed question, a swapped entity) the other's answer."""

from __future__ import annotations

import shutil

import pytest

from costguard.model.config import load_stack
from costguard.report.run_report import load_report
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def support(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, float]:
    root = tmp_path_factory.mktemp("example")
    for name in ("costguard.yaml", "fixtures", "tokenizers"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    # One real CLI run (one model load): the report and what the terminal shows.
    proc = run_cli(
        "run", "--fixtures", "fixtures/support.yaml", "--out", "r.json", cwd=root, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    threshold = load_stack(root / "costguard.yaml").config.caches.semantic.threshold
    return load_report(root / "r.json").data, proc.stdout, threshold


def test_the_example_ships_the_semantic_cache_on(support) -> None:
    data, _, threshold = support
    semantic = data["cache"]["semantic"]
    assert semantic["enabled"] and semantic["threshold"] == threshold
    assert semantic["candidates"] > 50  # support requests that reached the layer


def test_sweep_shows_wrong_hits_rising_as_the_threshold_drops(support) -> None:
    data, stdout, _ = support
    sweep = sorted(data["cache"]["semantic"]["sweep"], key=lambda row: row["threshold"])
    wrong = [row["wrong_hits"] for row in sweep]
    assert [row["threshold"] for row in sweep][:2] == [0.80, 0.82]
    assert all(
        a >= b for a, b in zip(wrong, wrong[1:], strict=False)
    )  # never fewer at a lower threshold
    low = next(row for row in sweep if row["threshold"] == 0.80)
    high = next(row for row in sweep if row["threshold"] == 0.98)
    assert low["wrong_hits"] > high["wrong_hits"] > 0
    assert 0 < low["false_hit_rate"] <= 1 and low["hits"] >= low["wrong_hits"]
    # The terminal prints the sweep, marking the shipped threshold.
    assert "Semantic cache: threshold sweep" in stdout and "(shipped)" in stdout


def test_adversarial_near_duplicates_do_not_hit_at_the_shipped_threshold(support) -> None:
    data, _, _ = support
    records = {r["id"]: r for r in data["records"]}
    adversarial = [fid for fid in records if fid.endswith("-adv")]
    assert len(adversarial) == 10
    for fid in adversarial:
        assert records[fid]["cache"]["outcome"] != "semantic", records[fid]["cache"]
        base = records[fid[: -len("-adv")]]
        assert base["cache"]["outcome"] != "semantic"
    semantic = data["cache"]["semantic"]
    # no hit at all leaves the false-hit rate undefined (null), never a made-up 0%
    assert semantic["wrong_hits"] == 0
    assert semantic["false_hit_rate"] == (None if semantic["hits"] == 0 else 0)
    # The same pairs DO hit at 0.98 and are judged wrong there (the cached answer is the base
    # fixture's reference, held against the adversarial fixture's assertions).
    high = next(row for row in semantic["sweep"] if row["threshold"] == 0.98)
    assert high["wrong_hits"] >= 3


def test_semantic_hits_are_labelled_with_what_they_were_judged_on(support) -> None:
    data, _, _ = support
    for r in data["records"]:
        if r["cache"]["outcome"] == "semantic":
            note = r["extra"]["semantic"]
            assert note["answer_source"] == "reference" and note["correct"] in (True, False, None)
            assert r["cost_usd"] == 0 and r["saved_by_cache_usd"] > 0


def test_shards_report_their_own_semantic_hits_and_merge_into_the_whole_sweep(
    support, tmp_path
) -> None:
    """Each shard counts the sweep's hits among its own fixtures (the sweep runs over all of
    them); the shards' hits add up to the unsharded run's, and the merged report equals it."""
    data, _, _ = support
    root = tmp_path
    for name in ("costguard.yaml", "fixtures", "tokenizers"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    for i in (1, 2):
        proc = run_cli(
            "run", "--fixtures", "fixtures/support.yaml", "--shard", f"{i}/2",
            "--out", f"s{i}.json", cwd=root, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    shards = [load_report(root / f"s{i}.json").data for i in (1, 2)]
    whole = {row["threshold"]: row["hits"] for row in data["cache"]["semantic"]["sweep"]}
    for threshold, hits in whole.items():
        parts = [
            next(r["hits"] for r in s["cache"]["semantic"]["sweep"] if r["threshold"] == threshold)
            for s in shards
        ]
        assert sum(parts) == hits, (threshold, parts)
    proc = run_cli(
        "merge", "s1.json", "s2.json", "--fixtures", "fixtures/support.yaml", "--out", "m.json",
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    merged = load_report(root / "m.json").data
    assert merged["cache"]["semantic"]["sweep"] == data["cache"]["semantic"]["sweep"]
