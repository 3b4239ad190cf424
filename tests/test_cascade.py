"""The confidence cascade in the pipeline: who escalates, what it costs, how confidence is sourced."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from costguard import api
from costguard.engine.backends import CallResult, PlannedCall
from costguard.engine.backends.offline import OfflineBackend
from costguard.engine.pipeline import Pipeline
from costguard.engine.routing.cascade import fit_logistic
from costguard.engine.routing.factory import build_router
from tests.conftest import write

FIXTURES = """\
suite: support
defaults:
  sampling: {temperature: 0}
fixtures:
  - id: easy
    label: simple
    messages: [{role: user, content: "What are your opening hours?"}]
    expect: {output_tokens: 40}
  - id: hard
    label: complex
    messages: [{role: user, content: "Our refund job double-pays when two workers race. Why, and how do we fix it?"}]
    expect: {output_tokens: 300}
  - id: hard-again
    label: complex
    messages: [{role: user, content: "Our refund job double-pays when two workers race. Why, and how do we fix it?"}]
    expect: {output_tokens: 300}
  - id: coding
    suite: coding
    label: complex
    messages: [{role: user, content: "Refactor this recursive function to iterative with O(1) space."}]
    expect: {output_tokens: 500}
"""


@pytest.fixture
def cascade_project(project_dir: Path) -> Path:
    (project_dir / "fixtures" / "support.yaml").write_text(FIXTURES)
    config = project_dir / "costguard.yaml"
    config.write_text(
        config.read_text()
        + "cascade: {from_tier: small, to_tier: large, threshold: 0.5, estimate: label}\n"
    )
    return config


def test_low_confidence_answers_escalate_and_pay_for_both_tiers(cascade_project: Path) -> None:
    project = api.load_project(cascade_project)
    report = api.run(project)
    records = {r["id"]: r for r in report.records}
    hard = records["hard"]
    assert hard["escalated"] and hard["served_by"] == "large"
    assert [c["stage"] for c in hard["calls"]] == ["primary", "escalation"]
    assert [c["tier"] for c in hard["calls"]] == ["small", "large"]
    assert hard["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in hard["calls"]))
    assert (
        hard["calls"][0]["confidence"] == 0.0
        and hard["calls"][0]["confidence_source"] == "estimated"
    )
    # the exact duplicate is a cache hit: nothing is served, nothing escalates
    assert (
        records["hard-again"]["cache"]["outcome"] == "exact"
        and not records["hard-again"]["escalated"]
    )
    assert not records["easy"]["escalated"] and records["easy"]["calls"][0]["confidence"] == 1.0
    assert not records["coding"][
        "escalated"
    ]  # routed straight to large: the cascade starts at small
    routing = report.get("routing")
    share = (
        next(r for r in report.records if r["id"] == "hard")["monthly_requests"]
        / report.totals["requests_per_month"]
    )
    assert routing["escalation_rate"] == pytest.approx(share)
    escalation_cost = hard["calls"][1]["cost_usd"] * hard["monthly_requests"]
    assert routing["escalation_cost_per_month"] == pytest.approx(escalation_cost)
    esc = routing["escalation"]
    assert (
        esc["enabled"]
        and esc["estimated"]
        and esc["confidence_sources"] == {"recorded": 0, "estimated": 2, "none": 0}
    )
    assert "label" in esc["method"]
    assert routing["escalation_estimated"] is True
    assert (
        report.tiers["large"]["calls_per_month"]
        > report.tiers["large"]["requests_per_month"] - 1e-9
    )


class ConfidentBackend(OfflineBackend):
    """Offline numbers plus a recorded confidence per fixture, as a live backend reports it."""

    name = "recorded"

    def __init__(self, config, confidence: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.confidence = confidence

    def execute(self, calls: Sequence[PlannedCall]) -> list[CallResult]:
        results = super().execute(calls)
        for call, result in zip(calls, results, strict=True):
            if call.stage == "primary":
                result.confidence = self.confidence.get(call.fixture.id)
        return results


def test_recorded_confidence_wins_over_the_estimate(cascade_project: Path) -> None:
    project = api.load_project(cascade_project)
    config = project.config
    backend = ConfidentBackend(config, {"easy": 0.2, "hard": 0.9})
    pipeline = Pipeline(
        config,
        router=build_router(config, project=project),
        backend=backend,
        prices=project.prices(),
        tokens=api.count_prompt_tokens(project),
    )
    records = {r.fixture_id: r for r in pipeline.run(project.fixtures)}
    assert (
        records["easy"].escalated and not records["hard"].escalated
    )  # the labels would say the opposite
    assert records["easy"].calls[0].confidence_source == "recorded"
    assert pipeline.routing is not None and pipeline.routing.cascade is not None
    assert pipeline.routing.cascade["confidence_sources"] == {
        "recorded": 2,
        "estimated": 0,
        "none": 0,
    }


def test_no_estimate_means_no_escalation_without_a_recorded_confidence(
    cascade_project: Path,
) -> None:
    cascade_project.write_text(
        cascade_project.read_text().replace("estimate: label", "estimate: none")
    )
    report = api.run(api.load_project(cascade_project))
    assert report.get("routing")["escalation_rate"] == 0
    assert report.get("routing")["escalation"]["confidence_sources"]["none"] == 2


def test_router_score_estimate_without_scores_escalates_nothing_and_says_why(
    cascade_project: Path,
) -> None:
    cascade_project.write_text(cascade_project.read_text().replace(", estimate: label", ""))
    routing = api.run(api.load_project(cascade_project)).get("routing")
    assert (
        routing["escalation_rate"] == 0 and routing["escalation"]["confidence_sources"]["none"] == 2
    )
    assert "the rules router gives no score" in routing["escalation"]["method"]


def test_router_score_estimate_fits_the_labels(cascade_project: Path) -> None:
    text = cascade_project.read_text().replace(", estimate: label", "")
    start = text.index("router:")
    end = text.index("\nsuites:") + 1
    length_router = "router:\n  kind: length\n  thresholds: [{max_prompt_tokens: 100000, tier: small}]\n  default_tier: large\n"
    cascade_project.write_text(text[:start] + length_router + text[end:])
    report = api.run(api.load_project(cascade_project))
    esc = report.get("routing")["escalation"]
    assert esc["method"].startswith("logistic fit of the router score on 4 labelled fixtures")
    records = {r["id"]: r for r in report.records}
    # longer prompts are the complex ones here: the fit gives them the lower confidence
    assert records["hard"]["calls"][0]["confidence"] < records["easy"]["calls"][0]["confidence"]


def test_logistic_fit_is_finite_on_separable_labels() -> None:
    a, b = fit_logistic([0, 1, 2, 8, 9, 10], [1, 1, 1, 0, 0, 0])
    assert b < 0 and abs(a) < 1e3
    p = [1 / (1 + pow(2.718281828, -(a + b * x))) for x in (0, 5, 10)]
    assert p[0] > 0.9 and p[2] < 0.1 and 0.2 < p[1] < 0.8


def test_cascade_disabled_is_off(cascade_project: Path) -> None:
    write(
        cascade_project,
        cascade_project.read_text().replace("threshold: 0.5,", "threshold: 0.5, enabled: false,"),
    )
    report = api.run(api.load_project(cascade_project))
    assert report.get("routing")["escalation"] == {"enabled": False}


def test_merged_shards_report_the_same_routing_as_one_run(
    cascade_project: Path, tmp_path: Path
) -> None:
    from costguard.report.run_report import load_report

    project = api.load_project(cascade_project)
    whole = api.run(project).get("routing")
    paths = []
    for i in (1, 2):
        paths.append(
            api.run(api.load_project(cascade_project), shard=(i, 2)).write(
                tmp_path / f"shard{i}.json"
            )
        )
    merged = api.merge_shards(
        api.load_project(cascade_project), [load_report(p) for p in paths]
    ).get("routing")
    assert merged["comparison"]["baselines"] == whole["comparison"]["baselines"]
    assert merged["escalation"]["confidence_sources"] == whole["escalation"]["confidence_sources"]
    assert merged["escalation_rate"] == pytest.approx(whole["escalation_rate"])
    assert merged["router"] == whole["router"]
