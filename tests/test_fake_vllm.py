"""The vLLM double behaves like vLLM where costguard depends on it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.doubles.fake_vllm import FakeTokenizer, FakeVLLM, PrefixCacheSim

REPO = Path(__file__).resolve().parent.parent
LONG = " ".join(f"word{i}" for i in range(100))  # 100 tokens of content


def chat(base_url: str, content: str = "hello", **extra) -> requests.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=10)


def sse_chunks(text: str) -> list:
    events = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.fixture
def server():
    with FakeVLLM("m", enable_prompt_tokens_details=True).start_in_thread() as handle:
        yield handle


def test_startup_refuses_connections_then_503_then_200():
    fake = FakeVLLM("m", startup_refuse_s=0.6, startup_unhealthy_s=0.6)
    with fake.start_in_thread() as handle:
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"{handle.base_url}/health", timeout=2).status_code
            except requests.ConnectionError:
                status = "refused"
            if not seen or seen[-1] != status:
                seen.append(status)
                if status == 503:
                    assert chat(handle.base_url).status_code == 503
            if status == 200:
                break
            time.sleep(0.05)
        assert seen == ["refused", 503, 200]


def test_streaming_ends_with_usage_chunk_and_done(server):
    r = chat(server.base_url, stream=True, stream_options={"include_usage": True}, max_tokens=5)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    chunks = sse_chunks(r.text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert all("usage" not in c for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 5
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert FakeTokenizer().count(text) == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_streaming_without_include_usage_has_no_usage_chunk(server):
    chunks = sse_chunks(chat(server.base_url, stream=True).text)
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_natural_stop_counts_the_eos_token(server):
    body = chat(server.base_url, max_tokens=100).json()
    text = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == FakeTokenizer().count(text) + 1 == 16
    chunks = sse_chunks(chat(server.base_url, stream=True, max_tokens=100).text)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {"content": ""},
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_prompt_tokens_details_omitted_when_nothing_cached(server):
    usage = chat(server.base_url, "short prompt").json()["usage"]
    assert "prompt_tokens_details" not in usage
    with FakeVLLM("m").start_in_thread() as plain:  # details not enabled: never present
        chat(plain.base_url, LONG)
        assert "prompt_tokens_details" not in chat(plain.base_url, LONG).json()["usage"]


def test_repeated_long_prompt_hits_prefix_cache_in_whole_blocks(server):
    first = chat(server.base_url, LONG).json()["usage"]
    second = chat(server.base_url, LONG).json()["usage"]
    n = first["prompt_tokens"]
    assert n == second["prompt_tokens"] == 110  # prompt_tokens INCLUDES cached tokens
    assert "prompt_tokens_details" not in first
    assert second["prompt_tokens_details"] == {"cached_tokens": (n - 1) // 16 * 16}


def test_fully_cached_prompt_still_recomputes_its_last_block():
    # 32 tokens exactly: two full blocks, but the hit is capped at N-1 -> one block.
    cache = PrefixCacheSim(16)
    keys = cache.block_keys(list(range(32)))
    cache.insert(keys)
    assert cache.lookup(keys, 32) == 16
    assert cache.lookup(cache.block_keys(list(range(33))), 33) == 32


def test_prefix_cache_keys_chain_and_lookup_stops_at_first_miss():
    cache = PrefixCacheSim(4)
    cache.insert(cache.block_keys(list("abcdefghijkl")))
    assert cache.lookup(cache.block_keys(list("abcdefghijklm")), 13) == 12
    # Same second and third blocks after a different first block: no hit at all.
    assert cache.lookup(cache.block_keys(list("XXXXefghijklm")), 13) == 0
    assert cache.lookup(cache.block_keys(list("abcdXXXXijklm")), 13) == 4
    # A cache salt isolates tenants.
    assert cache.lookup(cache.block_keys(list("abcdefghijklm"), salt="t2"), 13) == 0


def test_prefix_cache_evicts_least_recent_deepest_blocks_first():
    cache = PrefixCacheSim(4, num_gpu_blocks=3)
    a = cache.block_keys(list("aaaabbbbcccc"))
    cache.insert(a)
    cache.release(a)
    b = cache.block_keys(list("zzzz"))
    cache.insert(b)  # evicts a's deepest block ("cccc"), keeps its root
    assert len(cache) == 3
    assert cache.lookup(a, 13) == 8


def test_multi_turn_follow_up_hits_the_generated_blocks(server):
    question = " ".join(f"q{i}" for i in range(40))
    first = chat(server.base_url, question, max_tokens=100).json()
    reply = first["choices"][0]["message"]["content"]
    follow_up = {
        "model": "m",
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "and then?"},
        ],
    }
    usage = requests.post(f"{server.base_url}/v1/chat/completions", json=follow_up).json()["usage"]
    computed_before = first["usage"]["prompt_tokens"] + FakeTokenizer().count(reply)
    assert usage["prompt_tokens_details"]["cached_tokens"] == computed_before // 16 * 16
    assert usage["prompt_tokens_details"]["cached_tokens"] > first["usage"]["prompt_tokens"]


def test_tokenize_agrees_with_usage(server):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Count: one, two; three?"},
    ]
    tok = requests.post(
        f"{server.base_url}/tokenize", json={"model": "m", "messages": messages}
    ).json()
    usage = requests.post(
        f"{server.base_url}/v1/chat/completions", json={"model": "m", "messages": messages}
    ).json()["usage"]
    assert tok["count"] == usage["prompt_tokens"] == len(tok["tokens"])
    assert tok["max_model_len"] == 32768
    rendered = FakeTokenizer().render_chat(messages)
    assert rendered.endswith("<|assistant|>\n") and tok["count"] == FakeTokenizer().count(rendered)

    tok = requests.post(
        f"{server.base_url}/tokenize", json={"model": "m", "prompt": "a b, c"}
    ).json()
    usage = requests.post(
        f"{server.base_url}/v1/completions", json={"model": "m", "prompt": "a b, c"}
    ).json()["usage"]
    assert tok["count"] == usage["prompt_tokens"] == 4


def test_metrics_parse_with_prometheus_client_and_count_usage(server):
    from prometheus_client.parser import text_string_to_metric_families

    usages = [chat(server.base_url, LONG).json()["usage"] for _ in range(3)]
    text = requests.get(f"{server.base_url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected_types = {
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter",
        "vllm:request_success": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:cache_config_info": "gauge",
    }
    for name, kind in expected_types.items():
        assert families[name].type == kind, name

    def value(family: str, sample: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    labels = {"model_name": "m", "engine": "0"}
    assert value("vllm:prompt_tokens", "vllm:prompt_tokens_total", **labels) == sum(
        u["prompt_tokens"] for u in usages
    )
    assert value("vllm:generation_tokens", "vllm:generation_tokens_total", **labels) == sum(
        u["completion_tokens"] for u in usages
    )
    assert value("vllm:prefix_cache_queries", "vllm:prefix_cache_queries_total") == 330
    assert value("vllm:prefix_cache_hits", "vllm:prefix_cache_hits_total") == 2 * 96
    assert value("vllm:request_success", "vllm:request_success_total", finished_reason="stop") == 3
    assert value("vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_count") == 3
    info = families["vllm:cache_config_info"].samples[0].labels
    assert info["block_size"] == "16" and info["engine"] == "0"


def test_api_key_protects_v1_only():
    with FakeVLLM("m", api_key="k-123").start_in_thread() as handle:
        assert chat(handle.base_url).status_code == 401
        assert requests.get(f"{handle.base_url}/v1/models").status_code == 401
        ok = requests.post(
            f"{handle.base_url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer k-123"},
        )
        assert ok.status_code == 200
        assert requests.get(f"{handle.base_url}/health").status_code == 200
        assert requests.get(f"{handle.base_url}/metrics").status_code == 200


def test_error_sequence_then_normal_service_with_retry_after():
    with FakeVLLM("m", error_sequence=[429, 503], retry_after_s=2).start_in_thread() as handle:
        first, second, third = (chat(handle.base_url) for _ in range(3))
        assert (first.status_code, second.status_code, third.status_code) == (429, 503, 200)
        assert first.headers["Retry-After"] == "2"
        assert first.json()["error"]["code"] == 429
        assert len(handle.requests) == 3


def test_fail_after_answers_500_or_drops_the_connection():
    with FakeVLLM("m", fail_after=1, fail_count=1).start_in_thread() as handle:
        assert [chat(handle.base_url).status_code for _ in range(3)] == [200, 500, 200]
    with FakeVLLM("m", fail_after=1, fail_mode="drop").start_in_thread() as handle:
        assert chat(handle.base_url).status_code == 200
        with pytest.raises(requests.ConnectionError):
            chat(handle.base_url)
        assert requests.get(f"{handle.base_url}/health").status_code == 200


def test_die_after_makes_health_503_forever():
    with FakeVLLM("m", die_after=2).start_in_thread() as handle:
        assert [chat(handle.base_url).status_code for _ in range(3)] == [200, 200, 500]
        assert requests.get(f"{handle.base_url}/health").status_code == 503
        time.sleep(0.1)
        assert requests.get(f"{handle.base_url}/health").status_code == 503


def test_configured_responses_and_json_mode():
    fake = FakeVLLM("m", responses={"capital of France": ("Paris.", 0.97), "weather": "Sunny."})
    with fake.start_in_thread() as handle:
        body = chat(handle.base_url, "What is the capital of France?").json()
        assert body["choices"][0]["message"]["content"] == "Paris."
        assert body["usage"]["completion_tokens"] == 3  # "Paris", ".", EOS
        js = chat(
            handle.base_url, "capital of France?", response_format={"type": "json_object"}
        ).json()
        assert json.loads(js["choices"][0]["message"]["content"]) == {
            "answer": "Paris.",
            "confidence": 0.97,
        }
        js = chat(handle.base_url, "the weather", response_format={"type": "json_object"}).json()
        assert json.loads(js["choices"][0]["message"]["content"])["confidence"] == 0.9


def test_served_model_names_unknown_model_and_context_length():
    fake = FakeVLLM("org/model-7b", served_model_name=["small", "alias"], max_model_len=50)
    with fake.start_in_thread() as handle:
        models = requests.get(f"{handle.base_url}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["small", "alias"]
        assert models["data"][0]["root"] == "org/model-7b"
        ok = requests.post(
            f"{handle.base_url}/v1/chat/completions",
            json={
                "model": "alias",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
        ).json()
        assert ok["model"] == "small"
        missing = requests.post(
            f"{handle.base_url}/v1/chat/completions",
            json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert missing.status_code == 404
        too_long = requests.post(
            f"{handle.base_url}/v1/chat/completions",
            json={"model": "small", "messages": [{"role": "user", "content": LONG}]},
        )
        assert too_long.status_code == 400
        assert "maximum context length is 50" in too_long.json()["error"]["message"]
        assert requests.get(f"{handle.base_url}/version").json() == {"version": "0.33.0"}


def test_ignore_eos_generates_exactly_max_tokens(server):
    body = chat(server.base_url, max_tokens=40, ignore_eos=True).json()
    assert body["usage"]["completion_tokens"] == 40
    assert body["choices"][0]["finish_reason"] == "length"


def test_latency_knobs_shape_the_stream():
    with FakeVLLM(
        "m", ttft_s=0.1, tpot_s=0.02, default_output_tokens=6
    ).start_in_thread() as handle:
        started = time.perf_counter()
        r = chat(handle.base_url, stream=True, stream_options={"include_usage": True})
        elapsed = time.perf_counter() - started
        assert sse_chunks(r.text)[-1]["usage"]["completion_tokens"] == 6
        assert elapsed >= 0.1 + 5 * 0.02


def test_module_runs_in_the_foreground():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.fake_vllm", "--model", "m", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        port = int(re.search(r":(\d+)$", line.strip()).group(1))
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
