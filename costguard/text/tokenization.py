"""Exact prompt token counts, the way vLLM computes `usage.prompt_tokens`.

vLLM renders the model's chat template (jinja2, Hugging Face `apply_chat_template` semantics)
with `add_generation_prompt=True` and tokenizes the rendered text with
`add_special_tokens=False`; special tokens written in the template text (`<|begin_of_text|>`,
`<|im_start|>`, ...) are still matched as single special tokens. This module does the same
offline, from local files only:

- `hf:`       a Hugging Face fast tokenizer (`tokenizer.json`, plus `tokenizer_config.json`
              for the chat template and bos/eos), from a directory, a file, or the local HF cache;
- `tiktoken:` a tiktoken BPE file, by encoding name through `TIKTOKEN_CACHE_DIR` (tiktoken's own
              cache layout) or by path, with a chat template file.

Nothing here downloads. A tokenizer that cannot be loaded is a `TokenizerError` that says how to
fix it, or, if the user opted in with `approximate_fallback: true`, a clearly labelled
chars/4 approximation.

`tokenizers`, `tiktoken` and `jinja2` are imported lazily (inside functions) so that importing
this module stays cheap for the CLI.

`TokenCountCache` keeps prompt token ids in SQLite keyed by (tokenizer fingerprint, hash of the
messages) so that a re-run only tokenizes what changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import sys
import threading
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import model_validator

from costguard.errors import TokenizerError
from costguard.model.yamlio import StrictModel

logger = logging.getLogger("costguard.text.tokenization")

# Bump when rendering/normalisation semantics change: it is part of every fingerprint, so
# cached token ids computed by an older costguard are not reused.
RENDER_VERSION = "2"

_APPROX_HINT = "or set approximate_fallback: true to accept approximate counts"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


class TokenizerSpec(StrictModel):
    """The `tokenizer:` block of a tier in costguard.yaml."""

    hf: str | None = None
    """Local dir holding tokenizer.json (+ tokenizer_config.json), a path to tokenizer.json,
    or an HF model id (`org/name`, optionally `@revision`) resolved from the local HF cache."""
    tiktoken: str | None = None
    """Encoding name resolved via TIKTOKEN_CACHE_DIR, or a path to a .tiktoken BPE file."""
    chat_template: str | None = None
    """Path to a jinja chat template file; overrides the tokenizer's own. Required for tiktoken."""
    special_tokens: dict[str, int] | None = None
    """tiktoken only: extra special tokens (e.g. Llama-3 style `<|begin_of_text|>`)."""
    approximate_fallback: bool = False
    """If the tokenizer cannot be loaded, count ~chars/4 and label every count approximate."""
    exact: bool | None = None
    """Whether these are the model's own tokenizer and chat template, so counts are exact.
    Default: true for `hf:` (the model's tokenizer.json), false for `tiktoken:` (an encoding and a
    hand-written chat layout standing in for the model's). Declare `exact: true` on a tiktoken
    tokenizer only when it is the model's own encoding and template."""

    @model_validator(mode="after")
    def _check(self) -> TokenizerSpec:
        if (self.hf is None) == (self.tiktoken is None):
            raise ValueError("set exactly one of `hf:` or `tiktoken:`")
        if self.tiktoken is not None and not self.chat_template:
            raise ValueError(
                "`tiktoken:` needs `chat_template:` (path to the model's jinja chat template file)"
            )
        if self.hf is not None and self.special_tokens:
            raise ValueError(
                "`special_tokens:` applies to `tiktoken:` only (tokenizer.json declares its own)"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Chat templates (transformers' apply_chat_template semantics)
# ---------------------------------------------------------------------------------------------


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

    def render(self, messages: list[dict], tools: list | None = None) -> str:
        from costguard.model.templating import render_bounded

        conversation = _normalize_messages(messages, self.content_format, self.where)
        try:
            text = render_bounded(
                self.template,
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


def _normalize_messages(messages: Any, content_format: str, where: str) -> list[dict]:
    """Turn OpenAI-format request messages into the conversation vLLM hands to the template.

    Mirrors vLLM 0.33's `parse_chat_message_content` + `_postprocess_messages`: text parts joined
    with "\n" (or kept as text dicts for templates that loop over content), tool messages'
    text parts joined even then, `tool_calls` kept with JSON arguments parsed to objects,
    `tool_call_id` and `name` kept."""
    if not isinstance(messages, list):
        raise _error(where, f"messages must be a list, got {type(messages).__name__}")
    out: list[dict] = []
    for i, message in enumerate(messages):
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


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


class ChatTokenizer:
    """A loaded tokenizer plus chat template, ready to count (see `load_tokenizer`)."""

    fingerprint: str
    """Stable id (sha256 over tokenizer file bytes, chat template text and kind): a cache key."""
    description: str
    exactness: str = "exact"
    """"exact": the model's own tokenizer and chat template; "stand-in": another encoding or a
    hand-written layout (counts are approximate); "fallback": chars/4 (approximate)."""
    kind: str = ""
    sources: tuple[Path, ...] = ()
    """The files it was loaded from (tokenizer, its config, the chat template): what a cached
    projection depends on beyond the fixtures and the config."""

    @property
    def exact(self) -> bool:
        """Counts equal the server's only with the model's own tokenizer and template."""
        return self.exactness == "exact"

    @property
    def input_source(self) -> str:
        """How a prompt count from this tokenizer is labelled in reports."""
        return "exact" if self.exact else "approximate"

    def __init__(self, *, template: _ChatTemplate, fingerprint: str, description: str):
        self._template = template
        self.fingerprint = fingerprint
        self.description = description

    def __repr__(self) -> str:
        return f"<ChatTokenizer {self.description}>"

    # -- to implement ------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        return [self._encode(t) for t in texts]

    # -- public ------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], *, tools: list | None = None) -> str:
        """The prompt text vLLM would tokenize for these chat messages."""
        return self._template.render(messages, tools)

    def encode_chat(self, messages: list[dict], *, tools: list | None = None) -> list[int]:
        return self._encode(self.render_chat(messages, tools=tools))

    def encode_chat_many(
        self,
        messages_list: Sequence[list[dict]],
        *,
        tools_list: Sequence[list | None] | None = None,
    ) -> list[list[int]]:
        """encode_chat for many conversations, tokenized in one batch."""
        tools_seq = tools_list if tools_list is not None else [None] * len(messages_list)
        texts = [
            self.render_chat(m, tools=t) for m, t in zip(messages_list, tools_seq, strict=True)
        ]
        return self._encode_many(texts) if texts else []

    def count_chat(self, messages: list[dict], *, tools: list | None = None) -> int:
        return len(self.encode_chat(messages, tools=tools))

    def encode_text(self, text: str) -> list[int]:
        """Plain text (e.g. completion text): no special tokens added."""
        return self._encode(text)

    def count_text(self, text: str) -> int:
        return len(self._encode(text))


class _HFChatTokenizer(ChatTokenizer):
    kind = "hf"

    def __init__(self, tokenizer: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self._tok = tokenizer
        self._batch = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch

    def _encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._batch(texts, add_special_tokens=False)]


class _TiktokenChatTokenizer(ChatTokenizer):
    kind = "tiktoken"

    def __init__(self, encoding: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self._enc = encoding

    def _encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special="all")

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_batch(texts, allowed_special="all")


class _ApproxChatTokenizer(ChatTokenizer):
    """~chars/4. Ids are stable pseudo-ids (a hash of each 4-character chunk), so equal
    prefixes still give equal id prefixes for the prefix-cache simulation."""

    kind = "approximate"
    exactness = "fallback"

    def _encode(self, text: str) -> list[int]:
        return [
            zlib.crc32(text[i : i + 4].encode("utf-8", "surrogatepass")) & 0x7FFFFFFF
            for i in range(0, len(text), 4)
        ]

    def count_text(self, text: str) -> int:
        return math.ceil(len(text) / 4)


# A generic ChatML template for the approximate fallback when no template can be read.
_FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _resolve_path(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(base_dir) / path


def load_tokenizer(
    spec: TokenizerSpec, *, base_dir: Path, where: str, allowed: tuple[Path, ...] | None = None
) -> ChatTokenizer:
    """Load the tokenizer and chat template a spec names, from local files only.

    `where` locates the spec for error messages (e.g. "costguard.yaml:14: tiers[0].tokenizer").
    Raises TokenizerError (one line, says how to fix it) unless `approximate_fallback` is set,
    in which case a ChatTokenizer with `exact=False` is returned. With `allowed` (a project's
    `allowed_paths:`), a `chat_template:` file must be inside `base_dir` (the project root) or
    one of those directories.
    """
    base_dir = Path(base_dir)
    if spec.chat_template and allowed is not None:
        from costguard.model.paths import within

        tpl = _resolve_path(spec.chat_template, base_dir)
        if not within(tpl, base_dir, allowed):
            raise _error(
                where,
                f"chat_template {tpl} is outside the project root {base_dir}; costguard only "
                "reads files inside it (list the directory under `allowed_paths:` in "
                "costguard.yaml if it is meant)",
            )
    try:
        if spec.hf is not None:
            tok = _load_hf(spec, base_dir, where)
        else:
            tok = _load_tiktoken(spec, base_dir, where)
    except TokenizerError as exc:
        if not spec.approximate_fallback:
            raise
        return _load_approximate(spec, base_dir, where, why=exc.message)
    own = spec.exact if spec.exact is not None else spec.hf is not None
    if not own:
        tok.exactness = "stand-in"
        tok.description += " (a stand-in for the model's own tokenizer: approximate counts)"
    return tok


def _load_approximate(
    spec: TokenizerSpec, base_dir: Path, where: str, *, why: str
) -> ChatTokenizer:
    source, name = _FALLBACK_TEMPLATE, "(built-in ChatML)"
    if spec.chat_template:
        try:
            path = _resolve_path(spec.chat_template, base_dir)
            source, name = _read_template_file(path, where=where), str(path)
        except TokenizerError:
            pass
    try:
        template = _ChatTemplate(source, name=name, where=where, variables=_template_variables({}))
    except TokenizerError:
        template = _ChatTemplate(
            _FALLBACK_TEMPLATE,
            name="(built-in ChatML)",
            where=where,
            variables=_template_variables({}),
        )
    fingerprint = _sha256("approximate", RENDER_VERSION, template.source)
    logger.warning("%s: using approximate token counts (chars/4): %s", where, why)
    return _ApproxChatTokenizer(
        template=template,
        fingerprint=fingerprint,
        description=f"approximate (chars/4): {why}",
    )


# -- Hugging Face ------------------------------------------------------------------------------


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does (where models and tokenizers land)."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expanduser(env[var]))
    if env.get("HF_HOME"):
        return Path(os.path.expanduser(env["HF_HOME"])) / "hub"
    base = (
        Path(os.path.expanduser(env["XDG_CACHE_HOME"]))
        if env.get("XDG_CACHE_HOME")
        else (Path.home() / ".cache")
    )
    return base / "huggingface" / "hub"


_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?(@[\w.\-/]+)?$")


def _find_in_hf_cache(model_id: str) -> tuple[Path | None, Path]:
    """(snapshot dir holding tokenizer.json or None, the repo dir that was looked at)."""
    repo_id, _, revision = model_id.partition("@")
    repo_dir = hf_hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    candidates: list[Path] = []
    rev = revision or "main"
    ref = repo_dir / "refs" / rev
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    candidates.append(snapshots / rev)  # a commit hash given as the revision
    if not revision and snapshots.is_dir():
        others = [p for p in snapshots.iterdir() if (p / "tokenizer.json").is_file()]
        candidates += sorted(others, key=lambda p: p.stat().st_mtime, reverse=True)
    for cand in candidates:
        if (cand / "tokenizer.json").is_file():
            return cand, repo_dir
    return None, repo_dir


HUB_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
"""What `_load_hf` reads from a model repo; only tokenizer.json is required."""


def hub_tokenizer_id(spec: TokenizerSpec, base_dir: Path) -> str | None:
    """The hub model id (`org/name[@rev]`) an `hf:` tokenizer is read from, None for local files.

    Same rule as the loader: a value that is not an existing path but looks like a model id is
    looked up in the local HF cache. Lets CI pre-fetch exactly what the projection will read.
    """
    if spec.hf is None:
        return None
    path = _resolve_path(spec.hf, Path(base_dir))
    if path.exists() or not _MODEL_ID_RE.match(spec.hf):
        return None
    return spec.hf


def hub_tokenizer_cached(model_id: str) -> bool:
    return _find_in_hf_cache(model_id)[0] is not None


def fetch_hub_tokenizer(model_id: str, *, where: str = "tokenizer") -> Path:
    """Download a model's tokenizer files (not its weights) into the HF cache; returns the snapshot.

    For machines with network only (CI before an offline projection): the projection itself
    never downloads. A gated repo (Llama) needs HF_TOKEN with access granted on the hub.
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            GatedRepoError,
            RepositoryNotFoundError,
        )
    except ImportError:
        raise _error(
            where, "huggingface_hub is not installed: `pip install huggingface_hub`"
        ) from None
    repo_id, _, revision = model_id.partition("@")
    snapshot: Path | None = None
    for name in HUB_TOKENIZER_FILES:
        try:
            got = hf_hub_download(
                repo_id, name, revision=revision or None, cache_dir=hf_hub_cache_dir()
            )
        except EntryNotFoundError:
            if name == "tokenizer.json":
                raise _error(
                    where,
                    f"model {repo_id!r} has no tokenizer.json on the hub: costguard reads fast "
                    "tokenizers only; convert it locally and point `hf:` at the directory",
                ) from None
            continue
        except GatedRepoError:
            raise _error(
                where,
                f"model {repo_id!r} is gated on the Hugging Face hub: accept its licence there "
                "and set HF_TOKEN to a token with access",
            ) from None
        except RepositoryNotFoundError:
            raise _error(
                where,
                f"model {repo_id!r} not found on the Hugging Face hub (or private: set HF_TOKEN)",
            ) from None
        except Exception as exc:  # network errors, HF_HUB_OFFLINE, ... (many types)
            raise _error(
                where, f"could not download {name} of {repo_id!r}: {_one_line(exc)}"
            ) from None
        snapshot = Path(got).parent
    assert snapshot is not None
    return snapshot


def _hf_fix(model: str) -> str:
    return (
        f"download it with `huggingface-cli download {model} tokenizer.json "
        "tokenizer_config.json --local-dir DIR` on a machine with network and point `hf:` at "
        f"DIR, {_APPROX_HINT}"
    )


def _load_hf(spec: TokenizerSpec, base_dir: Path, where: str) -> ChatTokenizer:
    value = spec.hf or ""
    path = _resolve_path(value, base_dir)
    model_for_hint = value if _MODEL_ID_RE.match(value) and "/" in value else "MODEL"
    if path.is_dir():
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            others = [
                n for n in ("tokenizer.model", "vocab.json", "vocab.txt") if (path / n).exists()
            ]
            extra = (
                f" (found {', '.join(others)}: costguard reads fast tokenizers only; convert with "
                "`AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)` from transformers)"
                if others
                else ""
            )
            raise _error(
                where, f"tokenizer.json not found in {path}{extra}; {_hf_fix(model_for_hint)}"
            )
    elif path.is_file():
        tok_file = path
    elif _MODEL_ID_RE.match(value):
        snapshot, repo_dir = _find_in_hf_cache(value)
        if snapshot is None:
            raise _error(
                where,
                f"tokenizer.json not found at {path} nor for model {value!r} in the local HF cache "
                f"({repo_dir}; set HF_HUB_CACHE or HF_HOME to use another cache); "
                f"{_hf_fix(value.partition('@')[0])}",
            )
        tok_file = snapshot / "tokenizer.json"
    else:
        raise _error(where, f"tokenizer.json not found at {path}; {_hf_fix(model_for_hint)}")

    tok_dir = tok_file.parent
    try:
        tok_bytes = tok_file.read_bytes()
    except OSError as exc:
        raise _error(where, f"cannot read {tok_file}: {_one_line(exc)}") from None

    config: dict[str, Any] = {}
    config_file = tok_dir / "tokenizer_config.json"
    if config_file.is_file():
        try:
            loaded = json.loads(config_file.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _error(
                where, f"cannot parse {config_file}: {_one_line(exc)}; re-download it"
            ) from None
        if isinstance(loaded, dict):
            config = loaded
    special_map = tok_dir / "special_tokens_map.json"
    if special_map.is_file():
        try:
            loaded = json.loads(special_map.read_text(encoding="utf-8-sig"))
            if isinstance(loaded, dict):
                for k, v in loaded.items():
                    config.setdefault(k, v)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass

    # Chat template: the spec's override, else chat_template.jinja (transformers prefers it),
    # else tokenizer_config.json's chat_template.
    if spec.chat_template:
        tpl_path = _resolve_path(spec.chat_template, base_dir)
        source, tpl_name = _read_template_file(tpl_path, where=where), str(tpl_path)
    elif (tok_dir / "chat_template.jinja").is_file():
        tpl_path = tok_dir / "chat_template.jinja"
        source, tpl_name = _read_template_file(tpl_path, where=where), str(tpl_path)
    elif config.get("chat_template") is not None:
        source = _pick_named_template(config["chat_template"], origin=str(config_file), where=where)
        tpl_name = f"{config_file} (chat_template)"
    else:
        raise _error(
            where,
            f"no chat template for {tok_file}: {config_file.name} has no `chat_template` and there "
            "is no chat_template.jinja beside it; set `chat_template:` to the model's template file",
        )

    variables = _template_variables(config)
    template = _ChatTemplate(source, name=tpl_name, where=where, variables=variables)

    try:
        from tokenizers import AddedToken, Tokenizer

        tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
    except Exception as exc:
        raise _error(
            where,
            f"cannot load {tok_file}: {_one_line(exc)}; re-download it (or `pip install -U "
            f"tokenizers` if it comes from a newer model), {_APPROX_HINT}",
        ) from None
    # transformers turns off the truncation/padding a tokenizer.json may carry (e.g. MiniLM:
    # truncate and pad to 128) unless asked for; vLLM never asks for them.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # Added tokens declared only in tokenizer_config.json (transformers adds them on load).
    extra_tokens: list[Any] = []
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):
        for _id, tok in sorted(
            decoder.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0
        ):
            content = _token_content(tok)
            if content is None or tokenizer.token_to_id(content) is not None:
                continue
            t = tok if isinstance(tok, Mapping) else {}
            extra_tokens.append(
                AddedToken(
                    content,
                    single_word=bool(t.get("single_word", False)),
                    lstrip=bool(t.get("lstrip", False)),
                    rstrip=bool(t.get("rstrip", False)),
                    normalized=bool(t.get("normalized", not t.get("special", True))),
                    special=bool(t.get("special", True)),
                )
            )
    if extra_tokens:
        tokenizer.add_tokens(extra_tokens)

    fingerprint = _sha256(
        "hf",
        RENDER_VERSION,
        tok_bytes,
        source,
        json.dumps(variables, sort_keys=True),
        json.dumps([t.content for t in extra_tokens]),
    )
    tpl_label = tpl_name if spec.chat_template else Path(tpl_name.split(" (")[0]).name
    loaded_hf = _HFChatTokenizer(
        tokenizer,
        template=template,
        fingerprint=fingerprint,
        description=f"hf:{tok_file} + template {tpl_label}",
    )
    read = (tok_file, config_file, special_map, Path(tpl_name.split(" (")[0]))
    loaded_hf.sources = tuple(dict.fromkeys(p for p in read if p.is_file()))
    return loaded_hf


# -- tiktoken ----------------------------------------------------------------------------------


def _openai_public_recipe(name: str) -> dict[str, Any] | None:
    """pat_str, special tokens, blob URL and sha256 of a tiktoken encoding known to the installed
    `tiktoken_ext.openai_public`, read WITHOUT downloading: its constructor runs with the BPE
    loader swapped for a stub that records the URL and expected hash."""
    import types

    try:
        import tiktoken_ext.openai_public as public
    except ImportError:
        return None
    constructors = getattr(public, "ENCODING_CONSTRUCTORS", {})
    if name not in constructors:
        return None
    calls: list[tuple[str, str | None]] = []

    def fake_load(blobpath: str, expected_hash: str | None = None) -> dict:
        calls.append((blobpath, expected_hash))
        return {}

    def fake_data_gym(*args: Any, **kwargs: Any) -> dict:
        raise LookupError("data-gym format")

    scope = dict(vars(public))
    scope["load_tiktoken_bpe"] = fake_load
    scope["data_gym_to_mergeable_bpe_ranks"] = fake_data_gym
    for fn in constructors.values():
        scope[fn.__name__] = types.FunctionType(
            fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__
        )
    try:
        params = scope[constructors[name].__name__]()
    except LookupError:
        return None
    if not calls:
        return None
    url, expected = calls[0]
    return {
        "pat_str": params["pat_str"],
        "special_tokens": dict(params.get("special_tokens", {})),
        "url": url,
        "sha256": expected,
    }


def _known_tiktoken_names() -> list[str]:
    try:
        import tiktoken_ext.openai_public as public
    except ImportError:
        return []
    return sorted(n for n in getattr(public, "ENCODING_CONSTRUCTORS", {}) if n != "gpt2")


def _tiktoken_cache_dir() -> Path:
    # Same order as tiktoken.load.read_file_cached.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return Path(os.path.expanduser(os.environ["TIKTOKEN_CACHE_DIR"]))
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return Path(os.path.expanduser(os.environ["DATA_GYM_CACHE_DIR"]))
    import tempfile

    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _parse_tiktoken_bpe(data: bytes, path: Path, where: str) -> dict[bytes, int]:
    """The .tiktoken format (`base64-token rank` per line), as `tiktoken.load.load_tiktoken_bpe`
    reads it. Parsed here from bytes we already hold: calling load_tiktoken_bpe on a local path
    would also copy the file into tiktoken's cache directory."""
    import base64
    import binascii

    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise _error(
                where,
                f"{path} is not a tiktoken BPE file (line {lineno} is not `base64-token rank`); "
                f"point `tiktoken:` at a .tiktoken file, {_APPROX_HINT}",
            ) from None
    if not ranks:
        raise _error(where, f"{path} is empty; re-download it, {_APPROX_HINT}")
    return ranks


def _load_tiktoken(spec: TokenizerSpec, base_dir: Path, where: str) -> ChatTokenizer:
    value = spec.tiktoken or ""
    path = _resolve_path(value, base_dir)
    looks_like_path = (
        "/" in value or "\\" in value or value.endswith((".tiktoken", ".model")) or path.exists()
    )
    if looks_like_path:
        if not path.is_file():
            raise _error(
                where,
                f"tiktoken BPE file not found at {path}; fix the `tiktoken:` path, or name an "
                f"encoding ({', '.join(_known_tiktoken_names())}) found in TIKTOKEN_CACHE_DIR, "
                f"{_APPROX_HINT}",
            )
        name = path.name.split(".")[0]
        recipe = _openai_public_recipe(name)
        bpe_file = path
    else:
        name = value
        recipe = _openai_public_recipe(name)
        if recipe is None:
            raise _error(
                where,
                f"unknown tiktoken encoding {name!r} (known: {', '.join(_known_tiktoken_names())}); "
                f"use one of those or a path to a .tiktoken file, {_APPROX_HINT}",
            )
        cache_dir = _tiktoken_cache_dir()
        cache_key = hashlib.sha1(recipe["url"].encode()).hexdigest()
        bpe_file = cache_dir / cache_key
        if not bpe_file.is_file():
            raise _error(
                where,
                f"tiktoken encoding {name!r} is not in the tiktoken cache ({bpe_file} not found); "
                f"set TIKTOKEN_CACHE_DIR to a directory holding the file {cache_key} (the "
                f"download of {recipe['url']}), or download that URL and point `tiktoken:` at the "
                f"file, {_APPROX_HINT}",
            )
    try:
        data = bpe_file.read_bytes()
    except OSError as exc:
        raise _error(where, f"cannot read {bpe_file}: {_one_line(exc)}") from None
    if recipe is not None and recipe.get("sha256"):
        actual = hashlib.sha256(data).hexdigest()
        if actual != recipe["sha256"]:
            raise _error(
                where,
                f"{bpe_file} does not match the published {name} file (sha256 {actual[:12]}…, "
                f"expected {recipe['sha256'][:12]}…): it is corrupt or a different encoding; "
                f"re-download {recipe['url']}, or rename the file if it is a custom encoding",
            )
    ranks = _parse_tiktoken_bpe(data, bpe_file, where)

    if recipe is not None:
        pat_str = recipe["pat_str"]
        specials = dict(recipe["special_tokens"])
        pat_label = name
    else:
        cl100k = _openai_public_recipe("cl100k_base")
        if cl100k is None:  # pragma: no cover - tiktoken always ships openai_public
            raise _error(where, "tiktoken_ext.openai_public is missing; reinstall tiktoken")
        pat_str = cl100k["pat_str"]
        specials = {}
        pat_label = "cl100k_base split pattern"
    specials.update(spec.special_tokens or {})

    tpl_path = _resolve_path(spec.chat_template or "", base_dir)
    source = _read_template_file(tpl_path, where=where)
    variables: dict[str, Any] = {"bos_token": "", "eos_token": ""}
    template = _ChatTemplate(source, name=str(tpl_path), where=where, variables=variables)

    try:
        import tiktoken

        encoding = tiktoken.Encoding(
            name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials
        )
    except Exception as exc:
        raise _error(
            where, f"cannot build tiktoken encoding from {bpe_file}: {_one_line(exc)}"
        ) from None

    fingerprint = _sha256(
        "tiktoken",
        RENDER_VERSION,
        data,
        pat_str,
        json.dumps(specials, sort_keys=True),
        source,
    )
    loaded_tiktoken = _TiktokenChatTokenizer(
        encoding,
        template=template,
        fingerprint=fingerprint,
        description=f"tiktoken:{name} ({bpe_file}, {pat_label}) + template {tpl_path}",
    )
    loaded_tiktoken.sources = (bpe_file, tpl_path)
    return loaded_tiktoken


# ---------------------------------------------------------------------------------------------
# On-disk cache of prompt token ids
# ---------------------------------------------------------------------------------------------


def messages_key(messages: Any, tools: Any = None) -> str:
    """sha256 of the canonical JSON of a conversation (and its tools, if any); for a fixture's
    messages without tools this is `Fixture.messages_digest`, derived once per fixture."""
    payload = messages if tools is None else {"messages": messages, "tools": tools}
    canonical = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _pack(ids: Sequence[int]) -> bytes:
    arr = array("I", ids)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tobytes()


_ENCODE_CHUNK = 1024  # prompts tokenized per batch when ids are kept compactly


def _from_blob(blob: bytes) -> Any:
    """Stored ids as a read-only numpy uint32 array over the blob (no copy on little-endian)."""
    import numpy as np

    return np.frombuffer(blob, dtype="<u4").astype(np.uint32, copy=False)


def _as_compact(ids: Sequence[int]) -> Any:
    import numpy as np

    return np.asarray(ids, dtype=np.uint32)


def _unpack(blob: bytes) -> list[int]:
    arr = array("I")
    arr.frombytes(blob)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tolist()


_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SCHEMA_VERSION = 1
_BATCH = 500


class _UnknownSchema(sqlite3.DatabaseError):
    """The file is a database, but not one this version of costguard wrote."""


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, _UnknownSchema):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


class TokenCountCache:
    """Prompt token ids on disk, keyed by (tokenizer fingerprint, messages key).

    SQLite in WAL mode with a busy timeout, so several processes (pytest-xdist workers) can
    read and write at once. A corrupt file is reported with a warning and rebuilt empty; any
    other failure degrades to cache misses (the cache is never a reason for a run to fail).
    """

    def __init__(
        self, directory: str | Path, *, filename: str = "tokens.sqlite", timeout: float = 30.0
    ):
        self.directory = Path(directory)
        self.path = self.directory / filename
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.RLock()
        self._disabled = False

    # -- connection management ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # after fork: never reuse the parent's connection
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise _UnknownSchema(f"unknown cache schema version {version}")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS prompt_tokens ("
                " fp TEXT NOT NULL, key TEXT NOT NULL, ids BLOB NOT NULL,"
                " PRIMARY KEY (fp, key)) WITHOUT ROWID"
            )
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _file_ok(self) -> bool:
        try:
            probe = sqlite3.connect(self.path, timeout=self.timeout)
            try:
                probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return probe.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            finally:
                probe.close()
        except sqlite3.DatabaseError:
            return False

    def _rebuild(self, exc: BaseException) -> None:
        self.close()
        # Another process may have rebuilt it already: only remove a file that is still bad.
        if not isinstance(exc, _UnknownSchema) and self._file_ok():
            return
        logger.warning(
            "token cache %s is corrupt (%s); rebuilding it empty", self.path, _one_line(exc)
        )
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except OSError:
                pass

    def _run(self, op: Any, default: Any) -> Any:
        """Run op(conn); rebuild once on corruption; on any other problem warn and give up."""
        if self._disabled:
            return default
        with self._lock:
            for attempt in (1, 2):
                try:
                    return op(self._connect())
                except sqlite3.DatabaseError as exc:
                    if attempt == 1 and _is_corruption(exc):
                        self._rebuild(exc)
                        continue
                    logger.warning(
                        "token cache %s unavailable (%s); continuing without it",
                        self.path,
                        _one_line(exc),
                    )
                    self._disabled = True
                    self.close()
                    return default
                except OSError as exc:
                    logger.warning(
                        "token cache %s unavailable (%s); continuing without it",
                        self.path,
                        _one_line(exc),
                    )
                    self._disabled = True
                    return default
            return default

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                try:
                    self._conn.close()
                except sqlite3.Error:
                    pass
            self._conn = None

    def __enter__(self) -> TokenCountCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations --------------------------------------------------------------------------
    def get_many(
        self, fingerprint: str, keys: Iterable[str], *, raw: bool = False
    ) -> dict[str, Any]:
        """{key: token ids} for the keys that are cached (missing keys are simply absent);
        `raw=True` gives the stored bytes (little-endian uint32) instead of lists."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        unpack = bytes if raw else _unpack

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for i in range(0, len(wanted), _BATCH):
                chunk = wanted[i : i + _BATCH]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, ids FROM prompt_tokens WHERE fp = ? AND key IN ({marks})",
                    [fingerprint, *chunk],
                )
                for key, blob in rows:
                    found[key] = unpack(blob)
            return found

        return self._run(op, {})

    def put_many(
        self,
        fingerprint: str,
        items: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]],
    ) -> None:
        """Store token ids for many keys in one transaction."""
        pairs = items.items() if isinstance(items, Mapping) else items
        self.put_packed(fingerprint, [(key, _pack(ids)) for key, ids in pairs])

    def put_packed(self, fingerprint: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Store packed token ids (little-endian uint32 bytes) in one transaction, in key order:
        inserting sorted keys fills each B-tree page once instead of rewriting pages at random,
        which keeps the bytes written (WAL + checkpoint) near twice the file's growth."""
        if not items:
            return
        rows = sorted((fingerprint, key, blob) for key, blob in items)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO prompt_tokens (fp, key, ids) VALUES (?, ?, ?)", rows
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        self._run(op, None)

    def __len__(self) -> int:
        return self._run(lambda c: c.execute("SELECT count(*) FROM prompt_tokens").fetchone()[0], 0)


_PARALLEL_MIN = 2048  # prompts to tokenize before a process pool pays for itself
_FORKED: tuple[Any, Sequence[Any], Sequence[Any]] | None = None  # what forked workers inherit


def tokenizer_workers() -> int:
    """Processes to tokenize with: the cores this process may use (COSTGUARD_TOKENIZER_WORKERS
    overrides; 1 = in this process). Pools need `fork` (the workers inherit the loaded tokenizer)."""
    import multiprocessing

    # fork only where it is the platform's safe default (macOS's system libraries are not fork-safe).
    if (
        not sys.platform.startswith("linux")
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    configured = os.environ.get("COSTGUARD_TOKENIZER_WORKERS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _encode_range(bounds: tuple[int, int]) -> list[bytes]:
    """In a forked worker: render and tokenize positions[start:stop] of the inherited work."""
    assert _FORKED is not None
    tokenizer, messages, tools = _FORKED
    out: list[bytes] = []
    for start in range(bounds[0], bounds[1], _ENCODE_CHUNK):
        stop = min(start + _ENCODE_CHUNK, bounds[1])
        encoded = tokenizer.encode_chat_many(messages[start:stop], tools_list=tools[start:stop])
        out.extend(_pack(ids) for ids in encoded)
    return out


def encode_packed(
    tokenizer: ChatTokenizer,
    messages_list: Sequence[list[dict]],
    tools_seq: Sequence[list | None],
    positions: Sequence[int],
) -> list[bytes]:
    """Packed token ids (little-endian uint32) of the conversations at `positions`.

    Rendering a chat template and turning encodings into ids hold the GIL, so large batches are
    split over forked worker processes (each renders and tokenizes its share single-threaded);
    small ones, and machines with one core, tokenize here in chunks. Both paths give the same
    ids: the workers run this very tokenizer on the same conversations.
    """
    global _FORKED
    messages = [messages_list[i] for i in positions]
    tools = [tools_seq[i] for i in positions]
    workers = min(tokenizer_workers(), max(1, len(positions) // (_PARALLEL_MIN // 2)))
    if workers <= 1 or len(positions) < _PARALLEL_MIN:
        _FORKED = (tokenizer, messages, tools)
        try:
            return _encode_range((0, len(messages)))
        finally:
            _FORKED = None
    import multiprocessing

    # Several slices per worker, so a slow slice (long prompts) does not leave a core idle.
    step = max(_ENCODE_CHUNK, -(-len(messages) // (workers * 4)))
    bounds = [(start, min(start + step, len(messages))) for start in range(0, len(messages), step)]
    _FORKED = (tokenizer, messages, tools)
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: workers fill the cores
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_encode_range, bounds, chunksize=1)
    finally:
        _FORKED = None
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    return [blob for part in parts for blob in part]


def encode_chat_cached(
    tokenizer: ChatTokenizer,
    messages_list: Sequence[list[dict]],
    cache: TokenCountCache | None,
    *,
    tools_list: Sequence[list | None] | None = None,
    compact: bool = False,
    keys: Sequence[str] | None = None,
) -> list[Sequence[int]]:
    """Prompt token ids for many conversations: cached ones from `cache`, the misses tokenized
    in one batch and stored. Approximate tokenizers bypass the cache (they cost nothing).

    `compact=True` returns read-only numpy uint32 arrays (4 bytes a token, zero-copy views of
    the cached bytes; identical prompts share one array) instead of lists of Python ints (~36
    bytes a token): what keeping the ids of 100k long prompts in memory needs. `keys`: the
    conversations' `messages_key`s where the caller has them (`Fixture.messages_digest`).
    """
    tools_seq = list(tools_list) if tools_list is not None else [None] * len(messages_list)
    if cache is None or tokenizer.kind == "approximate":
        encoded = tokenizer.encode_chat_many(messages_list, tools_list=tools_seq)
        return [_as_compact(ids) for ids in encoded] if compact else encoded
    if keys is None:
        keys = [messages_key(m, t) for m, t in zip(messages_list, tools_seq, strict=True)]
    elif len(keys) != len(messages_list):
        raise ValueError(f"{len(keys)} keys for {len(messages_list)} conversations")
    if compact:
        blobs = cache.get_many(tokenizer.fingerprint, keys, raw=True)
        missing_idx = {}
        for i, key in enumerate(keys):
            if key not in blobs and key not in missing_idx:
                missing_idx[key] = i
        missing = list(missing_idx.items())
        # In chunks: a tokenizer's batch output (HF Encodings hold tokens, offsets and masks too)
        # for 10k long prompts would take gigabytes at once. The packed ids are what is kept (the
        # arrays are views of them) and stored in one sorted transaction at the end: random keys
        # committed chunk by chunk rewrite most pages of the file once per chunk.
        positions = [i for _, i in missing]
        packed = encode_packed(tokenizer, messages_list, tools_seq, positions)
        for (key, _), blob in zip(missing, packed, strict=True):
            blobs[key] = blob
        if missing:
            cache.put_packed(tokenizer.fingerprint, [(key, blobs[key]) for key, _ in missing])
        arrays = {key: _from_blob(blob) for key, blob in blobs.items()}
        return [arrays[key] for key in keys]
    found = cache.get_many(tokenizer.fingerprint, keys)
    missing: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in found and key not in missing:
            missing[key] = i
    if missing:
        idx = list(missing.values())
        encoded = tokenizer.encode_chat_many(
            [messages_list[i] for i in idx], tools_list=[tools_seq[i] for i in idx]
        )
        new = dict(zip(missing.keys(), encoded, strict=True))
        cache.put_many(tokenizer.fingerprint, new)
        found.update(new)
    return [list(found[key]) for key in keys]
