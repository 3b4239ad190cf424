"""Chat templates rendered the way vLLM does (jinja2, `apply_chat_template` semantics): message
normalisation, content formats, tools, named templates, template files."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from costguard.errors import TokenizerError
from costguard.model.limits import Limits

_WHERE_RE = re.compile(r"^(?P<file>[^:\n]+?)(?::(?P<line>\d+))?: (?P<key>\S.*)$")


def _error(where: str, message: str) -> TokenizerError:
    """A one-line TokenizerError whose text starts with `where` (e.g. `f.yaml:14: tiers[0].tokenizer`)."""
    m = _WHERE_RE.match(where or "")
    if m:
        return TokenizerError(
            message,
            file=m["file"],
            line=int(m["line"]) if m["line"] else None,
            key=m["key"],
        )
    return TokenizerError(message, key=where or "tokenizer")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _jinja_env() -> Any:
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _GenerationTag(Extension):
        """transformers' `{% generation %}...{% endgeneration %}` block (renders its body)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        # Unlike jinja2's built-in tojson, no HTML escaping (transformers does the same).
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    from costguard.model.templating import bounded_environment

    env = bounded_environment(
        ImmutableSandboxedEnvironment,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = tojson
    env.globals["strftime_now"] = strftime_now
    return env


class _TemplateRaised(Exception):
    """`raise_exception(...)` called from inside a chat template."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _detect_content_format(env: Any, source: str) -> str:
    """vLLM's `--chat-template-content-format auto`: "openai" when the template loops over a
    message's `content` (so content must be a list of parts), else "string"."""
    from jinja2 import nodes

    try:
        ast = env.parse(source)
    except Exception:
        return "string"

    def refers(node: Any, var: str, key: str | None = None) -> bool:
        while True:
            if isinstance(node, (nodes.Filter, nodes.Test)) and node.node is not None:
                node = node.node
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
                node = node.node
            else:
                break
        if key is None:
            return isinstance(node, nodes.Name) and node.name == var
        if isinstance(node, nodes.Getitem):
            return (
                isinstance(node.node, nodes.Name)
                and node.node.name == var
                and isinstance(node.arg, nodes.Const)
                and node.arg.value == key
            )
        if isinstance(node, nodes.Getattr):
            return isinstance(node.node, nodes.Name) and node.node.name == var and node.attr == key
        return False

    # Names bound (via {% set %}) to `messages` or a slice/filter of it.
    message_lists = {"messages"}
    queue = ["messages"]
    assigns = [a for a in ast.find_all(nodes.Assign) if isinstance(a.target, nodes.Name)]
    while queue:
        var = queue.pop()
        for a in assigns:
            if a.target.name not in message_lists and refers(a.node, var):
                message_lists.add(a.target.name)
                queue.append(a.target.name)
    loops = [loop for loop in ast.find_all(nodes.For) if isinstance(loop.target, nodes.Name)]
    message_vars = {
        loop.target.name for loop in loops if any(refers(loop.iter, v) for v in message_lists)
    }
    for loop in loops:
        if any(refers(loop.iter, v, "content") for v in message_vars):
            return "openai"
    return "string"


class _ChatTemplate:
    """A compiled chat template plus the variables transformers passes to it."""

    def __init__(self, source: str, *, name: str, where: str, variables: dict[str, Any]):
        import jinja2

        self.source = source
        self.name = name
        self.where = where
        self.variables = variables
        env = _jinja_env()
        env.globals["raise_exception"] = _raise_exception
        try:
            self.template = env.from_string(source)
        except RecursionError:
            raise _error(where, f"chat template {name} is nested too deeply") from None
        except jinja2.TemplateSyntaxError as exc:
            raise _error(
                where,
                f"chat template {name} has a syntax error at template line {exc.lineno}: "
                f"{_one_line(exc.message)}; fix the template or point `chat_template:` at a working one",
            ) from None
        self.content_format = _detect_content_format(env, source)

    def render(
        self, messages: list[dict], tools: list | None = None, bounds: Limits | None = None
    ) -> str:
        """The prompt text; `bounds`: the limits in force, read once by a caller rendering many."""
        from costguard.model.templating import render_bounded

        conversation = _normalize_messages(messages, self.content_format, self.where)
        try:
            text = render_bounded(
                self.template,
                bounds,
                messages=conversation,
                tools=vllm_tool_dicts(tools),
                documents=None,
                add_generation_prompt=True,
                **self.variables,
            )
        except _TemplateRaised as exc:
            raise _error(
                self.where, f"chat template {self.name} raised an exception: {_one_line(exc)}"
            ) from None
        except Exception as exc:
            raise _error(
                self.where,
                f"chat template {self.name} failed to render: {type(exc).__name__}: {_one_line(exc)}",
            ) from None
        if not text:
            raise _error(
                self.where,
                f"chat template {self.name} rendered an empty prompt (vLLM rejects empty prompts); "
                "check that it loops over `messages`",
            )
        return text


# Content part types vLLM reads as text, and the key holding the text (see
# vllm/renderers/chat_utils/chat_message.py: TEXT_PART_TYPES, MM_PARSER_MAP).
_TEXT_PART_KEYS = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "thinking": "thinking",
}


_BILLING_HEADER = "x-anthropic-billing-header"


def _text_parts(message: Mapping[str, Any], i: int, where: str) -> list[Any]:
    """A message's content as vLLM parses it: a list of text parts (None-text parts skipped).

    Non-text parts (images, audio, video, files) are an error: their token count depends on the
    model's multimodal processor, which costguard does not run."""
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        parts: list[Any] = [content]
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
                continue
            kind = part.get("type", "text") if isinstance(part, Mapping) else None
            if kind not in _TEXT_PART_KEYS:
                kind = kind if kind is not None else type(part).__name__
                raise _error(
                    where,
                    f"messages[{i}].content[{j}] is a {kind!r} part; costguard counts text content "
                    "parts only (image, audio, video and file tokens depend on the model's processor)",
                )
            text = part.get(_TEXT_PART_KEYS[kind])
            if text is None:
                continue  # vLLM skips a text part without text
            extra = {k: v for k, v in part.items() if k not in ("type", _TEXT_PART_KEYS[kind])}
            parts.append((str(text), extra))
    else:
        raise _error(where, f"messages[{i}].content must be a string or a list of parts")
    if message.get("role") == "system":
        parts = _strip_billing_header(parts)
    return parts


def _strip_billing_header(parts: list[Any]) -> list[Any]:
    """vLLM drops a leading Claude Code attribution line from system text parts."""
    out = []
    for part in parts:
        text = part if isinstance(part, str) else part[0]
        if not text.startswith(_BILLING_HEADER):
            out.append(part)
            continue
        rest = text.partition("\n")[2]
        if rest:
            out.append(rest if isinstance(part, str) else (rest, part[1]))
    return out


def vllm_conversation(messages: Any, content_format: str = "string") -> list[dict]:
    """The conversation vLLM hands the chat template for these request messages ("string":
    text parts joined; "openai": text parts kept as dicts, for templates that loop over them)."""
    return _normalize_messages(messages, content_format, "messages")


def _normalize_messages(messages: Any, content_format: str, where: str) -> list[dict]:
    """Turn OpenAI-format request messages into the conversation vLLM hands to the template.

    Mirrors vLLM 0.33's `parse_chat_message_content` + `_postprocess_messages`: text parts joined
    with "\n" (or kept as text dicts for templates that loop over content), tool messages'
    text parts joined even then, `tool_calls` kept with JSON arguments parsed to objects,
    `tool_call_id` and `name` kept."""
    if not isinstance(messages, list):
        raise _error(where, f"messages must be a list, got {type(messages).__name__}")
    out: list[dict] = []
    openai = content_format == "openai"
    for i, message in enumerate(messages):
        # The common message, {role, content: str}, as the general path below turns it.
        if type(message) is dict and len(message) == 2 and "role" in message:
            content, role = message.get("content"), message["role"]
            if type(content) is str and not (
                role == "system" and content.startswith(_BILLING_HEADER)
            ):
                text = [{"type": "text", "text": content}] if openai and role != "tool" else content
                out.append({"role": role, "content": text})
                continue
        if not isinstance(message, Mapping) or "role" not in message:
            raise _error(where, f"messages[{i}] must be a mapping with a `role`")
        role = message["role"]
        parts = _text_parts(message, i, where)
        texts = [p if isinstance(p, str) else p[0] for p in parts]
        if content_format == "openai" and role != "tool":
            new_content: Any = [
                {"type": "text", "text": p}
                if isinstance(p, str)
                else {"type": "text", "text": p[0], **p[1]}
                for p in parts
            ]
        else:
            new_content = "\n".join(texts)
        conv: dict[str, Any] = {"role": role, "content": new_content}
        if role == "assistant":
            if message.get("tool_calls") is not None:
                tool_calls = _normalize_tool_calls(message["tool_calls"], i, where)
                if tool_calls:
                    conv["tool_calls"] = tool_calls
            # vLLM reads `reasoning` (interleaved thinking) and hands it on under both names.
            if message.get("reasoning") is not None:
                conv["reasoning"] = conv["reasoning_content"] = message["reasoning"]
        elif role == "tool" and "tool_call_id" in message:
            conv["tool_call_id"] = message["tool_call_id"]
        if isinstance(message.get("name"), str):
            conv["name"] = message["name"]
        out.append(conv)
    return out


def _normalize_tool_calls(tool_calls: Any, i: int, where: str) -> list[Any]:
    """vLLM parses each tool call's JSON `arguments` into an object before rendering: empty or
    malformed arguments (and JSON that is not an object) become {}."""
    if not isinstance(tool_calls, list):
        raise _error(where, f"messages[{i}].tool_calls must be a list")
    tool_calls = copy.deepcopy(tool_calls)
    for j, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or call.get("type", "function") != "function"
            or not isinstance(function, dict)
        ):
            raise _error(
                where, f"messages[{i}].tool_calls[{j}] must be a function call (type: function)"
            )
        args = function.get("arguments")
        if not args:
            function["arguments"] = {}
        elif not isinstance(args, dict):
            parsed: Any = None
            if isinstance(args, str):
                try:
                    parsed = json.loads(args)
                except json.JSONDecodeError:
                    parsed = None
            function["arguments"] = parsed if isinstance(parsed, dict) else {}
    return tool_calls


def vllm_tool_dicts(tools: Any) -> list[dict[str, Any]] | None:
    """The `tools` vLLM passes to the chat template: each tool validated into its
    ChatCompletionToolsParam and `model_dump()`ed, so unset `description` / `parameters` are
    present as None (templates test them) and `strict` / `defer_loading` only when set."""
    if tools is None:
        return None
    out = []
    for tool in tools:
        function = dict(tool.get("function") or {})
        dumped: dict[str, Any] = {
            "name": function.get("name"),
            "description": function.get("description"),
            "parameters": function.get("parameters"),
        }
        defer = function.get("defer_loading", tool.get("defer_loading"))
        if function.get("strict") is not None:
            dumped["strict"] = function["strict"]
        if defer is not None:
            dumped["defer_loading"] = defer
        entry: dict[str, Any] = {"type": "function", "function": dumped}
        if tool.get("defer_loading") is not None:
            entry["defer_loading"] = tool["defer_loading"]
        out.append(entry)
    return out


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json gives special tokens as strings or as {"content": ...} dicts."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _template_variables(config: Mapping[str, Any]) -> dict[str, Any]:
    """bos_token, eos_token, ... as transformers passes them (its special_tokens_map)."""
    variables: dict[str, Any] = {}
    for name in (
        "bos_token",
        "eos_token",
        "unk_token",
        "pad_token",
        "sep_token",
        "cls_token",
        "mask_token",
    ):
        value = _token_content(config.get(name))
        if value is not None:
            variables[name] = value
    extra = config.get("additional_special_tokens")
    if isinstance(extra, list):
        variables["additional_special_tokens"] = [
            t for t in (_token_content(x) for x in extra) if t is not None
        ]
    variables.setdefault("bos_token", "")
    variables.setdefault("eos_token", "")
    return variables


def _pick_named_template(value: Any, *, origin: str, where: str) -> str:
    """`chat_template` is a string or a list of {name, template}: take "default"."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named: dict[Any, str] = {
            t.get("name"): t["template"]
            for t in value
            if isinstance(t, Mapping) and isinstance(t.get("template"), str)
        }
        if "default" in named:
            return named["default"]
        raise _error(
            where,
            f"{origin} has named chat templates {sorted(map(str, named))} but no 'default'; "
            "set `chat_template:` to a template file",
        )
    raise _error(where, f"{origin}: chat_template must be a string or a list of named templates")


def _read_template_file(path: Path, *, where: str) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _error(
            where,
            f"chat template file not found at {path}; fix the `chat_template:` path "
            "(relative paths are resolved against the config file's directory)",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(where, f"cannot read chat template {path}: {_one_line(exc)}") from None
    if path.suffix == ".json":
        # A processor-style chat_template.json / tokenizer_config.json: {"chat_template": ...}
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(data, Mapping) and "chat_template" in data:
            return _pick_named_template(data["chat_template"], origin=str(path), where=where)
    return text
