"""Importing OpenAI-format request logs (request bodies, request/response pairs, Batch API
files) as fixtures, and reading a chat-completion request body the way fixtures hold it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError
from costguard.model.fixture_spec import (
    _MESSAGE_KEYS,
    ID_PATTERN,
    ChatRequest,
    FixtureSpec,
    Message,
    Sampling,
    Tool,
)
from costguard.model.jsonl import json_lines, validate_json_line


def parse_chat_request(body: Any, *, file: str | Path, line: int | None) -> ChatRequest:
    """An OpenAI chat-completion request body -> messages, sampling, model, tools, tool_choice.

    Shared by log import and by calls observed in tests, so both read request bodies the same way:
    content parts are kept (text parts only: a media part is an error, never dropped), tool calls,
    tool results and tool schemas are kept, `max_completion_tokens` stands in for `max_tokens`.
    A key that would change the prompt and that costguard does not know is an error.
    """
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("messages"), list)
        or not body["messages"]
    ):
        raise ConfigError(
            "no chat `messages` list in this request body", file=file, line=line, key="messages"
        )
    messages = []
    for j, m in enumerate(body["messages"]):
        if not isinstance(m, dict) or "role" not in m:
            raise ConfigError("message without a role", file=file, line=line, key=f"messages[{j}]")
        unknown = sorted(k for k, v in m.items() if k not in _MESSAGE_KEYS and v is not None)
        if unknown:
            raise ConfigError(
                f"message key {unknown[0]!r} is not supported (costguard reads "
                f"{', '.join(_MESSAGE_KEYS)})",
                file=file,
                line=line,
                key=f"messages[{j}].{unknown[0]}",
            )
        data = {k: m[k] for k in _MESSAGE_KEYS if m.get(k) is not None}
        if "content" not in data and not data.get("tool_calls"):
            data["content"] = ""
        if data.get("tool_calls") == []:
            del data["tool_calls"]  # vLLM drops an empty list too
        msg = validate_json_line(Message, data, file=file, line=line, at=f"messages[{j}]")
        messages.append(msg.as_request(data.get("content")))
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ConfigError("`tools` must be a list", file=file, line=line, key="tools")
        dumped = []
        for j, tool in enumerate(tools):
            spec = validate_json_line(Tool, tool, file=file, line=line, at=f"tools[{j}]")
            dumped.append({"type": "function", **spec.model_dump(exclude_unset=True)})
        tools = dumped
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not (
        tool_choice in ("none", "auto", "required") or isinstance(tool_choice, dict)
    ):
        raise ConfigError(
            "`tool_choice` must be none, auto, required or {type: function, function: {name}}",
            file=file,
            line=line,
            key="tool_choice",
        )
    sampling_keys = set(Sampling.model_fields)
    sampling = {k: v for k, v in body.items() if k in sampling_keys and v is not None}
    if "max_completion_tokens" in body and "max_tokens" not in sampling:
        sampling["max_tokens"] = body["max_completion_tokens"]
    model = body.get("model") or None
    return ChatRequest(messages, sampling, model, tools, tool_choice)


BATCH_CHAT_URL = "/v1/chat/completions"


def _log_entry(data: dict[str, Any], *, file: Path, line: int) -> tuple[Any, Any, str | None]:
    """(request body, usage or None, custom_id) of one log line: a bare request body, a
    {"request", "response"} pair, or an OpenAI Batch API line (input or output file)."""
    custom_id = data.get("custom_id") if isinstance(data.get("custom_id"), str) else None
    if "body" in data and ("custom_id" in data or "url" in data or "method" in data):
        url = data.get("url")
        if url != BATCH_CHAT_URL:
            raise ConfigError(
                f"batch request for {url!r}: only {BATCH_CHAT_URL} requests import as fixtures",
                file=file,
                line=line,
                key="url",
            )
        body = data["body"]
        response = data.get("response")
    else:
        body = data.get("request", data)
        response = data.get("response")
    usage = None
    if isinstance(response, dict):
        # Batch API output lines wrap the reply: {"status_code": 200, "body": {..., "usage"}}.
        wrapped = response.get("body")
        reply = wrapped if isinstance(wrapped, dict) else response
        usage = reply.get("usage")
    if usage is None and isinstance(data.get("usage"), dict):
        usage = data["usage"]
    return body, usage, custom_id


def import_logs(
    source: Path,
    *,
    suite: str,
    id_prefix: str = "log",
    dedupe: bool = False,
) -> list[dict[str, Any]]:
    """Turn OpenAI-format request logs into fixture dicts: JSONL of chat-completion request bodies
    (optionally with `usage`, or wrapped as {"request": ..., "response": ...}), or an OpenAI Batch
    API file ({"custom_id", "method", "url", "body"} lines; output lines carry the usage)."""
    import re

    out: list[dict[str, Any]] = []
    by_hash: dict[str, dict[str, Any]] = {}
    seen_ids: set[str] = set()
    for n, data in json_lines(source, file=source, what=""):
        body, usage, custom_id = _log_entry(data, file=source, line=n)
        request = parse_chat_request(body, file=source, line=n)
        fixture_id = f"{id_prefix}-{n:06d}"
        if custom_id is not None:
            candidate = f"{id_prefix}-{custom_id}"
            if re.match(ID_PATTERN, candidate) and candidate not in seen_ids:
                fixture_id = candidate
        seen_ids.add(fixture_id)
        fixture: dict[str, Any] = {"id": fixture_id, "suite": suite, **request.fixture_fields()}
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            fixture["expect"] = {"output_tokens": usage["completion_tokens"]}
        # Validate through the same schema the loader uses, so imported files always load.
        validate_json_line(FixtureSpec, fixture, file=source, line=n)
        if dedupe:
            key = json.dumps(
                {
                    k: fixture.get(k)
                    for k in ("messages", "tools", "tool_choice", "sampling", "model")
                },
                sort_keys=True,
            )
            if key in by_hash:
                by_hash[key]["weight"] = by_hash[key].get("weight", 1) + 1
                continue
            by_hash[key] = fixture
        out.append(fixture)
    if not out:
        raise ConfigError("no requests found in the log", file=source)
    return out
