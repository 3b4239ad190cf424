"""Scraping and diffing vLLM /metrics; the server's counters reconcile with summed usage."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from costguard.errors import BackendError
from costguard.serving import metrics
from costguard.serving.openai_client import chat_completion
from tests.doubles.fake_vllm import FakeVLLM

SHARED = "You are a support agent for Acme. " * 12  # a long shared system prompt


async def replay(base_url: str, contents: list[str], stream_flags: list[bool]):
    async with aiohttp.ClientSession() as session:
        results = []
        for content, stream in zip(contents, stream_flags, strict=True):
            messages = [
                {"role": "system", "content": SHARED},
                {"role": "user", "content": content},
            ]
            results.append(
                await chat_completion(
                    session,
                    base_url,
                    {"model": "m", "messages": messages},
                    timeout_s=10,
                    stream=stream,
                )
            )
        return results


def test_diff_reconciles_with_summed_usage():
    fake = FakeVLLM("m", enable_prompt_tokens_details=True, num_gpu_blocks=1000)
    with fake.start_in_thread() as handle:
        asyncio.run(replay(handle.base_url, ["warm up"], [False]))
        before = metrics.scrape(handle.base_url)
        questions = [
            "Where is my order?",
            "Reset my password",
            "Cancel my plan",
            "Where is my order?",
        ]
        results = asyncio.run(replay(handle.base_url, questions, [True, False, True, False]))
        after = metrics.scrape(handle.base_url + "/v1")

    delta = metrics.diff(before, after)
    assert delta.requests == 4
    assert delta.prompt_tokens == sum(r.prompt_tokens for r in results)
    assert delta.generation_tokens == sum(r.completion_tokens for r in results)
    assert delta.prefix_cache_queries == delta.prompt_tokens
    assert delta.prefix_cache_hits == sum(r.cached_tokens for r in results) > 0
    assert delta.prefix_hit_rate == pytest.approx(
        sum(r.cached_tokens for r in results) / sum(r.prompt_tokens for r in results)
    )
    assert delta.ttft.count == delta.e2e_latency.count == 4
    assert delta.inter_token_latency.count == sum(r.completion_tokens - 1 for r in results)
    assert not delta.counter_reset
    assert metrics.diff(before, after, model_name="m") == delta
    assert metrics.diff(before, after, model_name="other").requests == 0
    assert after.model_names == ["m"]
    assert after.block_size == 16 and after.num_gpu_blocks == 1000
    assert after.gauge("vllm:num_requests_running") == 0


def test_own_parser_agrees_with_prometheus_client():
    from prometheus_client.parser import text_string_to_metric_families

    with FakeVLLM("m").start_in_thread() as handle:
        asyncio.run(replay(handle.base_url, ["a", "b"], [True, False]))
        text = handle.metrics_text()
    snap = metrics.parse_metrics(text)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.type == "counter" and sample.name.endswith("_total"):
                expected = sum(s.value for s in family.samples if s.name == sample.name)
                assert snap.counter(sample.name, "m") == expected, sample.name
            if family.type == "histogram" and sample.name.endswith("_count"):
                assert snap.histogram(family.name, "m").count == sample.value
            if family.type == "histogram" and sample.name.endswith("_sum"):
                assert snap.histogram(family.name, "m").sum == pytest.approx(sample.value)


OPENMETRICS_STYLE = r"""
# HELP vllm:prompt_tokens Number of prefill tokens processed.
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{model_name="small",engine="0"} 100.0
vllm:prompt_tokens_total{model_name="small",engine="1"} 50.0 1712345678000
vllm:prompt_tokens_total{engine="0",model_name="we\"ird\\name"} 7
vllm:prompt_tokens_created{model_name="small",engine="0"} 1.7e+09
# TYPE vllm:request_success counter
vllm:request_success_total{model_name="small",engine="0",finished_reason="stop"} 3
vllm:request_success_total{model_name="small",engine="0",finished_reason="length"} 2
vllm:request_success_total{model_name="small",engine="0",finished_reason="abort"} 0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{model_name="small",engine="0",le="+Inf"} 5
vllm:e2e_request_latency_seconds_sum{model_name="small",engine="0"} 2.5
vllm:e2e_request_latency_seconds_count{model_name="small",engine="0"} 5
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="small",engine="0"} NaN
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="32",engine="0",num_gpu_blocks="None"} 1.0
# EOF
"""


def test_parse_handles_engines_escapes_timestamps_and_openmetrics_names():
    snap = metrics.parse_metrics(OPENMETRICS_STYLE)
    assert snap.counter(metrics.PROMPT_TOKENS, "small") == 150
    assert snap.counter(metrics.PROMPT_TOKENS, 'we"ird\\name') == 7
    assert snap.counter(metrics.PROMPT_TOKENS) == 157
    assert snap.counter(metrics.REQUEST_SUCCESS, "small") == 5
    assert snap.histogram(metrics.E2E_LATENCY, "small").mean == 0.5
    assert snap.block_size == 32 and snap.num_gpu_blocks is None
    assert snap.model_names == ["small", 'we"ird\\name']


def test_counter_reset_is_flagged_and_counted_like_prometheus_increase():
    before = metrics.parse_metrics('vllm:prompt_tokens_total{model_name="m"} 500\n')
    after = metrics.parse_metrics('vllm:prompt_tokens_total{model_name="m"} 40\n')
    delta = metrics.diff(before, after)
    assert delta.counter_reset and delta.prompt_tokens == 40
    assert delta.prefix_hit_rate is None


def test_malformed_metrics_text_names_the_line():
    with pytest.raises(BackendError, match=r"metrics text: line 2: .*no value"):
        metrics.parse_metrics('# TYPE x counter\nvllm:prompt_tokens_total{a="b"}\n')
    with pytest.raises(BackendError, match=r"line 1: .*unterminated label"):
        metrics.parse_metrics('x{a="b} 1\n')


def test_scrape_failures_are_one_line_backend_errors():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(BackendError) as info:
            metrics.scrape(f"http://127.0.0.1:{port}", timeout_s=2)
    assert str(info.value).startswith(f"http://127.0.0.1:{port}/metrics: cannot scrape metrics")
    assert "\n" not in str(info.value)
