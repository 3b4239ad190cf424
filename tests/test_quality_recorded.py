"""Quality on recorded responses, end to end: live runs against the vLLM double record every
answer (and the judge's replies), offline runs score those recordings, floors break the build,
agreement compares the tiers, and `frontier` places the stack variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from costguard import api
from costguard.engine.recordings import RESPONSES_FILE
from costguard.model.variants import build_variants
from tests.conftest import CHAT_TEMPLATE, run_cli
from tests.doubles.fake_vllm import FakeVLLM
from tests.test_live_backend import configure

FIXTURES = """\
suite: support
defaults:
  sampling: {temperature: 0}
fixtures:
  - id: reset-password
    weight: 2
    messages: [{role: user, content: "How do I reset my password?"}]
    expect:
      output_tokens: 20
      assertions: [{icontains: settings}]
  - id: reset-password-dup
    messages: [{role: user, content: "How do I reset my password?"}]
    expect:
      output_tokens: 20
      assertions: [{icontains: settings}]
  - id: order-status
    messages: [{role: user, content: "Where is my order 12345?"}]
    expect:
      output_tokens: 30
      assertions:
        - icontains: tracking number
        - not_contains: cannot
  - id: refactor
    suite: coding
    messages: [{role: user, content: "Refactor this recursive function to iterative."}]
    expect:
      output_tokens: 50
      reference: "Replace the recursion with a while loop over an explicit stack."
      assertions:
        - contains: loop
        - judge: {rubric: "Uses a loop instead of recursion.", min_score: 0.8}
          weight: 2
  - id: greeting
    messages: [{role: user, content: "Hello there"}]
    expect: {output_tokens: 5}
"""

SMALL = {
    "reset my password": "Open Settings, then Security, and choose Reset password.",
    "Where is my order": "Sorry, I cannot help with orders.",
}
LARGE = {
    "## Rubric": '{"score": 0.9, "reason": "It iterates with a loop."}',  # judge requests (first: they quote the fixture)
    "reset my password": "Go to Settings and pick Security, then Reset password.",
    "Where is my order": "Your tracking number is in the shipping email.",
    "Refactor": "Use a while loop with an explicit stack instead of recursion.",
}


@pytest.fixture(scope="module")
def recorded_once(tmp_path_factory: pytest.TempPathFactory):
    """The project with endpoints on two vLLM doubles and its fixtures recorded on both tiers."""
    project_dir = tmp_path_factory.mktemp("recorded")
    (project_dir / "chat.jinja").write_text(CHAT_TEMPLATE)
    (project_dir / "fixtures").mkdir()
    (project_dir / "fixtures" / "support.yaml").write_text(FIXTURES)
    small = FakeVLLM("test/small-8b", responses=SMALL).start_in_thread()
    large = FakeVLLM("test/large-70b", responses=LARGE).start_in_thread()
    try:
        configure(project_dir, small.base_url, large.base_url)
        live = api.run(api.load_project(project_dir / "costguard.yaml"), backend="endpoint")
        # every fixture on the large tier too: a stack variant, run live
        api.run(
            api.with_variant(api.load_project(project_dir / "costguard.yaml"), "only large"),
            backend="endpoint",
        )
        yield project_dir, live, small, large
    finally:
        small.stop()
        large.stop()


@pytest.fixture
def recorded(recorded_once, tmp_path: Path):  # noqa: ANN001
    """A copy of the recorded project for one test (tests may edit recordings and fixtures)."""
    source, live, small, large = recorded_once
    copy = tmp_path / "project"
    shutil.copytree(source, copy)
    return copy, live, small, large


def by_id(report) -> dict:  # noqa: ANN001
    return {r["id"]: r for r in report.records}


def test_live_run_scores_the_replies_and_records_the_judge(recorded) -> None:  # noqa: ANN001
    project_dir, live, _, large = recorded
    quality = by_id(live)
    assert quality["reset-password"]["quality"]["passed"] is True
    assert (
        quality["reset-password-dup"]["quality"]["passed"] is True
    )  # the exact cache served reset-password's answer
    order = quality["order-status"]["quality"]
    assert (order["passed"], order["score"], order["tier"]) == (False, 0.0, "small")
    refactor = quality["refactor"]["quality"]
    assert refactor["passed"] is True and refactor["score"] == pytest.approx((1.0 + 2 * 0.9) / 3)
    assert (
        refactor["assertions"][1]["message"]
        == "judge (large) scored 0.90 >= 0.8: It iterates with a loop."
    )
    assert "quality" not in quality["greeting"]
    # the judge's request went to the large server and its reply was recorded
    assert any("## Rubric" in r["messages"][-1]["content"] for r in large.requests)
    lines = [
        json.loads(x)
        for x in (project_dir / "recordings" / RESPONSES_FILE).read_text().splitlines()
    ]
    assert {r["fixture_id"] for r in lines if "#judge-" in r["fixture_id"]} == {"refactor#judge-1"}
    # judging is not the run's traffic: the replay section counts the fixtures' requests only
    assert live.get("replay")["requests"]["sent"] == 4


def test_offline_run_scores_the_recordings_like_the_live_run(recorded) -> None:  # noqa: ANN001
    project_dir, live, small, large = recorded
    sent = len(small.requests) + len(large.requests)
    offline = api.run(api.load_project(project_dir / "costguard.yaml"))
    assert len(small.requests) + len(large.requests) == sent  # nothing was sent
    assert offline.get("backend") == "offline"
    for fid, record in by_id(offline).items():
        assert record.get("quality") == by_id(live)[fid].get("quality"), fid
    quality = offline.get("quality")
    assert (
        quality["fixtures"],
        quality["measured"],
        quality["unmeasured"],
        quality["partial"],
    ) == (4, 4, 0, 0)
    assert quality["suites"]["coding"]["score"] == pytest.approx(2.8 / 3)
    assert quality["tiers"]["small"]["failed"] == 1
    assert not any("quality is unmeasured" in w for w in offline.get("warnings"))
    assert offline.get("recordings")["judge"] == 1  # the judge reply is current, not orphaned
    # small-vs-large agreement from the recordings
    agreement = offline.get("agreement")
    assert agreement["reference_tier"] == "large" and agreement["tiers"]["small"]["fixtures"] == 4
    assert agreement["lowest"][0]["id"] == "order-status"


def test_a_quality_floor_breaks_the_build(recorded) -> None:  # noqa: ANN001
    project_dir, *_ = recorded
    api.run(api.load_project(project_dir / "costguard.yaml")).write(project_dir / "offline.json")
    (project_dir / "floors.yaml").write_text(
        "quality: {on_unmeasured: fail}\n"
        "rules:\n"
        "  quality: {metric: quality_score, min: 0.5}\n"
        "  support: {metric: quality_score, suite: support, min: 0.9}\n"
        "  small: {metric: quality_score, tier: small, min: 0.9, level: warn}\n"
    )
    proc = run_cli("check", "--policy", "floors.yaml", "offline.json", cwd=project_dir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL support: " in proc.stdout and "WARN small: " in proc.stdout
    (project_dir / "floors.yaml").write_text(
        "rules:\n  quality: {metric: quality_score, min: 0.5}\n"
    )
    assert (
        run_cli("check", "--policy", "floors.yaml", "offline.json", cwd=project_dir).returncode == 0
    )


def test_offline_without_a_recording_counts_the_fixture_unmeasured(recorded) -> None:  # noqa: ANN001
    project_dir, *_ = recorded
    path = project_dir / "recordings" / RESPONSES_FILE
    kept = [
        line
        for line in path.read_text().splitlines()
        if not (
            json.loads(line)["fixture_id"] == "order-status" and json.loads(line)["tier"] == "small"
        )
    ]
    path.write_text("\n".join(kept) + "\n")
    report = api.run(api.load_project(project_dir / "costguard.yaml"))
    quality = report.get("quality")
    assert (quality["measured"], quality["unmeasured"]) == (3, 1)
    assert (
        by_id(report)["order-status"]["quality"]["reason"] == "no recorded response on tier small"
    )
    assert any(
        w.startswith("quality is unmeasured for 1 of 4 fixtures") for w in report.get("warnings")
    )
    proc = run_cli("run", "-o", "r.json", cwd=project_dir)
    assert "over 3 of 4 fixtures with assertions; 1 unmeasured" in proc.stdout


def test_frontier_on_recorded_responses(recorded) -> None:  # noqa: ANN001
    project_dir, *_ = recorded
    (project_dir / "floors.yaml").write_text(
        "rules:\n  quality: {metric: quality_score, min: 0.95}\n"
    )
    project = api.load_project(project_dir / "costguard.yaml")
    frontier = api.frontier(
        project, build_variants(project.stack), policy=project_dir / "floors.yaml"
    )
    outcomes = {o.name: o for o in frontier.outcomes}
    assert outcomes["only large"].quality == max(o.quality for o in outcomes.values())
    assert outcomes["only small"].quality < outcomes["current"].quality
    assert (
        outcomes["only small"].cost_per_month
        < outcomes["current"].cost_per_month
        < outcomes["only large"].cost_per_month
    )
    # refactor was never recorded on the small tier: that variant's quality rests on 3 of 4 fixtures
    assert {
        n: (o.quality_measured, o.quality_fixtures)
        for n, o in outcomes.items()
        if o.quality_measured != 4
    } == {"only small": (3, 4)}
    assert "latency_p95_s" in frontier.objectives  # every variant's answers carry recorded latency
    # no variant on the frontier is dominated, and every dominated one names who dominates it
    for o in frontier.outcomes:
        assert o.on_frontier == (o.dominated_by is None)
    assert frontier.recommended == "only large"  # the only variant meeting the 0.95 floor
    assert frontier.exit_code == 0
    proc = run_cli(
        "frontier",
        "--policy",
        "floors.yaml",
        "--variant",
        "only small",
        "--format",
        "json",
        cwd=project_dir,
    )
    assert proc.returncode == 1, proc.stderr  # neither current nor only small meets the floor
    data = json.loads(proc.stdout)
    assert [v["name"] for v in data["variants"]] == ["current", "only small"] and data[
        "recommended"
    ] is None


def test_prune_keeps_current_judge_replies_and_drops_stale_ones(recorded) -> None:  # noqa: ANN001
    project_dir, *_ = recorded
    path = project_dir / "recordings" / RESPONSES_FILE

    def judge_entries() -> int:
        return sum(
            "#judge-" in json.loads(line)["fixture_id"] for line in path.read_text().splitlines()
        )

    assert judge_entries() == 1
    proc = run_cli("recordings", "prune", cwd=project_dir)
    assert proc.returncode == 0 and proc.stdout.startswith("dropped 0 of"), (
        proc.stdout + proc.stderr
    )
    assert judge_entries() == 1
    fixtures = project_dir / "fixtures" / "support.yaml"
    fixtures.write_text(
        fixtures.read_text().replace("Uses a loop instead of recursion.", "Explains the loop.")
    )
    stats = json.loads(run_cli("recordings", "stats", "--format", "json", cwd=project_dir).stdout)
    assert stats["judge"] == 0
    assert {
        "fixture": "refactor#judge-1",
        "tier": "large",
        "why": "judged an answer or rubric that is no longer current",
    } in stats["stale_detail"]
    assert run_cli("recordings", "prune", cwd=project_dir).stdout.startswith("dropped 1 of")
    assert judge_entries() == 0


def test_a_semantic_cache_hit_is_scored_on_the_cached_answer(recorded) -> None:  # noqa: ANN001
    project_dir, *_ = recorded
    config = project_dir / "costguard.yaml"
    config.write_text(config.read_text() + "caches:\n  semantic: {enabled: true, threshold: 0.9}\n")
    fixtures = project_dir / "fixtures" / "support.yaml"
    fixtures.write_text(
        fixtures.read_text()
        + """\
  - id: order-status-again
    messages: [{role: user, content: "Where is my order 12345, please?"}]
    expect:
      output_tokens: 30
      assertions: [{icontains: tracking number}]
"""
    )
    records = by_id(api.run(api.load_project(config)))
    again = records["order-status-again"]
    assert (
        again["cache"]["outcome"] == "semantic"
        and again["extra"]["semantic"]["source"] == "order-status"
    )
    # never recorded itself: it is scored on the answer the cache served (order-status's, from small)
    quality = again["quality"]
    assert (quality["measured"], quality["passed"], quality["tier"]) == (True, False, "small")
    assert quality["assertions"][0]["message"] == "does not contain 'tracking number' (any case)"
