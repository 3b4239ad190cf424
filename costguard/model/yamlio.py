"""Strict, line-aware loading of YAML/JSON inputs and validation into pydantic models.

Every mapping and list loaded here remembers the line of each key/item, so a validation
error deep inside a file can be reported as `file:line: key.path: message`.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard, TypeVar, Union

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Strict, ValidationError
from pydantic_core import ErrorDetails

from costguard.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


INT_LIMIT = 2**63 - 1
"""The largest magnitude an integer input may have (int64): 10**400 is bad input, not a number."""


def is_number(value: Any) -> TypeGuard[int | float]:
    """A real, finite number: not a bool, not a string, not NaN or infinity (the one numeric
    rule, for inputs read without a schema: reports, recordings, price tables, server replies)."""
    import math

    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= INT_LIMIT  # 10**400 is no amount of anything (nor a float)
    return isinstance(value, float) and math.isfinite(value)


class StrictModel(BaseModel):
    """Base for every input schema: unknown keys are errors, values are not coerced silently.

    The one numeric rule for every input (README "Reliability"): a number is a finite number
    (`.nan`, `.inf`, "NaN" are errors), an integer fits in int64, and neither numbers nor
    booleans are coerced -- `true` is not 1, "1.5" is not a number, "yes" and 1 are not booleans.
    Every `bool`/`int`/`float` in a subclass's fields, however nested (Optional, list, dict,
    tuple), is made strict when the class is created.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for field in cls.model_fields.values():
            strict = strict_type(field.annotation)
            if strict is not field.annotation:
                field.annotation = strict
                changed = True
        if changed:
            cls.model_rebuild(force=True)


_STRICT_SCALARS: dict[Any, Any] = {
    bool: Annotated[bool, Strict()],
    int: Annotated[int, Strict(), annotated_types.Interval(ge=-INT_LIMIT, le=INT_LIMIT)],
    float: Annotated[float, Strict()],
}
_CONTAINERS: dict[Any, Any] = {list: list, dict: dict, tuple: tuple, set: set, frozenset: frozenset}


def strict_type(tp: Any) -> Any:
    """`tp` with every bool/int/float inside made strict (returns `tp` itself when unchanged)."""
    if tp in _STRICT_SCALARS:
        return _STRICT_SCALARS[tp]
    origin = typing.get_origin(tp)
    if origin is None or origin is Literal:
        return tp
    args = typing.get_args(tp)
    if origin is Annotated:
        inner = strict_type(args[0])
        return tp if inner is args[0] else Annotated[(inner, *tp.__metadata__)]
    new = tuple(a if a is Ellipsis else strict_type(a) for a in args)
    if all(a is b for a, b in zip(new, args, strict=True)):
        return tp
    if origin in (Union, types.UnionType):
        return Union[new]  # noqa: UP007 - built from a tuple at run time
    if origin in _CONTAINERS:
        return _CONTAINERS[origin][new]
    try:
        return origin[new]
    except TypeError:
        return tp


class LineDict(dict):
    """A dict that knows the 1-based line of itself and of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):
    """A list that knows the 1-based line of itself and of each item."""

    line: int = 0
    item_lines: list[int]


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses ~10x faster


class _StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loader that rejects duplicate keys and records line numbers."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConfigError(
                "a mapping key must be a scalar", line=key_node.start_mark.line + 1
            ) from None
        if key in result:
            raise ConfigError(
                f"duplicate key {key!r} (first at line {result.key_lines[key]})",
                line=key_node.start_mark.line + 1,
                key=str(key),
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _StrictLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def read_text(path: Path) -> str:
    """Read a UTF-8 text input; a missing or non-UTF-8 file is a one-line ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a file", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8",
            file=path,
            line=line,
        ) from None


def parse_yaml(text: str, *, file: str | Path) -> Any:
    """Parse one YAML document with line tracking; syntax errors become ConfigError.

    Bounded (costguard.model.limits): the size of the text, the nesting depth, and the extra
    nodes that aliases add when expanded (a "billion laughs" bomb is refused before it is built).
    """
    from costguard.model.limits import limits

    bounds = limits()
    if len(text) > bounds.yaml_max_bytes:
        raise ConfigError(
            f"YAML input of {len(text):,} characters is larger than the limit of "
            f"{bounds.yaml_max_bytes:,} (COSTGUARD_YAML_MAX_BYTES)",
            file=file,
        )
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_graph(node, file, bounds.yaml_max_depth, bounds.yaml_max_alias_nodes)
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=file, line=exc.line, key=exc.key) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:  # e.g. ReaderError: control characters
        reason = getattr(exc, "reason", None) or " ".join(str(exc).split())
        raise ConfigError(f"invalid YAML: {reason}", file=file) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", file=file) from None
    finally:
        loader.dispose()


def _check_node_graph(root: Any, file: str | Path, max_depth: int, max_alias_nodes: int) -> None:
    """Refuse documents nested deeper than `max_depth` or whose aliases would expand to more than
    `max_alias_nodes` extra nodes. Iterative, linear in the number of distinct nodes."""
    expanded: dict[int, int] = {}  # node id -> nodes once every alias is expanded
    depth_of: dict[int, int] = {}  # node id -> nesting depth below it
    unique = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children = _children(node)
        if not done:
            if nid in expanded:
                continue
            if nid in on_path:  # a recursive alias (`&a [*a]`)
                raise ConfigError("invalid YAML: a recursive alias", line=node.start_mark.line + 1)
            on_path.add(nid)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in expanded)
            continue
        on_path.discard(nid)
        unique += 1
        expanded[nid] = 1 + sum(expanded[id(c)] for c in children)
        depth_of[nid] = 1 + max((depth_of[id(c)] for c in children), default=0)
        if depth_of[nid] > max_depth:
            raise ConfigError(
                f"nested deeper than {max_depth} levels (COSTGUARD_YAML_MAX_DEPTH)",
                line=node.start_mark.line + 1,
            )
        if expanded[nid] - unique > max_alias_nodes:
            raise ConfigError(
                f"aliases expand this document by more than {max_alias_nodes:,} nodes "
                "(an alias bomb?); raise COSTGUARD_YAML_MAX_ALIAS_NODES if it is genuine",
                line=node.start_mark.line + 1,
            )


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file (JSON is valid YAML too)."""
    path = Path(path)
    return parse_yaml(read_text(path), file=path)


def line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest element of `loc` that the loaded data can locate."""
    best = getattr(data, "line", None) or None
    node = data
    for part in loc:
        if isinstance(node, LineDict) and part in node:
            best = node.key_lines.get(part, best)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_lines[part]
            node = node[part]
        else:
            break
        inner = getattr(node, "line", None)
        if inner and isinstance(node, LineList):
            best = inner if best is None else best
    return best


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            # A key holding a newline or other control character would break the one-line error.
            out += ("." if out else "") + (text if text.isprintable() else repr(text))
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow `loc` through a model's field annotations to the model that owns the last key."""
    current: Any = model
    for part in loc:
        mapping = _mapping_values(current)
        if mapping is not None:  # a key of a dict field (e.g. a rule's name): its value's type
            current = mapping
            continue
        current = _unwrap(current)
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                # Alias lookup
                for f in current.model_fields.values():
                    if f.alias == part:
                        field = f
                        break
            if field is None:
                return None
            current = field.annotation
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _mapping_values(tp: Any) -> Any:
    """The value type of a dict annotation (through Optional), else None."""
    import collections.abc

    for _ in range(3):
        origin = typing.get_origin(tp)
        if origin in (dict, collections.abc.Mapping):
            return typing.get_args(tp)[-1]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if origin is None or len(args) != 1:
            return None
        tp = args[0]
    return None


def _unwrap(tp: Any) -> Any:
    """Strip Optional/list/dict/Annotated wrappers down to a model class where there is one."""
    for _ in range(6):
        origin = typing.get_origin(tp)
        if origin is None:
            return tp
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        models = [
            a for a in args if isinstance(_unwrap(a), type) and issubclass(_unwrap(a), BaseModel)
        ]
        if models:
            tp = models[0]
        elif args:
            tp = args[-1]
        else:
            return tp
    return tp


def _describe(err: ErrorDetails, model: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    loc = tuple(
        p
        for p in err["loc"]
        if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
    )
    etype = err["type"]
    if etype == "extra_forbidden":
        key = loc[-1] if loc else "?"
        parent = _model_at(model, loc[:-1])
        msg = f"unknown key {key!r}"
        if parent is not None:
            names = [f.alias or n for n, f in parent.model_fields.items()]
            close = difflib.get_close_matches(str(key), names, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
            else:
                msg += f" (allowed: {', '.join(names)})"
        return loc, msg
    if etype == "missing":
        return loc, "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if (
        etype not in ("value_error", "assertion_error")
        and "input" in err
        and not isinstance(err["input"], (dict, list))
    ):
        shown = repr(err["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg += f" (got {shown})"
    return loc, msg


def validate(model: type[M], data: Any, *, file: str | Path, prefix: tuple[Any, ...] = ()) -> M:
    """Validate loaded YAML data into `model`; the first error becomes a one-line ConfigError.

    `prefix` is the location of `data` inside the file (for line lookups on sub-documents
    whose `data` object still carries its own line table).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # An unknown key usually explains the "missing" error beside it (a typo), so say it first.
        errors.sort(key=lambda e: e["type"] != "extra_forbidden")
        err = errors[0]
        loc, msg = _describe(err, model)
        if not loc:
            # A whole-document check names its block ("suites: shares must add up to 1"): point
            # at that block's line, not the document's first line.
            named = re.match(r"([A-Za-z_][\w.]*): ", msg)
            if named and isinstance(data, dict) and named.group(1).split(".")[0] in data:
                loc = tuple(named.group(1).split("."))
                msg = msg[named.end() :]
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
        line = line_of(data, loc)
        key = format_loc(prefix + loc) or None
        raise ConfigError(msg, file=file, line=line, key=key) from None


def check_regex(pattern: str, what: str = "") -> None:
    """Raise ValueError (which validation turns into a located message) for an invalid regex."""
    import re

    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what}invalid regular expression: {exc}") from None
