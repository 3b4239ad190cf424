"""Prompt fixtures: loading YAML/JSONL files, rendering jinja2 prompt templates, importing logs.

A fixture is one request of representative traffic: OpenAI chat messages (literal, or rendered
from a template file in the repo so that a PR editing a template changes the projection), its
suite, its weight (share of its suite's traffic), sampling parameters and expectations.

The file format (fixture, message, tool, sampling, assertion and expect models) is
`fixture_spec`, the loaded `Fixture` is `fixture_record`, template rendering is
`fixture_templates` and log import is `fixture_logs`; their public names are importable from here.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError
from costguard.model.fixture_fast import SHARED_MIN, fast_fixture
from costguard.model.fixture_logs import (  # noqa: F401 (re-exported)
    BATCH_CHAT_URL,
    import_logs,
    parse_chat_request,
)
from costguard.model.fixture_record import Fixture
from costguard.model.fixture_snapshot import SnapshotStore, file_digest
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
from costguard.model.fixture_templates import TemplateRenderer
from costguard.model.heap import collector_paused
from costguard.model.jsonl import json_lines, validate_json_line
from costguard.model.yamlio import (
    LineDict,
    format_loc,
    line_of,
    parse_yaml,
    read_text,
    validate,
)

FIXTURE_SUFFIXES = (".yaml", ".yml", ".jsonl")


def discover(paths: Sequence[str | Path], *, root: Path) -> list[Path]:
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
    merged = LineDict(defaults)
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
    renderer: TemplateRenderer | None,
    project_root: Path | None = None,
    allowed: tuple[Path, ...] = (),
    strings: dict[Any, Any] | None = None,
) -> tuple[Fixture, TemplateRenderer | None]:
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
            renderer = renderer or TemplateRenderer(project_root or file.parent, allowed)
            tpath = (file.parent / msg.template).resolve()
            key = (
                f"{loc}.messages[{i}].template" if spec.messages is not None else f"{loc}.template"
            )
            content = renderer.render(tpath, spec.vars, file=Path(display), line=line, key=key)
            templates.append(str(tpath))
        if strings is not None and isinstance(content, str) and len(content) >= SHARED_MIN:
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


@collector_paused()  # a load allocates a few containers per fixture and keeps them all
def load_fixture_file(
    path: Path,
    *,
    display: str | None = None,
    project_root: Path | None = None,
    allowed: tuple[Path, ...] = (),
    strings: dict[Any, Any] | None = None,
    snapshots: SnapshotStore | None = None,
    hashes: dict[str, str] | None = None,
) -> list[Fixture]:
    """The fixtures of one file. Templates must resolve inside `project_root` (default: the
    file's own directory) or one of the `allowed` directories. `strings` shares repeated message
    texts, sampling parameters and empty expectations across files (one object per distinct
    value, never mutated). With `snapshots`, a JSONL file is read from its snapshot when one of
    its bytes exists (and one is kept when it loads); `hashes` then gets the sha256 of the bytes
    read, by resolved path."""
    display = display or str(path)
    strings = {} if strings is None else strings
    renderer: TemplateRenderer | None = None
    fixtures: list[Fixture] = []
    if path.suffix == ".jsonl":
        default_suite = path.stem
        content = hasher = None
        if snapshots is not None:
            try:
                content = file_digest(path)
            except OSError:
                pass  # reading it below says what is wrong
            else:
                kept = snapshots.load(
                    content, display=display, default_suite=default_suite, strings=strings
                )
                if kept is not None:
                    if hashes is not None:
                        hashes[str(path.resolve())] = content
                    return kept
                hasher = hashlib.sha256()
        # As written, for a snapshot: (suite, sampling, expect) of each fixture (None once a
        # line takes the full path: that file gets none).
        raws: list[tuple[Any, Any, Any]] | None = [] if hasher is not None else None
        for n, data in json_lines(path, file=display, what=" (one fixture)", hasher=hasher):
            fast = fast_fixture(
                data, display=display, line=n, default_suite=default_suite, strings=strings
            )
            if fast is not None:
                fixtures.append(fast)
                if raws is not None:
                    raws.append((data.get("suite"), data.get("sampling", {}), data.get("expect")))
                continue
            raws = None
            spec = validate_json_line(FixtureSpec, data, file=display, line=n)
            fx, renderer = _build(
                spec,
                file=path,
                display=display,
                line=n,
                loc=f"line {n}",
                default_suite=default_suite,
                renderer=renderer,
                project_root=project_root,
                allowed=allowed,
                strings=strings,
            )
            fixtures.append(fx)
        if hasher is not None and content is not None and hasher.hexdigest() == content:
            # (the bytes parsed are those hashed: the file did not change in between)
            if hashes is not None:
                hashes[str(path.resolve())] = content
            if raws is not None and snapshots is not None:
                snapshots.save(content, fixtures, raws)
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


@collector_paused()  # a load allocates a few containers per fixture and keeps them all
def load_fixtures(
    paths: Sequence[str | Path],
    *,
    root: Path,
    project_root: Path | None = None,
    allowed: tuple[Path, ...] = (),
    confine: bool = False,
    cache_dir: Path | None = None,
    hashes: dict[str, str] | None = None,
) -> list[Fixture]:
    """Load every fixture under `paths`; ids must be unique; an empty set is an error.

    Paths are relative to `root`; templates must stay inside `project_root` (default `root`)
    or `allowed`. With `confine` (paths from costguard.yaml), the fixture files must too.
    With `cache_dir`, JSONL files are read through their snapshots (`fixture_snapshot`) and
    `hashes` gets the sha256 of each such file's bytes, by resolved path.
    """
    from costguard.model.paths import require_inside

    files = discover(paths, root=root)
    if confine:
        for f in files:
            require_inside(f, project_root or root, allowed, what="fixture file")
    fixtures: list[Fixture] = []
    seen: dict[str, Fixture] = {}
    strings: dict[Any, Any] = {}
    snapshots = SnapshotStore(cache_dir / "fixtures") if cache_dir is not None else None
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
            snapshots=snapshots,
            hashes=hashes,
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
