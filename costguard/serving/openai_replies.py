"""What an OpenAI-compatible server answered: the completion (text, usage, timings), its errors,
and the parsing of unary and streamed (SSE) replies."""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn

from costguard.errors import BackendError

if TYPE_CHECKING:
    import aiohttp


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
