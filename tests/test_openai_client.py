"""The replay client against the vLLM double: token counts, latency definitions, retries."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web

from costguard.errors import BackendError
from costguard.serving.openai_client import (
    BackendConnectionError,
    BackendHTTPError,
    BackendTimeoutError,
    CompletionResult,
    MalformedReplyError,
    RetryPolicy,
    call_with_retries,
    chat_completion,
    endpoint_url,
    parse_retry_after,
    text_completion,
)
from tests.doubles.fake_vllm import FakeTokenizer, FakeVLLM

LONG = " ".join(f"word{i}" for i in range(100))
FAST_RETRIES = RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_cap_s=0.05)


def payload(content: str = "hello", **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def run(coro_fn, *args, **kwargs):
    """Run ``coro_fn(session, *args, **kwargs)`` with a fresh session and event loop."""

    async def main():
        async with aiohttp.ClientSession() as session:
            return await coro_fn(session, *args, **kwargs)

    return asyncio.run(main())


@pytest.fixture(scope="module")
def server():
    fake = FakeVLLM("m", enable_prompt_tokens_details=True, ttft_s=0.05, tpot_s=0.01)
    with fake.start_in_thread() as handle:
        yield handle


def test_streaming_latency_follows_vllm_bench_definitions(server):
    result = run(chat_completion, server.base_url, payload(), timeout_s=10)
    assert isinstance(result, CompletionResult)
    assert result.status == 200 and result.model == "m" and result.finish_reason == "stop"
    assert result.completion_tokens == 16  # 15 text tokens + EOS
    assert FakeTokenizer().count(result.text) == 15
    # One inter-token gap per token after the first (the EOS chunk is a token too).
    assert len(result.itl_s) == result.completion_tokens - 1
    assert 0.05 <= result.ttft_s < 1.0
    assert all(gap >= 0.0 for gap in result.itl_s)
    assert sum(result.itl_s) >= 0.9 * 15 * 0.01
    assert result.e2el_s >= result.ttft_s + sum(result.itl_s) - 1e-9
    assert result.tpot_s == pytest.approx(
        (result.e2el_s - result.ttft_s) / (result.completion_tokens - 1)
    )
    assert result.tpot_s >= 0.009


def test_streaming_asks_for_the_usage_chunk(server):
    run(chat_completion, server.base_url, payload(stream_options={"x": 1}), timeout_s=10)
    sent = server.requests[-1]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"x": 1, "include_usage": True}


def test_non_streaming_has_no_ttft_or_tpot(server):
    result = run(
        chat_completion,
        server.base_url + "/v1",
        payload(stream_options={}),
        timeout_s=10,
        stream=False,
    )
    assert "stream_options" not in server.requests[-1]
    assert result.ttft_s is None and result.tpot_s is None and result.itl_s == []
    assert result.e2el_s >= 0.05 + 15 * 0.01
    assert result.completion_tokens == 16


def test_single_token_reply_has_no_tpot(server):
    result = run(chat_completion, server.base_url, payload(max_tokens=1), timeout_s=10)
    assert result.completion_tokens == 1 and result.finish_reason == "length"
    assert result.tpot_s is None and result.itl_s == []


@pytest.mark.parametrize("stream", [True, False])
def test_cached_tokens_are_part_of_prompt_tokens(server, stream):
    content = f"{stream} {LONG}"
    first = run(chat_completion, server.base_url, payload(content), timeout_s=10, stream=stream)
    second = run(chat_completion, server.base_url, payload(content), timeout_s=10, stream=stream)
    assert first.cached_tokens == 0  # prompt_tokens_details absent
    assert second.prompt_tokens == first.prompt_tokens == 111
    assert second.cached_tokens == 96
    assert second.uncached_prompt_tokens == 15


def test_null_prompt_tokens_details_means_zero():
    async def handler(request):
        return web.json_response(
            {
                "model": "m",
                "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": 2,
                    "prompt_tokens_details": None,
                },
            }
        )

    with tiny_server(handler) as url:
        result = run(chat_completion, url, payload(), timeout_s=5, stream=False)
    assert (result.prompt_tokens, result.cached_tokens, result.completion_tokens) == (5, 0, 2)


def test_text_completion_streams_the_prompt_route(server):
    result = run(
        text_completion,
        server.base_url,
        {"model": "m", "prompt": "a b c", "max_tokens": 4},
        timeout_s=10,
    )
    assert result.prompt_tokens == 3 and result.completion_tokens == 4
    assert FakeTokenizer().count(result.text) == 4


def test_retries_429_and_503_then_succeeds_honouring_retry_after():
    fake = FakeVLLM("m", error_sequence=[429, 503], retry_after_s=0.2)
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go(session):
        return await call_with_retries(
            lambda: chat_completion(session, handle.base_url, payload(), timeout_s=5),
            FAST_RETRIES,
            sleep=fake_sleep,
        )

    with fake.start_in_thread() as handle:
        result = run(go)
        assert len(handle.requests) == 3
    assert result.attempts == 3 and result.completion_tokens == 16
    assert len(waits) == 2 and all(w >= 0.2 for w in waits)


def test_dropped_connection_is_retried():
    with FakeVLLM("m", error_sequence=["drop"]).start_in_thread() as handle:
        retried: list[BackendError] = []

        async def go(session):
            return await call_with_retries(
                lambda: chat_completion(session, handle.base_url, payload(), timeout_s=5),
                FAST_RETRIES,
                on_retry=lambda attempt, error, delay: retried.append(error),
            )

        result = run(go)
    assert result.attempts == 2
    assert isinstance(retried[0], BackendConnectionError)
    assert "closed the connection" in str(retried[0])


def test_gives_up_after_max_attempts_with_one_line_message():
    with FakeVLLM("m", error_sequence=[503] * 5).start_in_thread() as handle:

        async def go(session):
            return await call_with_retries(
                lambda: chat_completion(session, handle.base_url, payload(), timeout_s=5),
                RetryPolicy(max_attempts=2, backoff_base_s=0.01),
            )

        with pytest.raises(BackendHTTPError) as info:
            run(go)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{handle.base_url}/v1/chat/completions: HTTP 503")
    assert "injected failure" in message and "gave up after 2 attempts" in message
    assert info.value.status == 503 and info.value.attempts == 2


def test_client_errors_are_not_retried():
    with FakeVLLM("m").start_in_thread() as handle:

        async def go(session):
            return await call_with_retries(
                lambda: chat_completion(
                    session, handle.base_url, payload(max_tokens=0), timeout_s=5
                ),
                FAST_RETRIES,
            )

        with pytest.raises(BackendHTTPError) as info:
            run(go)
        assert len(handle.requests) == 1
    assert info.value.status == 400 and info.value.attempts == 1


def test_api_key_is_sent_and_never_shown(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeVLLM("m", api_key="sk-secret-123").start_in_thread() as handle:
        result = run(
            chat_completion, handle.base_url, payload(), api_key="sk-secret-123", timeout_s=5
        )
        assert result.completion_tokens == 16
        with pytest.raises(BackendHTTPError) as info:
            run(chat_completion, handle.base_url, payload(), api_key="sk-wrong-456", timeout_s=5)
    assert info.value.status == 401 and "Unauthorized" in str(info.value)
    assert "sk-" not in str(info.value) and "sk-" not in caplog.text


def test_timeout_is_a_backend_timeout_error():
    with FakeVLLM("m", ttft_s=3.0).start_in_thread() as handle:
        with pytest.raises(BackendTimeoutError, match=r"no complete reply within 0\.3 s"):
            run(chat_completion, handle.base_url, payload(), timeout_s=0.3)
        assert RetryPolicy().should_retry(BackendTimeoutError("x", url="u"))


def test_connection_refused_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(BackendConnectionError, match="cannot connect"):
            run(chat_completion, f"http://127.0.0.1:{port}", payload(), timeout_s=2)


# ---- malformed replies ---------------------------------------------------------------------


@contextmanager
def tiny_server(handler):
    """A one-route aiohttp server in a thread, for replies the double never gives."""
    ready = threading.Event()
    state = {}

    def serve():
        loop = asyncio.new_event_loop()

        async def start():
            app = web.Application()
            app.router.add_post("/v1/chat/completions", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            state["port"] = runner.addresses[0][1]
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()
            await runner.cleanup()

        state["loop"] = loop
        loop.run_until_complete(start())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(5)


def _text(body: str, content_type: str = "application/json"):
    async def handler(request):
        return web.Response(text=body, content_type=content_type)

    return handler


@pytest.mark.parametrize(
    ("body", "stream", "expected"),
    [
        ("this is not json", False, "reply is not valid JSON"),
        ('{"model": "m", "choices": []}', False, "reply has no 'choices'"),
        (
            '{"model": "m", "choices": [{"message": {"content": "x"}}]}',
            False,
            "reply has no 'usage'",
        ),
        (
            '{"model": "m", "choices": [{"message": {"content": "x"}}],'
            ' "usage": {"prompt_tokens": 3}}',
            False,
            "usage.completion_tokens is missing",
        ),
        (
            'data: {"model": "m", "choices": [{"delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n',
            True,
            "stream ended without a usage chunk",
        ),
        ("data: {not json\n\n", True, "stream chunk 1 is not valid JSON"),
    ],
)
def test_malformed_reply_is_one_line_backend_error(body, stream, expected):
    content_type = "text/event-stream" if stream else "application/json"
    with tiny_server(_text(body, content_type)) as url:
        with pytest.raises(MalformedReplyError) as info:
            run(chat_completion, url, payload(), timeout_s=5, stream=stream)
    message = str(info.value)
    assert isinstance(info.value, BackendError)
    assert "\n" not in message
    assert message.startswith(f"{url}/v1/chat/completions: ")
    assert expected in message
    assert not RetryPolicy().should_retry(info.value)


def test_error_reported_inside_the_stream():
    body = 'data: {"error": {"message": "engine died", "code": 500}}\n\ndata: [DONE]\n\n'
    with tiny_server(_text(body, "text/event-stream")) as url:
        with pytest.raises(BackendHTTPError, match="engine died") as info:
            run(chat_completion, url, payload(), timeout_s=5)
    assert info.value.status == 500


# ---- pure parts ------------------------------------------------------------------------------


def test_retry_policy_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(backoff_base_s=1.0, backoff_cap_s=5.0, jitter=0.0)
    assert [policy.delay_s(a) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = RetryPolicy(backoff_base_s=1.0, backoff_cap_s=5.0, jitter=0.5)
    rng = random.Random(7)
    delays = [jittered.delay_s(2, rng=rng) for _ in range(200)]
    assert all(1.0 <= d <= 2.0 for d in delays) and len(set(delays)) > 100
    assert jittered.delay_s(1, retry_after_s=3.0) == 3.0
    assert RetryPolicy(max_retry_after_s=10).delay_s(1, retry_after_s=3600) == 10
    assert RetryPolicy().should_retry(BackendHTTPError("x", url="u", status=429))
    assert RetryPolicy().should_retry(BackendHTTPError("x", url="u", status=502))
    assert not RetryPolicy().should_retry(BackendHTTPError("x", url="u", status=501))
    assert not RetryPolicy().should_retry(BackendHTTPError("x", url="u", status=404))
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31


def test_endpoint_url_accepts_root_or_v1():
    assert endpoint_url("http://h:8000", "chat/completions") == "http://h:8000/v1/chat/completions"
    assert endpoint_url("http://h:8000/v1/", "completions") == "http://h:8000/v1/completions"


def test_importing_the_client_does_not_import_aiohttp():
    code = (
        "import sys, costguard.serving.openai_client, costguard.serving.metrics;"
        "assert 'aiohttp' not in sys.modules and 'requests' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
