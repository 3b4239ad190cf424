"""What keeps a million-request run's records small changes no figure: equal calls priced once
and shared (`pipeline_io.SharedCalls`), the counterfactual projected a chunk of requests at a
time (`pipeline.RECORD_CHUNK`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from costguard import api
from costguard.engine import pipeline
from costguard.engine.backends import CallResult
from costguard.engine.pipeline_io import SharedCalls, price_call
from costguard.model.pricing import PricingConfig, TierPrice, resolve_price
from costguard.report.run_report import RunReport

REPO = Path(__file__).resolve().parent.parent


def _comparable(report: RunReport) -> tuple[list[str], dict]:
    rows = [line for line in report.to_json().splitlines() if line.startswith('    {"id":')]
    skip = ("created_at", "timing", "stages", "records")
    return rows, {k: v for k, v in report.data.items() if k not in skip}


def test_small_chunks_and_no_shared_calls_report_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    project = api.load_project(REPO / "costguard.yaml")
    usual = api.run(project)
    monkeypatch.setattr(pipeline, "RECORD_CHUNK", 3)
    monkeypatch.setattr(SharedCalls, "FREE", 0)
    monkeypatch.setattr(SharedCalls, "priced", lambda self, *a: price_call(*a))
    apart = api.run(project)
    assert _comparable(apart) == _comparable(usual)
    assert len(_comparable(usual)[0]) == len(project.fixtures)


def _price() -> TierPrice:
    return resolve_price(
        "small",
        PricingConfig(input_per_mtok=0.1, cached_input_per_mtok=0.05, output_per_mtok=0.4),
        gpus=1,
        base_dir=REPO,
        where="tiers[0].pricing",
    )


def test_equal_calls_are_one_object_and_measured_ones_their_own() -> None:
    price = _price()
    shared = SharedCalls()

    def result(n: int, **measured: object) -> CallResult:
        return CallResult(n, 0, 7, "exact", "none", "prior", **measured)  # type: ignore[arg-type]

    a = shared.priced(price, "small", "primary", result(100))
    b = shared.priced(price, "small", "primary", result(100))
    assert a is b and shared.alone(a) is shared.alone(b) and shared.alone(a) == [a]
    assert a == price_call(price, "small", "primary", result(100))
    other = shared.priced(price, "small", "counterfactual", result(100))
    assert other is not a and other.stage == "counterfactual"
    timed = [shared.priced(price, "small", "primary", result(100, latency_s=0.5)) for _ in range(2)]
    assert timed[0] is not timed[1] and timed[0].latency_s == 0.5
    assert shared.alone(timed[0]) is not shared.alone(timed[0])  # a list each


def test_a_table_of_mostly_distinct_calls_stops_growing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SharedCalls, "FREE", 10)
    price = _price()
    shared = SharedCalls()
    for n in range(1000):
        call = shared.priced(
            price,
            "small",
            "primary",
            CallResult(n, 0, 7, "exact", "none", "prior"),
        )
        assert call.input_tokens == n
    assert len(shared._calls) <= 500


def test_a_pipeline_runs_once() -> None:
    """It lets go of its token ids and prefix simulators as it runs: a second run would not
    be the first one's, so it is refused."""
    from costguard.engine.backends.offline import OfflineBackend
    from costguard.engine.pipeline import Pipeline
    from costguard.engine.routing.factory import build_router
    from costguard.engine.run import build_prefix_fleet, build_semantic_embedder

    project = api.load_project(REPO / "costguard.yaml")
    config = project.config
    fleet = build_prefix_fleet(project)
    pipe = Pipeline(
        config,
        router=build_router(config, project=project),
        backend=OfflineBackend(config, None),
        prices=project.prices(),
        tokens=api.count_prompt_tokens(project, keep_ids=list(fleet.instances)),
        prefix=fleet,
        embed=build_semantic_embedder(project),
    )
    assert len(pipe.run(project.fixtures)) == len(project.fixtures)
    assert pipe.prefix is None and pipe.simulation.prefix  # simulated, then let go
    with pytest.raises(RuntimeError, match="runs once"):
        pipe.run(project.fixtures)
