"""The replay driver against the vLLM double, and the pure parts of live measurement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from costguard.engine.recordings import Recording, RecordingStore, confidence_from_reply
from costguard.errors import ConfigError
from costguard.model.pricing import TierPrice
from costguard.serving.metrics import ClientUsage, HistogramStat, MetricsDelta, reconcile
from costguard.serving.openai_client import CompletionResult, RetryPolicy
from costguard.serving.replay import (
    ReplayRequest,
    latency_distribution,
    latency_summary,
    poisson_arrivals,
    run_replay,
    throughput_profile,
)
from tests.doubles.fake_vllm import FakeVLLM

FAST = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.02)


def requests_for(url: str, n: int) -> list[ReplayRequest]:
    return [
        ReplayRequest(
            url,
            {
                "model": "m",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 8,
            },
        )
        for i in range(n)
    ]


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted(
        [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1])
    )
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_concurrency_is_bounded_and_every_request_answered():
    with FakeVLLM("m", ttft_s=0.02, tpot_s=0.002).start_in_thread() as server:
        progress: list[tuple[str, int, int]] = []
        outcome = run_replay(requests_for(server.base_url, 24), concurrency=4, timeout_s=10, retry=FAST,
                             progress=lambda *a: progress.append(a), handle_sigint=False)  # fmt: skip
    assert outcome.stopped is None and outcome.completed == 24
    assert 2 <= max_overlap(outcome.spans) <= 4  # type: ignore[arg-type]
    assert progress[-1] == ("replay", 24, 24)
    assert all(
        r is not None and r.completion_tokens == 8 and r.ttft_s is not None for r in outcome.results
    )
    # replies come back in request order, whatever order they finished in
    assert [r.text for r in outcome.results] == [  # type: ignore[union-attr]
        FakeVLLM("m")._make_reply(f"question {i}", 8, False, None).text for i in range(24)
    ]


def test_poisson_arrivals_pace_the_requests():
    arrivals = poisson_arrivals(400, 50.0, seed=1)
    assert arrivals == poisson_arrivals(400, 50.0, seed=1) and arrivals != poisson_arrivals(
        400, 50.0, seed=2
    )
    gaps = np.diff([0.0, *arrivals])
    assert 0.017 < gaps.mean() < 0.023  # 1/rate
    with FakeVLLM("m").start_in_thread() as server:
        outcome = run_replay(requests_for(server.base_url, 15), concurrency=8, timeout_s=10,
                             request_rate_per_s=50.0, seed=3, handle_sigint=False)  # fmt: skip
    expected = poisson_arrivals(15, 50.0, seed=3)
    sent = [span[0] for span in outcome.spans]  # type: ignore[index]
    assert all(
        s >= a - 0.002 for s, a in zip(sent, expected, strict=True)
    )  # never before its arrival
    assert outcome.duration_s >= expected[-1]


def test_a_request_failing_after_its_retries_stops_the_replay():
    with FakeVLLM("m", ttft_s=0.01, fail_after=3).start_in_thread() as server:
        outcome = run_replay(requests_for(server.base_url, 40), concurrency=2, timeout_s=10, retry=FAST,
                             handle_sigint=False)  # fmt: skip
    assert (
        outcome.stopped is not None
        and "HTTP 500" in outcome.stopped
        and "gave up after 2 attempts" in outcome.stopped
    )
    assert 3 <= outcome.completed < 40
    assert len(outcome.failures) == 1 and outcome.retries >= 1
    assert all(
        (r is None) == (s is None) for r, s in zip(outcome.results, outcome.spans, strict=True)
    )


def result(
    prompt: int, cached: int, output: int, ttft: float, e2el: float, itl: list[float] | None = None
) -> CompletionResult:
    return CompletionResult("x", "m", "stop", prompt, cached, output, ttft, itl or [], e2el)


def test_latency_summary_uses_vllm_bench_names_and_numpy_percentiles():
    rng = np.random.default_rng(0)
    results = [result(10, 0, 5, float(t), float(t + e), list(map(float, rng.random(4))))
               for t, e in zip(rng.random(50), rng.random(50), strict=True)]  # fmt: skip
    for r in results:
        r.tpot_s = (r.e2el_s - r.ttft_s) / 4  # type: ignore[operator]
    summary = latency_summary(results)
    ttft = np.array([r.ttft_s for r in results])
    assert summary["mean_ttft_ms"] == pytest.approx(1000 * ttft.mean())
    assert summary["median_ttft_ms"] == pytest.approx(1000 * np.median(ttft))
    assert summary["p99_ttft_ms"] == pytest.approx(1000 * np.percentile(ttft, 99))
    itl = np.concatenate([r.itl_s for r in results])
    assert summary["p99_itl_ms"] == pytest.approx(1000 * np.percentile(itl, 99))
    assert set(summary) == {
        f"{s}_{m}_ms" for s in ("mean", "median", "p99") for m in ("ttft", "tpot", "itl", "e2el")
    }
    assert latency_summary([result(1, 0, 1, None, 0.1)])["mean_ttft_ms"] is None  # type: ignore[arg-type]


def test_latency_distribution_matches_numpy_percentiles_and_skips_unstreamed_metrics():
    rng = np.random.default_rng(1)
    results = [result(10, 0, 5, float(t), float(t + e), list(map(float, rng.random(3))))
               for t, e in zip(rng.random(40), rng.random(40), strict=True)]  # fmt: skip
    dist = latency_distribution(results)
    e2el = np.array([r.e2el_s for r in results])
    for q in (0, 5, 25, 50, 75, 95, 99, 100):
        assert dist["e2el"][f"p{q}"] == pytest.approx(1000 * np.percentile(e2el, q))
    itl = np.concatenate([r.itl_s for r in results])
    assert dist["itl"]["count"] == len(itl)
    assert dist["itl"]["p50"] == pytest.approx(1000 * np.median(itl))
    assert dist["tpot"] is None  # no TPOT was measured for these replies
    unstreamed = latency_distribution([result(1, 0, 1, None, 0.1)])  # type: ignore[arg-type]
    assert unstreamed["ttft"] is None and unstreamed["e2el"]["p50"] == pytest.approx(100.0)


def test_measured_throughput_prices_the_replay_at_its_wall_time():
    results = [
        result(1000, 200, 100, 0.2, 1.0),
        result(500, 0, 50, 0.1, 0.6),
        result(800, 400, 200, 0.3, 2.0),
    ]
    spans = [(0.0, 1.0), (0.5, 1.1), (0.2, 2.2)]
    profile = throughput_profile(results, spans)
    assert profile is not None and profile["window_s"] == pytest.approx(2.2)
    price = TierPrice("t", "gpu_time", "measured throughput", usd_per_second=1.0,
                      prefill_tokens_per_s=profile["prefill_tokens_per_s"],
                      decode_tokens_per_s=profile["decode_tokens_per_s"], measured_throughput=True)  # fmt: skip
    total = sum(price.cost(r.prompt_tokens, r.cached_tokens, r.completion_tokens) for r in results)
    assert total == pytest.approx(2.2)  # $1/s x the tier's busy window
    assert throughput_profile([result(10, 0, 1, None, 0.1)], [(0, 0.1)]) is None  # type: ignore[arg-type]


def test_reconcile_names_each_disagreement():
    delta = MetricsDelta(100, 40, 100, 32, 2, HistogramStat(), HistogramStat(), HistogramStat())
    usage = ClientUsage()
    usage.add(60, 16, 20)
    usage.add(40, 16, 20)
    assert reconcile(delta, usage) == []
    usage.add(10, 0, 5)
    notes = reconcile(delta, usage)
    assert "prompt tokens: server counted 100, replies reported 110" in notes
    assert "finished requests: server counted 2, replies reported 3" in notes
    blind = ClientUsage(requests=2, prompt_tokens=100, cached_tokens=0, completion_tokens=40)
    assert any("--enable-prompt-tokens-details" in n for n in reconcile(delta, blind))


def test_confidence_comes_only_from_a_structured_reply():
    assert confidence_from_reply('{"answer": "yes", "confidence": 0.8}') == 0.8
    assert confidence_from_reply(' {"answer": "yes", "confidence": 1} ') == 1.0
    for text in (
        "yes",
        '{"answer": "yes"}',
        '{"confidence": 7}',
        '{"confidence": true}',
        "{not json",
        "[0.5]",
    ):
        assert confidence_from_reply(text) is None


def test_recording_store_appends_then_saves_sorted_and_rejects_bad_lines(tmp_path):
    store = RecordingStore(tmp_path / "rec")
    for key in ("b", "a", "b"):
        store.put(Recording(key=key, fixture_id=f"f{key}", content_hash="h", tier="t", model="m",
                            reply_model="m", text=key * 3, finish_reason="stop", prompt_tokens=5,
                            cached_tokens=0, completion_tokens=3, e2el_s=0.1))  # fmt: skip
    assert len(store.path.read_text().splitlines()) == 3  # appended as they came
    store.save()
    lines = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["a", "b"]
    assert len(RecordingStore(tmp_path / "rec")) == 2
    store.path.write_text(store.path.read_text() + '{"key": "c"}\n')
    with pytest.raises(ConfigError, match=r"responses.jsonl:3: not a recorded response"):
        len(RecordingStore(tmp_path / "rec"))
