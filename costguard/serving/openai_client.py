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
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from costguard.errors import BackendError

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses worth retrying: request timeout, rate limit, and server-side failures other than
#: "not implemented" / "HTTP version not supported", which no retry can fix.
DEFAULT_RETRY_STATUSES = frozenset({408, 429} | set(range(500, 600)) - {501, 505})


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class BackendCallError(BackendError):
    """One failed call to a serving backend. The message is one line and names the URL."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.url = url
        self.status = status
        self.retry_after_s = retry_after_s
        self.attempts = 1
        super().__init__(message)


class BackendHTTPError(BackendCallError):
    """The server answered with an error status (or reported one inside a stream)."""


class BackendConnectionError(BackendCallError):
    """No reply: connection refused or reset, or the reply was cut off."""


class BackendTimeoutError(BackendCallError):
    """No complete reply within the time limit."""


class MalformedReplyError(BackendCallError):
    """The reply arrived but is not what the OpenAI API promises (bad JSON, missing fields)."""


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class CompletionResult:
    """What one completion cost and how long it took, as measured at the client."""

    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int  # includes cached_tokens, as vLLM and OpenAI report it
    cached_tokens: int
    completion_tokens: int
    ttft_s: float | None  # None for non-streamed replies: no first token to observe
    itl_s: list[float] = field(default_factory=list)
    e2el_s: float = 0.0
    tpot_s: float | None = None
    status: int = 200
    attempts: int = 1
    cached_reported: bool = True
    """False when the reply had no `usage.prompt_tokens_details`: the server did not say how many
    prompt tokens came from its cache (cached_tokens is then 0 but unknown, never a measurement).
    vLLM reports it with --enable-prompt-tokens-details."""

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens that were computed (and are billed at the full input price)."""
        return self.prompt_tokens - self.cached_tokens


def tpot(e2el_s: float, ttft_s: float | None, completion_tokens: int) -> float | None:
    """Time per output token after the first, as ``vllm bench serve`` defines it."""
    if ttft_s is None or completion_tokens < 2:
        return None
    return (e2el_s - ttft_s) / (completion_tokens - 1)


# --------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


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


async def _read_stream(
    resp: aiohttp.ClientResponse, url: str, started: float, chat: bool
) -> CompletionResult:
    """Read an SSE reply as it arrives and measure it.

    The SSE framing is done by hand over whatever bytes each read returns (cheaper than
    aiohttp's per-line reads; this loop runs for every token of every replayed request): an
    event ends at a blank line, only ``data:`` fields matter, and every event in one read gets
    that read's arrival time.
    """
    text_parts: list[str] = []
    model: str | None = None
    finish_reason: str | None = None
    usage: Any = None
    ttft: float | None = None
    last_token_at = 0.0
    itl: list[float] = []
    events: list[str] = []
    done = False
    chunk_no = 0
    loads = json.loads
    raw_decode = _JSON.raw_decode
    pending = b""
    stream = resp.content.iter_any().__aiter__()
    while not done:
        try:
            data = await stream.__anext__()
        except StopAsyncIteration:
            data = None
        now = time.perf_counter()
        if data is None:  # end of body: whatever is left is the last event
            text = _normalize_newlines(pending).decode("utf-8", errors="replace")
            events = [p for p in (_sse_data(e) for e in text.split("\n\n")) if p is not None]
            done = True
        else:
            if pending:
                data = pending + data
            if b"\r" in data:  # CRLF or CR line ends; a trailing CR may be half of a CRLF
                keep = data.endswith(b"\r")
                data = _normalize_newlines(data[:-1] if keep else data) + (b"\r" if keep else b"")
            end = data.rfind(b"\n\n")
            if end < 0:
                pending = data
                continue
            pending = data[end + 2 :]
            events = []
            for event in data[:end].decode("utf-8", errors="replace").split("\n\n"):
                # vLLM's framing is one `data: <json>` line per event; anything else is parsed fully.
                if event.startswith("data: ") and "\n" not in event:
                    events.append(event[6:])
                else:
                    payload = _sse_data(event)
                    if payload is not None:
                        events.append(payload)
        for event in events:
            chunk_no += 1
            if event == "[DONE]":
                done = True
                break
            try:
                chunk, end = raw_decode(event)  # json.loads without its two whitespace scans
                if end != len(event) and event[end:].strip():
                    raise ValueError("extra data")
            except ValueError:
                event = event.strip()
                if event == "[DONE]":
                    done = True
                    break
                try:
                    chunk = loads(event)
                except ValueError:
                    _bad_chunk(url, chunk_no, event)
            try:  # the token chunk, as fast as it goes; anything else takes the checked path
                choice = chunk["choices"][0]
            except (KeyError, IndexError, TypeError):
                choice = _other_chunk(chunk, url, chunk_no, event)
            if choice is not None:
                if choice.__class__ is not dict:
                    _bad_chunk(url, chunk_no, event)
                if chat:
                    delta = choice.get("delta")
                    if delta.__class__ is not dict:
                        raise MalformedReplyError(
                            f"{url}: stream chunk {chunk_no} has no 'delta'", url=url
                        )
                    piece = delta.get("content") or ""
                    if piece:
                        carries_token = True
                    else:
                        reasoning = delta.get("reasoning_content") or ""
                        if reasoning.__class__ is not str:
                            _bad_chunk(url, chunk_no, event)
                        carries_token = bool(reasoning)
                else:
                    piece = choice.get("text") or ""
                    carries_token = bool(piece)
                if piece.__class__ is not str:
                    _bad_chunk(url, chunk_no, event)
                finish = choice.get("finish_reason")
                if finish is not None:
                    finish_reason = str(finish)
                    carries_token = True  # EOS: the reply's last token has no text
                if carries_token:
                    text_parts.append(piece)
                    if ttft is None:
                        ttft = now - started
                    else:
                        itl.append(now - last_token_at)
                    last_token_at = now
            if model is None:
                value = chunk.get("model")
                if value.__class__ is str:
                    model = value
            value = chunk.get("usage")
            if value is not None:
                usage = value
        events.clear()
    e2el = time.perf_counter() - started

    if usage is None:
        raise MalformedReplyError(
            f"{url}: stream ended without a usage chunk "
            "(sent stream_options.include_usage=true; is this server OpenAI/vLLM-compatible?)",
            url=url,
        )
    if model is None:
        raise MalformedReplyError(f"{url}: stream chunks have no 'model'", url=url)
    prompt_tokens, cached, completion_tokens = _parse_usage(usage, url)
    return CompletionResult(
        cached_reported=cached is not None,
        text="".join(text_parts),
        model=model,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached or 0,
        completion_tokens=completion_tokens,
        ttft_s=ttft,
        itl_s=itl,
        e2el_s=e2el,
        tpot_s=tpot(e2el, ttft, completion_tokens),
    )


_JSON = json.JSONDecoder()


def _normalize_newlines(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data


def _sse_data(event: str) -> str | None:
    """The data of one SSE event (its `data:` lines joined), or None if it has none."""
    lines = [
        line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")
    ]  # comments (":"), event:, id:, retry: carry nothing for us
    return "\n".join(lines) if lines else None


def _other_chunk(chunk: Any, url: str, chunk_no: int, event: str) -> None:
    """A chunk without a first choice: usage only (``"choices": []``), or an error, or malformed."""
    if not isinstance(chunk, dict):
        raise MalformedReplyError(f"{url}: stream chunk {chunk_no} is not a JSON object", url=url)
    choices = chunk.get("choices")
    if choices:
        _bad_chunk(url, chunk_no, event)
    if "error" in chunk:
        status, message = _error_fields(chunk["error"])
        raise BackendHTTPError(
            f"{url}: server error inside the stream: {message}", url=url, status=status
        )
    if choices is None and "usage" not in chunk:
        raise MalformedReplyError(f"{url}: stream chunk {chunk_no} has no 'choices'", url=url)
    return None


def _bad_chunk(url: str, chunk_no: int, event: str) -> NoReturn:
    """Raise the one-line error for a stream chunk that is not what the API promises."""
    try:
        chunk = json.loads(event)
    except ValueError as e:
        raise MalformedReplyError(
            f"{url}: stream chunk {chunk_no} is not valid JSON ({e})", url=url
        ) from None
    if not isinstance(chunk, dict):
        raise MalformedReplyError(f"{url}: stream chunk {chunk_no} is not a JSON object", url=url)
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise MalformedReplyError(
            f"{url}: stream chunk {chunk_no} has malformed 'choices'", url=url
        )
    raise MalformedReplyError(f"{url}: stream chunk {chunk_no} text is not a string", url=url)


def _parse_unary(raw: bytes, url: str, e2el: float, chat: bool) -> CompletionResult:
    try:
        reply = json.loads(raw)
    except ValueError as e:
        raise MalformedReplyError(f"{url}: reply is not valid JSON ({e})", url=url) from None
    if not isinstance(reply, dict):
        raise MalformedReplyError(f"{url}: reply is not a JSON object", url=url)
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedReplyError(f"{url}: reply has no 'choices'", url=url)
    choice = choices[0]
    if chat:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedReplyError(f"{url}: reply has no 'choices[0].message'", url=url)
        text = message.get("content")
    else:
        text = choice.get("text")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise MalformedReplyError(f"{url}: reply text is not a string", url=url)
    model = reply.get("model")
    if not isinstance(model, str):
        raise MalformedReplyError(f"{url}: reply has no 'model'", url=url)
    if reply.get("usage") is None:
        raise MalformedReplyError(f"{url}: reply has no 'usage'", url=url)
    prompt_tokens, cached, completion_tokens = _parse_usage(reply["usage"], url)
    finish = choice.get("finish_reason")
    return CompletionResult(
        cached_reported=cached is not None,
        text=text,
        model=model,
        finish_reason=str(finish) if finish is not None else None,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached or 0,
        completion_tokens=completion_tokens,
        ttft_s=None,
        itl_s=[],
        e2el_s=e2el,
        tpot_s=None,
    )


def _parse_usage(usage: Any, url: str) -> tuple[int, int | None, int]:
    """(prompt_tokens incl. cached, cached_tokens, completion_tokens) from an OpenAI usage;
    cached_tokens is None when the usage has no `prompt_tokens_details.cached_tokens`."""
    if not isinstance(usage, dict):
        raise MalformedReplyError(f"{url}: 'usage' is not a JSON object", url=url)
    counts = []
    for key in ("prompt_tokens", "completion_tokens"):
        value = usage.get(key)
        if not _is_count(value):
            raise MalformedReplyError(f"{url}: usage.{key} is missing or not a count", url=url)
        counts.append(value)
    details = usage.get("prompt_tokens_details")
    cached: int | None = None
    if details is not None:
        if not isinstance(details, dict):
            raise MalformedReplyError(
                f"{url}: usage.prompt_tokens_details is not an object", url=url
            )
        value = details.get("cached_tokens")
        if value is not None:
            if not _is_count(value):
                raise MalformedReplyError(
                    f"{url}: usage.prompt_tokens_details.cached_tokens is not a count", url=url
                )
            cached = value
    if cached is not None and cached > counts[0]:
        raise MalformedReplyError(
            f"{url}: usage reports {cached} cached of {counts[0]} prompt tokens", url=url
        )
    return counts[0], cached, counts[1]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def _error_fields(error: Any) -> tuple[int | None, str]:
    if isinstance(error, dict):
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else None
        return status, _one_line(error.get("message") or error.get("type") or "unknown error")
    return None, _one_line(error)


def _error_detail(raw: bytes) -> str:
    """': <message>' from an error body (OpenAI, vLLM or plain text), or ''."""
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    try:
        body = json.loads(text)
    except ValueError:
        return f": {_one_line(text)}"
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if key in body:
                return f": {_error_fields(body[key])[1]}"
    return f": {_one_line(text)}"


def _one_line(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
