"""A server's own prompt token counts: vLLM's `/tokenize` route, or a one-token completion.

`costguard verify` compares these with the offline counts. vLLM's `POST /tokenize` takes the
chat request (`model`, `messages`, `tools`, `add_generation_prompt`) and renders it exactly as
the chat route does, returning `count`. Servers without that route (other OpenAI-compatible
servers) still report `usage.prompt_tokens` for a completion capped at one output token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from costguard.serving.openai_client import (
    BackendCallError,
    BackendConnectionError,
    BackendHTTPError,
    BackendTimeoutError,
    MalformedReplyError,
    _error_detail,
    chat_completion,
    redact_url,
)

if TYPE_CHECKING:
    import aiohttp


def tokenize_url(base_url: str) -> str:
    """`/tokenize` sits at the server root, beside (not under) `/v1`."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return f"{base}/tokenize"


@dataclass(frozen=True)
class ServerCount:
    """A prompt token count as the server reported it."""

    prompt_tokens: int
    via: str  # "tokenize" | "completion"
    cached_tokens: int | None = None  # completion only; None: not reported


class RouteMissing(BackendCallError):
    """The server has no such route (404/405): e.g. no `/tokenize` outside vLLM."""


async def tokenize_chat(
    session: aiohttp.ClientSession,
    base_url: str,
    body: dict[str, Any],
    *,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> ServerCount:
    """POST the chat request (model, messages, tools) to vLLM's `/tokenize`; its `count`."""
    import asyncio

    import aiohttp

    url = tokenize_url(base_url)
    shown = redact_url(url)
    payload = {**body, "add_generation_prompt": True}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        async with session.post(
            url,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
            if resp.status in (404, 405):
                raise RouteMissing(
                    f"{shown}: HTTP {resp.status} (no /tokenize route)", url=url, status=resp.status
                )
            if resp.status >= 400:
                raise BackendHTTPError(
                    f"{shown}: HTTP {resp.status}: {_error_detail(raw)}",
                    url=url,
                    status=resp.status,
                )
    except (asyncio.TimeoutError, TimeoutError):
        raise BackendTimeoutError(f"{shown}: no reply within {timeout_s:g}s", url=url) from None
    except aiohttp.ClientError as exc:
        raise BackendConnectionError(f"{shown}: {type(exc).__name__}: {exc}", url=url) from None
    try:
        reply = json.loads(raw)
    except ValueError:
        raise MalformedReplyError(f"{shown}: reply is not valid JSON", url=url) from None
    count = reply.get("count") if isinstance(reply, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise MalformedReplyError(f"{shown}: reply has no token `count`", url=url)
    return ServerCount(prompt_tokens=count, via="tokenize")


async def one_token_completion(
    session: aiohttp.ClientSession,
    base_url: str,
    body: dict[str, Any],
    *,
    api_key: str | None = None,
    timeout_s: float = 120.0,
) -> ServerCount:
    """A chat completion capped at one output token: the server's `usage.prompt_tokens`."""
    payload = {**body, "max_tokens": 1, "temperature": 0}
    reply = await chat_completion(
        session, base_url, payload, api_key=api_key, timeout_s=timeout_s, stream=False
    )
    return ServerCount(
        prompt_tokens=reply.prompt_tokens,
        via="completion",
        cached_tokens=reply.cached_tokens if reply.cached_reported else None,
    )
