"""What costguard hands the chat template equals what vLLM 0.33 hands it: the conversation
(content parts, tool calls with parsed arguments, tool results, names, reasoning) and the tools
(`tool.model_dump()`, null fields included), asked of vLLM's own request models and parsers."""

from __future__ import annotations

import copy
import json
from typing import Any

from costguard.text.tokenization import vllm_conversation, vllm_tool_dicts
from tests.test_tokenizer_oracle import CASES, ORDER_TOOL, PING_TOOL, WEATHER_TOOL

EXTRA: list[tuple[str, list[dict], list[dict] | None]] = [
    (
        "names-refusal-reasoning-empty-calls",
        [
            {"role": "system", "content": [{"type": "text", "text": "x-anthropic-billing-header: cch=1\nBe brief."}]},
            {"role": "user", "name": "alice", "content": [{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}], "reasoning": "policy", "tool_calls": []},
            {"role": "user", "content": "ok"},
        ],
        None,
    ),
    (
        "arguments-not-an-object-and-two-calls",
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "Calling.", "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "ping", "arguments": "[1, 2]"}},
                {"id": "2", "type": "function", "function": {"name": "ping", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "p"}, {"type": "text", "text": "q"}]},
        ],
        [PING_TOOL, {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": False}}],
    ),
]  # fmt: skip


def _requests() -> list[tuple[str, dict[str, Any], str]]:
    out = []
    cases = [(n, m, t) for n, m, t, _ in CASES] + EXTRA
    for fmt in ("string", "openai"):
        for name, messages, tools in cases:
            body: dict[str, Any] = {"messages": messages}
            if tools is not None:
                body["tools"] = tools
            out.append((f"{name}/{fmt}", body, fmt))
    return out


def test_conversation_and_tools_equal_vllms(vllm_oracle) -> None:
    requests = _requests()
    answers = vllm_oracle.ask(
        "chat", requests=[{"body": body, "content_format": fmt} for _, body, fmt in requests]
    )
    assert len(answers) == len(requests)
    for (name, body, fmt), answer in zip(requests, answers, strict=True):
        messages = copy.deepcopy(body["messages"])
        ours = json.loads(json.dumps(vllm_conversation(messages, fmt)))
        assert ours == answer["conversation"], name
        assert messages == body["messages"], f"{name}: the request was modified"
        tools = vllm_tool_dicts(body.get("tools"))
        # Key order too: templates render the dicts with tojson.
        assert json.dumps(tools) == json.dumps(answer["tools"]), name
    assert ORDER_TOOL["function"]["strict"] is True  # a set `strict` is kept (checked above)
