"""Chat templates rendered the way vLLM does (jinja2, `apply_chat_template` semantics): message
normalisation, content formats, named templates, template files."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from costguard.errors import TokenizerError

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

    env = ImmutableSandboxedEnvironment(
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
        except jinja2.TemplateSyntaxError as exc:
            raise _error(
                where,
                f"chat template {name} has a syntax error at template line {exc.lineno}: "
                f"{_one_line(exc.message)}; fix the template or point `chat_template:` at a working one",
            ) from None
        self.content_format = _detect_content_format(env, source)

    def render(self, messages: list[dict], tools: list | None = None) -> str:
        conversation = _normalize_messages(messages, self.content_format, self.where)
        try:
            return self.template.render(
                messages=conversation,
                tools=tools,
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


def _normalize_messages(messages: Any, content_format: str, where: str) -> list[dict]:
    """Turn OpenAI-format request messages into the conversation vLLM hands to the template."""
    if not isinstance(messages, list):
        raise _error(where, f"messages must be a list, got {type(messages).__name__}")
    out: list[dict] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise _error(where, f"messages[{i}] must be a mapping with a `role`")
        role = message["role"]
        content = message.get("content")
        if content is None:
            parts: list[str] = []
        elif isinstance(content, str):
            parts = [content]
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if isinstance(part, str):
                    parts.append(part)
                elif isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
                    parts.append(str(part.get("text", "")))
                else:
                    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                    raise _error(
                        where,
                        f"messages[{i}].content[{j}] is a {kind!r} part; costguard counts text "
                        "content parts only",
                    )
        else:
            raise _error(where, f"messages[{i}].content must be a string or a list of parts")
        if content_format == "openai":
            new_content: Any = [{"type": "text", "text": p} for p in parts]
        else:
            new_content = "\n".join(parts)
        conv: dict[str, Any] = {"role": role, "content": new_content}
        if role == "assistant":
            if message.get("tool_calls") is not None:
                conv["tool_calls"] = _normalize_tool_calls(message["tool_calls"])
            for key in ("reasoning", "reasoning_content"):
                if message.get(key) is not None:
                    conv[key] = message[key]
        elif role == "tool" and "tool_call_id" in message:
            conv["tool_call_id"] = message["tool_call_id"]
        if isinstance(message.get("name"), str):
            conv["name"] = message["name"]
        out.append(conv)
    return out


def _normalize_tool_calls(tool_calls: Any) -> Any:
    """vLLM parses each tool call's JSON `arguments` string into a dict before rendering."""
    tool_calls = copy.deepcopy(list(tool_calls))
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        args = function.get("arguments")
        if not args:
            function["arguments"] = {}
        elif isinstance(args, str):
            try:
                function["arguments"] = json.loads(args)
            except json.JSONDecodeError:
                pass
    return tool_calls


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
        named = {
            t.get("name"): t.get("template")
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
