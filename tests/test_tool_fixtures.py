"""Tool calling and content parts in fixtures, import-logs and request bodies: carried, counted,
and refused with a reason when costguard cannot count them (never dropped silently)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from costguard.errors import ConfigError
from costguard.model.fixtures import import_logs, load_fixture_file, parse_chat_request
from tests.conftest import run_cli, write

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    },
}
CONVERSATION = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "Where is"}, {"type": "text", "text": "CW-1?"}],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"order_id": "CW-1"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "name": "lookup_order", "content": "shipped"},
]


def test_import_logs_keeps_tools_calls_results_and_parts_and_counts_them(project_dir: Path) -> None:
    from tests.conftest import CHAT_TEMPLATE

    # A template that renders the tools (the conftest one ignores them).
    (project_dir / "chat.jinja").write_text(
        "{% if tools %}<|tools|>\n{{ tools|tojson }}\n{% endif %}" + CHAT_TEMPLATE
    )
    log = project_dir / "agent.jsonl"
    log.write_text(
        json.dumps({"model": "m", "messages": CONVERSATION, "tools": [TOOL], "tool_choice": "auto"})
        + "\n"
        + json.dumps({"model": "m", "messages": CONVERSATION})
        + "\n"
    )
    proc = run_cli(
        "import-logs",
        "agent.jsonl",
        "--suite",
        "support",
        "--out",
        "fixtures/agent.yaml",
        cwd=project_dir,
    )
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load((project_dir / "fixtures" / "agent.yaml").read_text())
    with_tools, without = data["fixtures"]
    assert with_tools["tools"] == [TOOL] and with_tools["tool_choice"] == "auto"
    assert with_tools["messages"][0]["content"][1] == {"type": "text", "text": "CW-1?"}
    assert (
        with_tools["messages"][1]["tool_calls"][0]["function"]["arguments"]
        == '{"order_id": "CW-1"}'
    )
    assert with_tools["messages"][2] == {
        "role": "tool", "content": "shipped", "name": "lookup_order", "tool_call_id": "c1"
    }  # fmt: skip
    run = run_cli("run", "--out", "r.json", cwd=project_dir)
    assert run.returncode == 0, run.stderr
    records = {r["id"]: r for r in json.loads((project_dir / "r.json").read_text())["records"]}
    # The tool schema is part of the prompt: the same conversation without it counts less.
    assert records["log-000001"]["input_tokens"] > records["log-000002"]["input_tokens"]


def test_content_parts_are_joined_with_a_newline_as_vllm_joins_them(project_dir: Path) -> None:
    from costguard.text.tokenization import TokenizerSpec, load_tokenizer
    from tests.conftest import minilm_dir

    tok = load_tokenizer(
        TokenizerSpec(hf=minilm_dir(), chat_template="chat.jinja"), base_dir=project_dir, where="t"
    )
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert tok.render_chat(parts) == tok.render_chat([{"role": "user", "content": "a\nb"}])


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
def test_media_parts_are_refused_with_file_line_and_key(project_dir: Path, part: dict) -> None:
    log = project_dir / "mm.jsonl"
    log.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]}
        )
        + "\n"
    )
    proc = run_cli("import-logs", "mm.jsonl", "--suite", "s", "--out", "o.yaml", cwd=project_dir)
    assert proc.returncode == 2 and not (project_dir / "o.yaml").exists()
    line = proc.stderr.strip()
    assert line.startswith("costguard: error: mm.jsonl:1: messages[0].content")
    assert f"is a {part['type']!r} part" in line and "cannot count" in line and "\n" not in line


def test_batch_api_input_and_output_files_import(tmp_path: Path) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        json.dumps({"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "m", "messages": CONVERSATION, "tools": [TOOL]}}) + "\n"
        + json.dumps({"id": "batch_req_1", "custom_id": "req 2", "response": {"status_code": 200,
                      "body": {"usage": {"prompt_tokens": 9, "completion_tokens": 7}}},
                      "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                      "url": "/v1/chat/completions"}) + "\n"
    )  # fmt: skip
    fixtures = import_logs(batch, suite="b")
    assert [f["id"] for f in fixtures] == ["log-req-1", "log-000002"]  # "req 2" is no valid id
    assert fixtures[0]["tools"] == [TOOL] and fixtures[1]["expect"] == {"output_tokens": 7}
    (tmp_path / "embed.jsonl").write_text(
        json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {}}) + "\n"
    )
    with pytest.raises(
        ConfigError, match=r"embed.jsonl:1: url: batch request for '/v1/embeddings'"
    ):
        import_logs(tmp_path / "embed.jsonl", suite="b")


def test_fixture_file_with_tools_loads_into_the_request_body(tmp_path: Path) -> None:
    path = write(
        tmp_path / "agents.yaml",
        """\
        fixtures:
          - id: a
            tools: [{function: {name: ping}}]
            tool_choice: {type: function, function: {name: ping}}
            messages:
              - {role: user, content: ping}
              - role: assistant
                tool_calls: [{id: p, function: {name: ping, arguments: {host: example.org}}}]
              - {role: tool, tool_call_id: p, content: pong}
        """,
    )
    [fx] = load_fixture_file(path)
    body = fx.request_body()
    assert body["tools"] == [{"type": "function", "function": {"name": "ping"}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "ping"}}
    call = body["messages"][1]["tool_calls"][0]
    assert call == {
        "id": "p",
        "type": "function",
        "function": {"name": "ping", "arguments": '{"host": "example.org"}'},
    }
    assert body["messages"][1]["content"] is None and body["messages"][2]["tool_call_id"] == "p"
    bad = write(
        tmp_path / "bad.yaml",
        "fixtures:\n  - id: b\n    messages:\n      - {role: user, content: hi, tool_call_id: x}\n",
    )
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml:4: fixtures\[0\].messages\[0\].*tool_call_id belongs to tool messages",
    ):
        load_fixture_file(bad)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["role", "content", "type", "text", "tool_calls", "function", "name", "arguments",
         "tool_call_id", "image_url", "tools", "messages", "tool_choice"]), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(body=JSONISH)
def test_any_request_body_parses_or_is_a_located_config_error(body: object) -> None:
    try:
        parsed = parse_chat_request(body, file="log.jsonl", line=3)
    except ConfigError as exc:
        assert str(exc).startswith("log.jsonl:3: ") and "\n" not in str(exc)
    else:
        assert parsed.messages


def test_result_caches_never_merge_requests_that_differ_in_their_tools(tmp_path: Path) -> None:
    from costguard.engine.caches.exact import exact_key
    from costguard.engine.caches.semantic import semantic_scope

    path = write(
        tmp_path / "f.yaml",
        """\
        fixtures:
          - {id: plain, messages: [{role: user, content: "Where is CW-1?"}]}
          - id: with-tools
            tools: [{function: {name: lookup_order}}]
            messages: [{role: user, content: "Where is CW-1?"}]
          - id: other-tools
            tools: [{function: {name: cancel_order}}]
            messages: [{role: user, content: "Where is CW-1?"}]
        """,
    )
    plain, with_tools, other = load_fixture_file(path)
    assert len({exact_key(f) for f in (plain, with_tools, other)}) == 3
    assert len({semantic_scope(f) for f in (plain, with_tools, other)}) == 3
    assert len({f.content_hash for f in (plain, with_tools, other)}) == 3


def test_exactness_is_a_property_of_the_tokenizer_and_can_be_declared(tmp_path: Path) -> None:
    from costguard.text.tokenization import TokenizerSpec, load_tokenizer
    from tests.conftest import REPO, minilm_dir

    bundled = {
        "tiktoken": "tokenizers/cl100k_base.tiktoken",
        "chat_template": "tokenizers/llama3-chat.jinja",
        "special_tokens": {"<|begin_of_text|>": 128000, "<|start_header_id|>": 128006,
                           "<|end_header_id|>": 128007, "<|eot_id|>": 128009},
    }  # fmt: skip
    stand_in = load_tokenizer(TokenizerSpec(**bundled), base_dir=REPO, where="t")
    assert (stand_in.exactness, stand_in.input_source) == ("stand-in", "approximate")
    assert "stand-in" in stand_in.description
    declared = load_tokenizer(TokenizerSpec(**bundled, exact=True), base_dir=REPO, where="t")
    assert declared.exact and declared.input_source == "exact"
    from tests.conftest import CHAT_TEMPLATE

    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    hf = {"hf": minilm_dir(), "chat_template": "chat.jinja"}
    own = load_tokenizer(TokenizerSpec(**hf), base_dir=tmp_path, where="t")
    assert own.exact
    other = load_tokenizer(TokenizerSpec(**hf, exact=False), base_dir=tmp_path, where="t")
    assert other.input_source == "approximate"
    # The same counts either way: exactness labels the numbers, it does not change them.
    messages = [{"role": "user", "content": "Wie ist das Wetter in Zürich?"}]
    assert stand_in.count_chat(messages) == declared.count_chat(messages)
