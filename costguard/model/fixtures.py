"""Prompt fixtures: loading YAML/JSONL files, rendering jinja2 prompt templates, importing logs.

A fixture is one request of representative traffic: OpenAI chat messages (literal, or rendered
from a template file in the repo so that a PR editing a template changes the projection), its
suite, its weight (share of its suite's traffic), sampling parameters and expectations.

The file format (fixture, message, tool, sampling, assertion and expect models) is
`fixture_spec`; its names are importable from here.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError
from costguard.model.fixture_spec import (  # noqa: F401 (re-exported)
    _MESSAGE_KEYS,
    ASSERTION_TYPES,
    ID_PATTERN,
    MEDIA_PART_TYPES,
    TEXT_PART_KEYS,
    Assertion,
    ChatRequest,
    Expect,
    FixtureFile,
    FixtureSpec,
    FunctionCall,
    FunctionDefinition,
    JsonCheck,
    JudgeCheck,
    Message,
    Sampling,
    SimilarCheck,
    Tool,
    ToolCall,
    canonical_json,
    check_content_parts,
    message_text,
    parts_text,
    tool_fields,
)
from costguard.model.yamlio import (
    LineDict,
    format_loc,
    line_of,
    parse_json_line,
    parse_yaml,
    read_text,
    validate,
)

FIXTURE_SUFFIXES = (".yaml", ".yml", ".jsonl")


@dataclass
class Fixture:
    """A fixture ready to replay: messages rendered, defaults applied."""

    id: str
    suite: str
    weight: float
    messages: list[dict[str, Any]]
    sampling: Sampling
    expect: Expect
    file: str
    line: int | None
    model: str | None = None
    label: str | None = None
    tags: list[str] = field(default_factory=list)
    skip: str | None = None
    xfail: str | None = None
    templates: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    _hash: str | None = field(default=None, repr=False)
    _messages_digest: str | None = field(default=None, repr=False)
    _sampling_json: str | None = field(default=None, repr=False)

    def request_body(self) -> dict[str, Any]:
        """What a backend sends besides the model and sampling: messages, tools, tool_choice."""
        return {"messages": self.messages, **tool_fields(self.tools, self.tool_choice)}

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def sampling_json(self) -> str:
        """The sampling parameters sent with the request, as canonical JSON."""
        if self._sampling_json is None:
            self._sampling_json = canonical_json(self.sampling.as_request_params())
        return self._sampling_json

    @property
    def content_hash(self) -> str:
        """Hash of everything a backend sees: messages, sampling, requested model.

        The sha256 of the canonical JSON of {"m": messages, "model": model, "s": sampling}.
        """
        if self._hash is None:
            self._derive_keys()
        assert self._hash is not None
        return self._hash

    @property
    def messages_digest(self) -> str:
        """sha256 of the conversation's canonical JSON (sorted keys, compact; with its tools when
        it has any): the token-count cache key, `tokenization.messages_key(messages, tools)`."""
        if self._messages_digest is None:
            self._derive_keys()
        assert self._messages_digest is not None
        return self._messages_digest

    def _derive_keys(self) -> None:
        """Both content keys from one serialisation of the messages (kept only as digests: the
        JSON of 100k long prompts would double the fixtures' memory). The pieces are joined in
        sorted-key order, so each digest equals that of one json.dumps(sort_keys=True) of the
        whole payload; tools and tool_choice only when set (plain chat keys stay put)."""
        messages_json = canonical_json(self.messages)
        tools_json = canonical_json(self.tools) if self.tools is not None else None
        conversation = (
            messages_json
            if tools_json is None
            else f'{{"messages":{messages_json},"tools":{tools_json}}}'
        )
        self._messages_digest = hashlib.sha256(
            conversation.encode("utf-8", "surrogatepass")
        ).hexdigest()
        canonical = (
            f'{{"m":{messages_json},'
            f'"model":{json.dumps(self.model, ensure_ascii=False)},'
            f'"s":{self.sampling_json}'
        )
        if self.tool_choice is not None:
            canonical += f',"tool_choice":{canonical_json(self.tool_choice)}'
        if tools_json is not None:
            canonical += f',"tools":{tools_json}'
        self._hash = hashlib.sha256((canonical + "}").encode()).hexdigest()

    @property
    def last_user_text(self) -> str:
        for msg in reversed(self.messages):
            if msg["role"] == "user":
                return message_text(msg)
        return ""

    @property
    def system_text(self) -> str:
        return "\n".join(
            message_text(m) for m in self.messages if m["role"] in ("system", "developer")
        )


class _TemplateRenderer:
    """Sandboxed, bounded jinja2 with StrictUndefined: a missing variable is an error, never an
    empty string; a render ends within the limits of `costguard.model.templating`.

    `{% include %}`, `{% import %}` and `{% extends %}` work, with names relative to the project
    root (like every path jinja2 resolves through a loader), and only reach files inside the
    root or an `allowed_paths:` directory.
    """

    def __init__(self, root: Path, allowed: tuple[Path, ...] = ()) -> None:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment

        from costguard.model.templating import bounded_environment

        self.root = root
        self.allowed = allowed
        self._env = bounded_environment(
            SandboxedEnvironment,
            undefined=StrictUndefined,
            autoescape=False,
            loader=_ProjectLoader(root, allowed),
        )
        self._cache: dict[Path, Any] = {}

    def render(
        self, path: Path, variables: dict[str, Any], *, file: Path, line: int | None, key: str
    ) -> str:
        from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError

        from costguard.model.paths import require_inside
        from costguard.model.templating import TemplateLimitError, render_bounded

        try:
            require_inside(
                path, self.root, self.allowed, what="template", file=file, line=line, key=key
            )
            is_file = path.is_file()
        except (OSError, ValueError) as exc:
            why = " ".join(str(exc).split())
            raise ConfigError(
                f"template path unusable: {why}"[:200], file=file, line=line, key=key
            ) from None
        template = self._cache.get(path)
        if template is None:
            source = read_text(path) if is_file else None
            if source is None:
                raise ConfigError(f"template file not found: {path}", file=file, line=line, key=key)
            try:
                template = self._env.from_string(source)
            except TemplateSyntaxError as exc:
                raise ConfigError(
                    f"template syntax error: {exc.message}", file=path, line=exc.lineno
                ) from None
            except RecursionError:
                raise ConfigError("template nested too deeply", file=path) from None
            self._cache[path] = template
        try:
            return render_bounded(template, **variables)
        except TemplateLimitError as exc:
            raise ConfigError(
                f"template {path.name}: {exc}", file=file, line=line, key=key
            ) from None
        except ConfigError as exc:  # an include outside the root, or unreadable
            raise ConfigError(
                f"template {path.name}: {exc}", file=file, line=line, key=key
            ) from None
        except TemplateSyntaxError as exc:  # in an included template
            raise ConfigError(
                f"template {path.name}: syntax error in {exc.name or 'an included template'} "
                f"line {exc.lineno}: {exc.message}",
                file=file,
                line=line,
                key=key,
            ) from None
        except (RecursionError, MemoryError):
            raise ConfigError(
                f"template {path.name}: nested or recursive too deeply",
                file=file,
                line=line,
                key=key,
            ) from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise ConfigError(
                f"template {path.name}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                file=file,
                line=line,
                key=key,
            ) from None
        except UndefinedError as exc:
            raise ConfigError(
                f"template {path.name}: {exc.message} (add it to vars:)",
                file=file,
                line=line,
                key=key,
            ) from None
        except TemplateError as exc:
            raise ConfigError(
                f"template {path.name}: {exc}", file=file, line=line, key=key
            ) from None


class _ProjectLoader:
    """jinja2 loader for `{% include/import/extends %}`: names relative to the project root,
    resolved files must stay inside it (or an allowed directory)."""

    def __new__(cls, root: Path, allowed: tuple[Path, ...]) -> Any:
        from jinja2 import BaseLoader, TemplateNotFound

        from costguard.model.paths import require_inside

        class ProjectLoader(BaseLoader):
            def get_source(self, environment: Any, template: str) -> tuple[str, str, Any]:
                name = str(template)
                shown = name if len(name) <= 80 else name[:60] + "…"
                try:
                    path = Path(name) if Path(name).is_absolute() else root / name
                    require_inside(path, root, allowed, what=f"included template {shown!r} at")
                    found = path.is_file()
                    source = read_text(path) if found else ""
                    mtime = path.stat().st_mtime if found else 0.0
                except (OSError, ValueError) as exc:  # too long, NUL bytes, a loop...
                    why = " ".join(str(exc).split())
                    raise ConfigError(f"included template {shown!r}: {why}"[:200]) from None
                if not found:
                    raise TemplateNotFound(repr(shown))
                return source, str(path), lambda: path.is_file() and path.stat().st_mtime == mtime

        return ProjectLoader()


def discover(paths: list[str | Path], *, root: Path) -> list[Path]:
    """Fixture files under the given files/directories (relative to `root`), sorted, de-duplicated."""
    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.is_absolute():
            path = root / path
        if path.is_dir():
            found.extend(
                sorted(f for f in path.rglob("*") if f.suffix in FIXTURE_SUFFIXES and f.is_file())
            )
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError("fixture path not found", file=path)
    seen: set[Path] = set()
    unique = []
    for f in found:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def _merge(defaults: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    if not defaults:
        return item
    merged: dict[str, Any] = LineDict(defaults)
    merged.key_lines = dict(getattr(item, "key_lines", {}))
    merged.line = getattr(item, "line", 0)
    for key, value in item.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            value = _merge(defaults[key], value)
        merged[key] = value
    return merged


def _build(
    spec: FixtureSpec,
    *,
    file: Path,
    display: str,
    line: int | None,
    loc: str,
    default_suite: str,
    renderer: _TemplateRenderer | None,
    project_root: Path | None = None,
    allowed: tuple[Path, ...] = (),
    strings: dict[Any, Any] | None = None,
) -> tuple[Fixture, _TemplateRenderer | None]:
    messages: list[dict[str, Any]] = []
    templates: list[str] = []
    raw_messages = (
        spec.messages
        if spec.messages is not None
        else [Message(role="user", template=spec.template)]
    )
    for i, msg in enumerate(raw_messages):
        content = msg.content
        if msg.template is not None:
            renderer = renderer or _TemplateRenderer(project_root or file.parent, allowed)
            tpath = (file.parent / msg.template).resolve()
            key = (
                f"{loc}.messages[{i}].template" if spec.messages is not None else f"{loc}.template"
            )
            content = renderer.render(tpath, spec.vars, file=Path(display), line=line, key=key)
            templates.append(str(tpath))
        if strings is not None and isinstance(content, str) and len(content) >= _SHARED_MIN:
            # One copy of each repeated text (system prompts, RAG context) however many
            # fixtures carry it: imported production logs repeat them in every request.
            content = strings.setdefault(content, content)
        message = msg.as_request(content)
        message["role"] = sys.intern(message["role"])
        messages.append(message)
    sampling, expect, sampling_json = spec.sampling, spec.expect, None
    if strings is not None:
        sampling_json = canonical_json(sampling.as_request_params())
        sampling = strings.setdefault(("sampling", sampling_json), sampling)
        if not expect.model_fields_set:
            expect = strings.setdefault(("expect", None), expect)
    fixture = Fixture(
        id=spec.id,
        suite=spec.suite or default_suite,
        weight=spec.weight,
        messages=messages,
        sampling=sampling,
        expect=expect,
        file=display,
        line=line,
        model=spec.model,
        label=spec.label,
        tags=list(spec.tags),
        skip=spec.skip,
        xfail=spec.xfail,
        templates=templates,
        tools=(
            [{"type": "function", **t.model_dump(exclude_unset=True)} for t in spec.tools]
            if spec.tools is not None
            else None
        ),
        tool_choice=spec.tool_choice,
        _sampling_json=sampling_json,
    )
    return fixture, renderer


_SHARED_MIN = 64  # message texts at least this long are stored once per load


def load_fixture_file(
    path: Path,
    *,
    display: str | None = None,
    project_root: Path | None = None,
    allowed: tuple[Path, ...] = (),
    strings: dict[Any, Any] | None = None,
) -> list[Fixture]:
    """The fixtures of one file. Templates must resolve inside `project_root` (default: the
    file's own directory) or one of the `allowed` directories. `strings` shares repeated message
    texts, sampling parameters and empty expectations across files (one object per distinct
    value, never mutated)."""
    display = display or str(path)
    strings = {} if strings is None else strings
    renderer: _TemplateRenderer | None = None
    fixtures: list[Fixture] = []
    if path.suffix == ".jsonl":
        text = read_text(path)
        for n, raw_line in enumerate(text.splitlines(), start=1):
            if not raw_line.strip():
                continue
            data = parse_json_line(raw_line, file=display, line=n)
            if not isinstance(data, dict):
                raise ConfigError(
                    "each line must be a JSON object (one fixture)", file=display, line=n
                )
            try:
                spec = validate(FixtureSpec, data, file=display)
            except ConfigError as exc:
                raise ConfigError(exc.message, file=display, line=n, key=exc.key) from None
            fx, renderer = _build(
                spec,
                file=path,
                display=display,
                line=n,
                loc=f"line {n}",
                default_suite=path.stem,
                renderer=renderer,
                project_root=project_root,
                allowed=allowed,
                strings=strings,
            )
            fixtures.append(fx)
    else:
        raw = parse_yaml(read_text(path), file=display)
        if raw is None:
            raise ConfigError("fixture file is empty", file=display, line=1)
        if isinstance(raw, list):  # a bare list of fixtures
            doc = LineDict(fixtures=raw)
            doc.key_lines = {"fixtures": getattr(raw, "line", 1)}
            raw = doc
        if not isinstance(raw, dict):
            raise ConfigError(
                "expected a mapping with a `fixtures:` list (or a list of fixtures)",
                file=display,
                line=1,
            )
        ffile = validate(FixtureFile, raw, file=display)
        default_suite = ffile.suite or path.stem
        items = raw["fixtures"]
        for i, item in enumerate(items):
            line = line_of(raw, ("fixtures", i))
            if not isinstance(item, dict):
                raise ConfigError(
                    "each fixture must be a mapping", file=display, line=line, key=f"fixtures[{i}]"
                )
            merged = _merge(ffile.defaults, item)
            spec = validate(FixtureSpec, merged, file=display, prefix=("fixtures", i))
            fx, renderer = _build(
                spec,
                file=path,
                display=display,
                line=line,
                loc=format_loc(("fixtures", i)),
                default_suite=default_suite,
                renderer=renderer,
                project_root=project_root,
                allowed=allowed,
                strings=strings,
            )
            fixtures.append(fx)
    return fixtures


def load_fixtures(
    paths: list[str | Path],
    *,
    root: Path,
    project_root: Path | None = None,
    allowed: tuple[Path, ...] = (),
    confine: bool = False,
) -> list[Fixture]:
    """Load every fixture under `paths`; ids must be unique; an empty set is an error.

    Paths are relative to `root`; templates must stay inside `project_root` (default `root`)
    or `allowed`. With `confine` (paths from costguard.yaml), the fixture files must too.
    """
    from costguard.model.paths import require_inside

    files = discover(paths, root=root)
    if confine:
        for f in files:
            require_inside(f, project_root or root, allowed, what="fixture file")
    fixtures: list[Fixture] = []
    seen: dict[str, Fixture] = {}
    strings: dict[Any, Any] = {}
    for f in files:
        try:
            display = str(f.relative_to(root))
        except ValueError:
            display = str(f)
        for fx in load_fixture_file(
            f,
            display=display,
            project_root=project_root or root,
            allowed=allowed,
            strings=strings,
        ):
            if fx.id in seen:
                raise ConfigError(
                    f"duplicate fixture id {fx.id!r} (also at {seen[fx.id].location})",
                    file=fx.file,
                    line=fx.line,
                    key="id",
                )
            seen[fx.id] = fx
            fixtures.append(fx)
    if not fixtures:
        where = ", ".join(str(p) for p in paths)
        raise ConfigError(
            f"no fixtures found in {where} (expected *.yaml, *.yml or *.jsonl files with fixtures)"
        )
    return fixtures


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
        try:
            msg = validate(Message, data, file=file)
        except ConfigError as exc:
            raise ConfigError(
                exc.message, file=file, line=line, key=f"messages[{j}]" + _sub(exc.key)
            ) from None
        messages.append(msg.as_request(data.get("content")))
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ConfigError("`tools` must be a list", file=file, line=line, key="tools")
        dumped = []
        for j, tool in enumerate(tools):
            try:
                spec = validate(Tool, tool, file=file)
            except ConfigError as exc:
                raise ConfigError(
                    exc.message, file=file, line=line, key=f"tools[{j}]" + _sub(exc.key)
                ) from None
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


def _sub(key: str | None) -> str:
    if not key:
        return ""
    return key if key.startswith("[") else "." + key


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
        reply = response.get("body") if isinstance(response.get("body"), dict) else response
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
    text = read_text(source)
    for n, raw_line in enumerate(text.splitlines(), start=1):
        if not raw_line.strip():
            continue
        data = parse_json_line(raw_line, file=source, line=n)
        if not isinstance(data, dict):
            raise ConfigError("each line must be a JSON object", file=source, line=n)
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
        try:
            validate(FixtureSpec, fixture, file=source)
        except ConfigError as exc:
            raise ConfigError(exc.message, file=source, line=n, key=exc.key) from None
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
