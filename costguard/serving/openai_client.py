"""Async client for OpenAI-compatible servers (vLLM first): one request in, measured numbers out.

Latency figures use the definitions of ``vllm bench serve`` so they can sit beside its output:

* TTFT: request sent -> first chunk that carries a generated token (text, or the final
  EOS chunk); the role-only opening chunk vLLM sends does not count.
* ITL: the gaps between successive token-carrying chunks.
* E2EL: request sent -> the stream finished (``[DONE]`` or end of body).
* TPOT = (E2EL - TTFT) / (completion_tokens - 1); None with fewer than 2 tokens.

Token counts always come from the server's ``usage`` (``prompt_tokens`` includes cached
tokens; ``prompt_tokens_details.cached_tokens`` may be absent or null, which means 0).
A streamed reply without a usage chunk is an error, never a guess.

aiohttp is imported inside the functions so that importing this module stays cheap.

Replies (streamed or not) are parsed in `openai_replies`; its names are importable from here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from costguard.serving.openai_replies import (  # noqa: F401 (re-exported)
    BackendCallError,
    BackendConnectionError,
    BackendHTTPError,
    BackendTimeoutError,
    CompletionResult,
    MalformedReplyError,
    _error_detail,
    _one_line,
    _parse_unary,
    _read_stream,
    parse_retry_after,
    tpot,
)

if TYPE_CHECKING:
    import aiohttp


log = logging.getLogger(__name__)


T = TypeVar("T")


#: Statuses worth retrying: request timeout, rate limit, and server-side failures other than
#: "not implemented" / "HTTP version not supported", which no retry can fix.
DEFAULT_RETRY_STATUSES = frozenset({408, 429} | set(range(500, 600)) - {501, 505})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a failed call again.

    Exponential backoff ``base * 2**(attempt-1)`` capped at ``backoff_cap_s``; ``jitter``
    removes up to that fraction of it at random so that many clients do not retry in step.
    A server's ``Retry-After`` is a floor for the wait (itself capped at
    ``max_retry_after_s``). Connection errors and timeouts are retried; malformed replies are
    not (the same server will answer the same way).
    """

    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 20.0
    jitter: float = 0.5
    max_retry_after_s: float = 60.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    retry_connection_errors: bool = True
    retry_timeouts: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if self.backoff_base_s < 0 or self.backoff_cap_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("RetryPolicy delays must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")

    def should_retry(self, error: BaseException) -> bool:
        if isinstance(error, BackendTimeoutError):
            return self.retry_timeouts
        if isinstance(error, BackendConnectionError):
            return self.retry_connection_errors
        if isinstance(error, BackendHTTPError):
            return error.status in self.retry_statuses
        return False

    def delay_s(
        self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        backoff = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        backoff *= 1.0 - self.jitter * (rng or random).random()
        if retry_after_s is not None:
            backoff = max(backoff, min(max(retry_after_s, 0.0), self.max_retry_after_s))
        return backoff


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy | None = None,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    on_retry: Callable[[int, BackendCallError, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Await ``call()`` until it succeeds, the error is not retryable, or attempts run out.

    ``call`` makes a fresh attempt each time (e.g. ``lambda: chat_completion(...)``). The
    error finally raised says how many attempts were made; a ``CompletionResult`` returned
    records it in ``attempts``.
    """
    policy = policy or RetryPolicy()
    attempt = 1
    while True:
        try:
            result = await call()
        except BackendCallError as error:
            error.attempts = attempt
            if attempt >= policy.max_attempts or not policy.should_retry(error):
                if attempt > 1:
                    error.message = f"{error.message} (gave up after {attempt} attempts)"
                raise
            delay = policy.delay_s(attempt, error.retry_after_s, rng)
            log.info("attempt %d failed (%s); retrying in %.2f s", attempt, error, delay)
            if on_retry is not None:
                on_retry(attempt, error, delay)
            await sleep(delay)
            attempt += 1
            continue
        if isinstance(result, CompletionResult):
            result.attempts = attempt
        return result


async def chat_completion(
    session: aiohttp.ClientSession,
    base_url: str,
    payload: Mapping[str, Any],
    *,
    api_key: str | None = None,
    timeout_s: float,
    stream: bool = True,
) -> CompletionResult:
    """POST ``/v1/chat/completions`` once and measure it.

    ``base_url`` is the server root (``http://host:8000``) or its ``/v1`` URL. Streaming asks
    for ``stream_options.include_usage`` so the token counts come from the server.
    """
    url = endpoint_url(base_url, "chat/completions")
    return await _complete(session, url, payload, api_key, timeout_s, stream, chat=True)


async def text_completion(
    session: aiohttp.ClientSession,
    base_url: str,
    payload: Mapping[str, Any],
    *,
    api_key: str | None = None,
    timeout_s: float,
    stream: bool = True,
) -> CompletionResult:
    """POST ``/v1/completions`` (a raw prompt, no chat template) once and measure it."""
    url = endpoint_url(base_url, "completions")
    return await _complete(session, url, payload, api_key, timeout_s, stream, chat=False)


@functools.lru_cache(maxsize=16)
def _timeout(total_s: float) -> aiohttp.ClientTimeout:
    import aiohttp

    return aiohttp.ClientTimeout(total=total_s)


def endpoint_url(base_url: str, path: str) -> str:
    """``http://h:8000`` or ``http://h:8000/v1`` + ``chat/completions`` -> the v1 route."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/{path.lstrip('/')}"


def redact_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


async def _complete(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    api_key: str | None,
    timeout_s: float,
    stream: bool,
    *,
    chat: bool,
) -> CompletionResult:
    import aiohttp

    shown = redact_url(url) if "@" in url else url
    body = dict(payload)
    body["stream"] = stream
    if stream:
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, Mapping) else {}),
            "include_usage": True,
        }
    else:
        body.pop("stream_options", None)
    accept = "text/event-stream" if stream else "application/json"
    headers = {"Content-Type": "application/json", "Accept": accept}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode("utf-8")

    started = time.perf_counter()
    try:
        async with session.post(
            url, data=data, headers=headers, timeout=_timeout(timeout_s)
        ) as resp:
            if resp.status != 200:
                raw = await resp.read()
                raise BackendHTTPError(
                    f"{shown}: HTTP {resp.status} {resp.reason or ''}".rstrip()
                    + _error_detail(raw),
                    url=shown,
                    status=resp.status,
                    retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
                )
            if stream:
                result = await _read_stream(resp, shown, started, chat)
            else:
                raw = await resp.read()
                result = _parse_unary(raw, shown, time.perf_counter() - started, chat)
            result.status = resp.status
    except BackendCallError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        raise BackendTimeoutError(
            f"{shown}: no complete reply within {timeout_s:g} s", url=shown
        ) from None
    except aiohttp.ClientPayloadError as e:
        raise BackendConnectionError(f"{shown}: reply cut off: {_one_line(e)}", url=shown) from None
    except aiohttp.ServerDisconnectedError:
        raise BackendConnectionError(
            f"{shown}: server closed the connection without a reply", url=shown
        ) from None
    except aiohttp.ClientConnectorError as e:
        raise BackendConnectionError(
            f"{shown}: cannot connect: {_one_line(e)}", url=shown
        ) from None
    except (aiohttp.ClientError, OSError) as e:
        raise BackendConnectionError(
            f"{shown}: connection failed: {type(e).__name__}: {_one_line(e)}", url=shown
        ) from None
    except ValueError as e:  # e.g. an SSE line longer than aiohttp's buffer
        raise MalformedReplyError(f"{shown}: unreadable reply: {_one_line(e)}", url=shown) from None
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s: %d prompt (%d cached) + %d completion tokens in %.3f s",
            shown,
            result.prompt_tokens,
            result.cached_tokens,
            result.completion_tokens,
            result.e2el_s,
        )
    return result
