"""Threshold calibration: quantiles of weighted scores, target resolution, in-place YAML edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from costguard.engine.routing.calibration import (
    Calibration,
    calibrate,
    edit_thresholds,
    quantile_thresholds,
    resolve_targets,
    shares_at,
)
from costguard.errors import UsageError
from costguard.model.config import load_stack
from tests.conftest import write


def test_quantile_cuts_hit_the_weighted_share() -> None:
    scores = [float(i) for i in range(10)]
    weights = [1.0] * 10
    (cut,) = quantile_thresholds(scores, weights, [0.7])
    assert 6 <= cut < 7 and cut == 6.5
    assert shares_at(scores, weights, [cut], ["small", "large"]) == {
        "small": 0.7,
        "large": pytest.approx(0.3),
    }
    # a heavy request counts for its traffic, not as one fixture
    (cut,) = quantile_thresholds(scores, [1.0] * 9 + [9.0], [0.5])
    assert shares_at(scores, [1.0] * 9 + [9.0], [cut], ["s", "l"])["l"] == pytest.approx(0.5)


def test_tied_scores_move_together_and_integers_stay_inclusive() -> None:
    scores = [1.0, 2.0, 2.0, 2.0, 3.0]
    (cut,) = quantile_thresholds(scores, [1.0] * 5, [0.5])
    assert cut in (1.5, 2.5)  # never inside the tie
    tokens = [10.0, 20.0, 30.0, 40.0]
    (cut,) = quantile_thresholds(tokens, [1.0] * 4, [0.5], integer=True)
    assert cut == 20.0  # <= 20 tokens: the first half
    low, high = quantile_thresholds([0.0, 5.0, 10.0], [1.0] * 3, [0.0, 1.0], bounds=(0.0, 10.0))
    assert low == 0.0 and high == 10.0  # clamped to the score range


def test_thresholds_are_short_decimals_that_keep_the_split() -> None:
    (cut,) = quantile_thresholds([1.23456789, 1.23459], [1.0, 1.0], [0.5])
    assert 1.23456789 <= cut < 1.23459 and len(repr(cut)) <= 8


def test_tiers_without_a_target_keep_their_proportions() -> None:
    targets = resolve_targets(
        {"large": 0.2}, {"small": 0.6, "mid": 0.2, "large": 0.2}, ["small", "mid", "large"]
    )
    assert targets == {"large": 0.2, "small": pytest.approx(0.6), "mid": pytest.approx(0.2)}
    targets = resolve_targets(
        {"large": 0.5}, {"small": 0.6, "mid": 0.2, "large": 0.2}, ["small", "mid", "large"]
    )
    assert targets["small"] == pytest.approx(0.375) and targets["mid"] == pytest.approx(0.125)
    with pytest.raises(UsageError, match="tier"):
        resolve_targets({"huge": 0.2}, {}, ["small", "large"])
    with pytest.raises(UsageError, match="more than 1"):
        resolve_targets({"small": 0.7, "large": 0.5}, {}, ["small", "large"])


CONFIG = """\
# The stack. Comments and layout must survive calibrate --write.
tiers:
  - {name: small, model: s, tokenizer: {hf: t/t}, pricing: {input_per_mtok: 1, output_per_mtok: 1}}
  - {name: mid, model: m, tokenizer: {hf: t/t}, pricing: {input_per_mtok: 3, output_per_mtok: 3}}
  - {name: large, model: l, tokenizer: {hf: t/t}, pricing: {input_per_mtok: 9, output_per_mtok: 9}}
router:
  kind: complexity
  thresholds:
    - {max_score: 4.0, tier: small}   # cheap first
    - max_score: 6   # the middle tier
      tier: mid
  default_tier: large
  exemplars: {simple: [hi], complex: [prove it]}
traffic: {requests_per_month: 100}
"""


def calibration(new: list[float], key: str = "max_score") -> Calibration:
    tiers = ["small", "mid", "large"]
    shares = dict.fromkeys(tiers, 1 / 3)
    return Calibration("complexity", key, tiers, [4.0, 6.0], new, shares, shares, shares, 3)


def test_write_edits_only_the_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "costguard.yaml", CONFIG)
    edited = edit_thresholds(load_stack(path), calibration([2.125, 7.5]))
    assert edited == CONFIG.replace("max_score: 4.0,", "max_score: 2.125,").replace(
        "max_score: 6 ", "max_score: 7.5 "
    )


def test_write_handles_flow_lists_on_one_line(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "  thresholds:\n    - {max_score: 4.0, tier: small}   # cheap first\n    - max_score: 6   # the middle tier\n      tier: mid\n",
        "  thresholds: [{max_score: 4.0, tier: small}, {max_score: 6, tier: mid}]  # both\n",
    )
    path = write(tmp_path / "costguard.yaml", text)
    edited = edit_thresholds(load_stack(path), calibration([1.0, 9.25]))
    assert (
        "thresholds: [{max_score: 1, tier: small}, {max_score: 9.25, tier: mid}]  # both\n"
        in edited
    )


def test_write_refuses_what_it_cannot_edit_in_place(tmp_path: Path) -> None:
    # the value comes through a YAML alias: there is no number on the threshold's line to edit
    text = CONFIG.replace("max_score: 6   # the middle tier", "max_score: *six   # the middle tier")
    text = text.replace("  kind: complexity", "  kind: complexity\n  top_k: &six 6")
    path = write(tmp_path / "costguard.yaml", text)
    with pytest.raises(UsageError):
        edit_thresholds(load_stack(path), calibration([1.0, 2.0]))


def test_calibrate_needs_a_router_with_thresholds(project_dir: Path) -> None:
    from costguard import api

    with pytest.raises(UsageError, match="rules router has none"):
        calibrate(api.load_project(project_dir / "costguard.yaml"), {"large": 0.5})


def use_length_router(config: Path) -> None:
    """Swap the test project's rules router for a length router with one threshold."""
    text = config.read_text()
    start, end = text.index("router:"), text.index("\nsuites:") + 1
    config.write_text(
        text[:start]
        + "router:\n  kind: length\n  thresholds: [{max_prompt_tokens: 5, tier: small}]\n  default_tier: large\n"
        + text[end:]
    )


def test_calibrate_the_length_router(project_dir: Path) -> None:
    from costguard import api

    config = project_dir / "costguard.yaml"
    use_length_router(config)
    project = api.load_project(config)
    # prompts of 23 and 28 tokens carry 20% of traffic each, the 32-token one (and its duplicate) 60%:
    # the closest split to 50% on the large tier is "longer than 28 tokens" (60%)
    result = calibrate(project, {"large": 0.5})
    assert result.key == "max_prompt_tokens" and result.new == [28.0]
    assert result.achieved == {"small": pytest.approx(0.4), "large": pytest.approx(0.6)}
    write(config, edit_thresholds(project.stack, result))
    assert f"max_prompt_tokens: {int(result.new[0])}, tier: small" in config.read_text()


def test_slack_moves_a_cut_out_of_a_crowd_of_scores() -> None:
    scores = [float(i) for i in range(200)]
    scores[140] = 139.001  # the exact 70% cut would sit in a 0.001-wide gap
    weights = [1.0] * 200
    (tight,) = quantile_thresholds(scores, weights, [0.7])
    assert 139 < tight < 139.001
    (roomy,) = quantile_thresholds(scores, weights, [0.7], slack=0.005)
    assert roomy == 140.0  # half a point more on the lower tier, and 1 score-unit of room each side
    assert shares_at(scores, weights, [roomy], ["s", "l"])["s"] == pytest.approx(0.705)


def test_calibrate_says_unchanged_and_explains_a_missed_target(project_dir: Path) -> None:
    from tests.conftest import run_cli

    config = project_dir / "costguard.yaml"
    use_length_router(config)
    args = ("calibrate", "--target-share", "large=0.5", "--write")
    first = run_cli(*args, cwd=project_dir)
    assert first.returncode == 0, first.stderr
    out = " ".join(first.stdout.split())
    assert "Wrote the new thresholds to costguard.yaml" in out
    # 60% of traffic is one prompt length: 50% cannot be reached, and calibrate says why
    assert "Target missed: large: 60.0% instead of 50.0%" in out and "tied scores" in out
    written = config.read_text()
    again = run_cli(*args, cwd=project_dir)
    assert again.returncode == 0, again.stderr
    assert "Thresholds unchanged: costguard.yaml already holds them (nothing written)" in " ".join(
        again.stdout.split()
    )
    assert "Wrote" not in again.stdout and config.read_text() == written
    # a threshold elsewhere in the same gap routes every fixture the same: unchanged, kept
    config.write_text(written.replace("max_prompt_tokens: 28", "max_prompt_tokens: 30"))
    from costguard import api

    kept = calibrate(api.load_project(config), {"large": 0.5})
    assert kept.new == [30.0] and not kept.changed
