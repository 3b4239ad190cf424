"""Prompt fixtures: loading YAML/JSONL files, rendering jinja2 prompt templates, importing logs.

A fixture is one request of representative traffic: OpenAI chat messages (literal, or rendered
from a template file in the repo so that a PR editing a template changes the projection), its
suite, its weight (share of its suite's traffic), sampling parameters and expectations.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from costguard.errors import ConfigError
from costguard.model.yamlio import (
    LineDict,
    StrictModel,
    check_regex,
    format_loc,
    line_of,
    parse_json_line,
    parse_yaml,
    read_text,
    validate,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
FIXTURE_SUFFIXES = (".yaml", ".yml", ".jsonl")


class Message(StrictModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None
    template: str | None = Field(
        default=None, description="jinja2 file (relative to the fixture file)"
    )
    name: str | None = None

    @model_validator(mode="after")
    def _content_or_template(self) -> Message:
        if (self.content is None) == (self.template is None):
            raise ValueError("give exactly one of content or template")
        return self


class Sampling(StrictModel):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None

    def as_request_params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class JsonCheck(StrictModel):
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class SimilarCheck(StrictModel):
    threshold: float = Field(ge=-1, le=1)
    reference: str | None = Field(default=None, description="default: expect.reference")


class JudgeCheck(StrictModel):
    rubric: str
    tier: str | None = None
    min_score: float = Field(default=0.7, ge=0, le=1)


ASSERTION_TYPES = (
    "equals",
    "contains",
    "icontains",
    "not_contains",
    "regex",
    "json",
    "max_output_tokens",
    "similar",
    "judge",
    "custom",
)


class Assertion(StrictModel):
    """One quality check on a response: exactly one type key, plus an optional weight."""

    equals: str | None = None
    contains: str | None = None
    icontains: str | None = None
    not_contains: str | None = None
    regex: str | None = None
    json_: bool | JsonCheck | None = Field(default=None, alias="json")
    max_output_tokens: int | None = Field(default=None, ge=0)
    similar: SimilarCheck | None = None
    judge: JudgeCheck | None = None
    custom: str | None = Field(
        default=None, description="dotted path of a scorer: package.module:function"
    )
    weight: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Assertion:
        given = [
            t for t in ASSERTION_TYPES if getattr(self, "json_" if t == "json" else t) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"an assertion has exactly one type key of {', '.join(ASSERTION_TYPES)}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.regex is not None:
            check_regex(self.regex)
        return self

    @cached_property
    def type(self) -> str:
        return next(
            t for t in ASSERTION_TYPES if getattr(self, "json_" if t == "json" else t) is not None
        )

    @cached_property
    def value(self) -> Any:
        return getattr(self, "json_" if self.type == "json" else self.type)


class Expect(StrictModel):
    output_tokens: int | None = Field(default=None, ge=0, description="expected completion tokens")
    reference: str | None = None
    assertions: list[Assertion] = Field(default_factory=list)


class FixtureSpec(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    suite: str | None = None
    weight: float = Field(default=1.0, gt=0)
    messages: list[Message] | None = None
    template: str | None = Field(
        default=None, description="shorthand: one user message rendered from this file"
    )
    vars: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    expect: Expect = Field(default_factory=Expect)
    label: str | None = None
    tags: list[str] = Field(default_factory=list)
    skip: str | None = None
    xfail: str | None = None

    @model_validator(mode="after")
    def _messages_or_template(self) -> FixtureSpec:
        if (self.messages is None) == (self.template is None):
            raise ValueError("give exactly one of messages or template")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        return self


class FixtureFile(StrictModel):
    suite: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    fixtures: list[dict[str, Any]] = Field(min_length=1)


def _canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, unicode as is: the serialisation every content key hashes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


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
    _hash: str | None = field(default=None, repr=False)
    _messages_digest: str | None = field(default=None, repr=False)
    _sampling_json: str | None = field(default=None, repr=False)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def sampling_json(self) -> str:
        """The sampling parameters sent with the request, as canonical JSON."""
        if self._sampling_json is None:
            self._sampling_json = _canonical_json(self.sampling.as_request_params())
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
        """sha256 of the messages' canonical JSON (sorted keys, compact): the token-count cache key
        of the conversation (`tokenization.messages_key`)."""
        if self._messages_digest is None:
            self._derive_keys()
        assert self._messages_digest is not None
        return self._messages_digest

    def _derive_keys(self) -> None:
        """Both content keys from one serialisation of the messages (kept only as digests: the
        JSON of 100k long prompts would double the fixtures' memory)."""
        messages_json = _canonical_json(self.messages)
        self._messages_digest = hashlib.sha256(
            messages_json.encode("utf-8", "surrogatepass")
        ).hexdigest()
        canonical = (
            f'{{"m":{messages_json},'
            f'"model":{json.dumps(self.model, ensure_ascii=False)},'
            f'"s":{self.sampling_json}}}'
        )
        self._hash = hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def last_user_text(self) -> str:
        for msg in reversed(self.messages):
            if msg["role"] == "user":
                return msg.get("content") or ""
        return ""

    @property
    def system_text(self) -> str:
        return "\n".join(
            m.get("content") or "" for m in self.messages if m["role"] in ("system", "developer")
        )


class _TemplateRenderer:
    """Sandboxed jinja2 with StrictUndefined: a missing variable is an error, never an empty string."""

    def __init__(self) -> None:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment

        self._env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._cache: dict[Path, Any] = {}

    def render(
        self, path: Path, variables: dict[str, Any], *, file: Path, line: int | None, key: str
    ) -> str:
        from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError

        template = self._cache.get(path)
        if template is None:
            source = read_text(path) if path.is_file() else None
            if source is None:
                raise ConfigError(f"template file not found: {path}", file=file, line=line, key=key)
            try:
                template = self._env.from_string(source)
            except TemplateSyntaxError as exc:
                raise ConfigError(
                    f"template syntax error: {exc.message}", file=path, line=exc.lineno
                ) from None
            self._cache[path] = template
        try:
            return template.render(**variables)
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
            renderer = renderer or _TemplateRenderer()
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
        out: dict[str, Any] = {"role": sys.intern(msg.role), "content": content}
        if msg.name is not None:
            out["name"] = msg.name
        messages.append(out)
    sampling, expect, sampling_json = spec.sampling, spec.expect, None
    if strings is not None:
        sampling_json = _canonical_json(sampling.as_request_params())
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
        _sampling_json=sampling_json,
    )
    return fixture, renderer


_SHARED_MIN = 64  # message texts at least this long are stored once per load


def load_fixture_file(
    path: Path, *, display: str | None = None, strings: dict[Any, Any] | None = None
) -> list[Fixture]:
    """The fixtures of one file; `strings` shares repeated message texts, sampling parameters
    and empty expectations across files (one object per distinct value, never mutated)."""
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
                strings=strings,
            )
            fixtures.append(fx)
    return fixtures


def load_fixtures(paths: list[str | Path], *, root: Path) -> list[Fixture]:
    """Load every fixture under `paths`; ids must be unique; an empty set is an error."""
    files = discover(paths, root=root)
    fixtures: list[Fixture] = []
    seen: dict[str, Fixture] = {}
    strings: dict[Any, Any] = {}
    for f in files:
        try:
            display = str(f.relative_to(root))
        except ValueError:
            display = str(f)
        for fx in load_fixture_file(f, display=display, strings=strings):
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


def parse_chat_request(
    body: Any, *, file: str | Path, line: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """An OpenAI chat-completion request body -> (messages, sampling parameters, model).

    Shared by log import and by calls observed in tests, so both read request bodies the same way:
    text content parts are joined, `max_completion_tokens` stands in for `max_tokens`.
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
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ConfigError(
                "message content must be text", file=file, line=line, key=f"messages[{j}].content"
            )
        messages.append({"role": m["role"], "content": content})
    sampling_keys = set(Sampling.model_fields)
    sampling = {k: v for k, v in body.items() if k in sampling_keys and v is not None}
    if "max_completion_tokens" in body and "max_tokens" not in sampling:
        sampling["max_tokens"] = body["max_completion_tokens"]
    model = body.get("model") or None
    return messages, sampling, model


def import_logs(
    source: Path,
    *,
    suite: str,
    id_prefix: str = "log",
    dedupe: bool = False,
) -> list[dict[str, Any]]:
    """Turn OpenAI-format request logs (JSONL of chat-completion request bodies, optionally with
    `usage` or wrapped as {"request": ..., "response": ...}) into fixture dicts."""
    out: list[dict[str, Any]] = []
    by_hash: dict[str, dict[str, Any]] = {}
    text = read_text(source)
    for n, raw_line in enumerate(text.splitlines(), start=1):
        if not raw_line.strip():
            continue
        data = parse_json_line(raw_line, file=source, line=n)
        if not isinstance(data, dict):
            raise ConfigError("each line must be a JSON object", file=source, line=n)
        body = data.get("request", data)
        response = data.get("response") if isinstance(data.get("response"), dict) else None
        usage = (response or {}).get("usage") or data.get("usage")
        messages, sampling, model = parse_chat_request(body, file=source, line=n)
        fixture: dict[str, Any] = {
            "id": f"{id_prefix}-{n:06d}",
            "suite": suite,
            "messages": messages,
        }
        if sampling:
            fixture["sampling"] = sampling
        if model:
            fixture["model"] = model
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            fixture["expect"] = {"output_tokens": usage["completion_tokens"]}
        # Validate through the same schema the loader uses, so imported files always load.
        try:
            validate(FixtureSpec, fixture, file=source)
        except ConfigError as exc:
            raise ConfigError(exc.message, file=source, line=n, key=exc.key) from None
        if dedupe:
            key = json.dumps(
                {k: fixture.get(k) for k in ("messages", "sampling", "model")}, sort_keys=True
            )
            if key in by_hash:
                by_hash[key]["weight"] = by_hash[key].get("weight", 1) + 1
                continue
            by_hash[key] = fixture
        out.append(fixture)
    if not out:
        raise ConfigError("no requests found in the log", file=source)
    return out
