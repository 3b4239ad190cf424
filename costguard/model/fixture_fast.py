"""The fast path of fixture loading: a JSONL fixture of the common shape becomes a `Fixture`
without a pydantic validation of the whole fixture.

The common shape is an id, plain-text chat messages ({"role", "content": "text"}), and optional
suite, weight, sampling, expect, model, label, tags, skip and xfail. Anything else (templates,
tools, content parts, tool calls, names, vars, an unknown key, a value of another type or out of
range) returns None, and the caller validates that fixture in full, so that path alone decides
what is an error and says so. The fast path accepts only what the full path accepts and builds
the same `Fixture`: same values, types and key order, and the same shared objects for repeated
texts, sampling parameters and empty expectations (see `fixtures._build`).

Sampling parameters repeat across a fixture set: each distinct one (as written) is validated
once through the `Sampling` model and remembered in the load's shared table.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

from costguard.model.fixture_record import Fixture
from costguard.model.fixture_spec import ID_PATTERN, Expect, Sampling, canonical_json

SHARED_MIN = 64  # message texts at least this long are stored once per load

_KEYS = frozenset(
    ("id", "suite", "weight", "messages", "sampling", "expect", "model", "label", "tags")
    + ("skip", "xfail")
)
_ROLES = {role: sys.intern(role) for role in ("system", "user", "assistant", "tool", "developer")}
# ID_PATTERN without its anchors, matched against the whole id (a trailing newline never passes).
_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_MAX_EXACT_INT = 2**53  # an integer weight up to this converts to float exactly
_OPTIONAL_TEXT = ("model", "label", "skip", "xfail")


def fast_fixture(
    data: dict[str, Any],
    *,
    display: str,
    line: int,
    default_suite: str,
    strings: dict[Any, Any],
) -> Fixture | None:
    """The fixture of one JSONL line's object, or None when it is not of the common shape."""
    if not _KEYS.issuperset(data):
        return None
    fid = data.get("id")
    if type(fid) is not str or _ID.fullmatch(fid) is None:
        return None
    suite = data.get("suite")
    if suite is not None and type(suite) is not str:
        return None
    for name in _OPTIONAL_TEXT:
        value = data.get(name)
        if value is not None and type(value) is not str:
            return None
    weight = data.get("weight", 1.0)
    if type(weight) is int:
        if not 0 < weight <= _MAX_EXACT_INT:
            return None
        weight = float(weight)
    elif type(weight) is not float or not 0.0 < weight < math.inf:
        return None
    tags = data.get("tags", [])
    if type(tags) is not list or (tags and any(type(t) is not str for t in tags)):
        return None
    messages = _messages(data.get("messages"), strings)
    if messages is None:
        return None
    shared = shared_sampling(data.get("sampling", {}), strings)
    if shared is None:
        return None
    sampling, sampling_json = shared
    raw_expect = data.get("expect")
    if raw_expect is None and "expect" in data:  # `expect: null`: the full path says what it is
        return None
    expect = shared_expect(raw_expect, strings)
    if expect is None:
        return None
    # Positional, in Fixture's field order (one per line of 100k-line files; matching 14
    # keyword arguments cost more than building the fixture).
    return Fixture(
        fid,  # id
        suite or default_suite,
        weight,
        messages,
        sampling,
        expect,
        display,  # file
        line,
        data.get("model"),
        data.get("label"),
        list(tags) if tags else empty_list(strings),
        data.get("skip"),
        data.get("xfail"),
        empty_list(strings),  # templates
        None,  # tools
        None,  # tool_choice
        None,  # _hash
        None,  # _messages_digest
        sampling_json,  # _sampling_json
    )


def _messages(raw: Any, strings: dict[Any, Any]) -> list[dict[str, Any]] | None:
    """Plain-text messages as `Message.as_request` gives them, or None for any other shape."""
    if type(raw) is not list or not raw:
        return None
    roles = _ROLES
    shared = strings.setdefault
    messages = []
    for msg in raw:
        if type(msg) is not dict or len(msg) != 2:
            return None
        content = msg.get("content")
        role = msg.get("role")
        if type(content) is not str or type(role) is not str:
            return None
        role = roles.get(role)  # the interned name, as `_build` stores it
        if role is None:
            return None
        if len(content) >= SHARED_MIN:
            content = shared(content, content)
        messages.append({"role": role, "content": content})
    return messages


def empty_list(strings: dict[Any, Any]) -> list[Any]:
    """The empty list that fixtures without tags or templates share (never mutated, as the
    other shared values: one list each would be 56 bytes a fixture)."""
    return strings.setdefault(("list", None), [])


def shared_sampling(raw: Any, strings: dict[Any, Any]) -> tuple[Sampling, str] | None:
    """(the load's shared Sampling of `sampling` as written, its canonical request JSON), or None
    when invalid."""
    if type(raw) is not dict:
        return None
    # repr tells apart every JSON value that validates differently (1, 1.0, True; 0.0, -0.0).
    written = ("sampling as written", repr(raw))
    known = strings.get(written)
    if known is None:
        try:
            sampling = Sampling.model_validate(raw)
        except Exception:  # noqa: BLE001 - whatever it is, the full path says it
            return None
        sampling_json = canonical_json(sampling.as_request_params())
        known = strings[written] = (
            strings.setdefault(("sampling", sampling_json), sampling),
            sampling_json,
        )
    return known


def shared_expect(raw: Any, strings: dict[Any, Any]) -> Expect | None:
    """The Expect of `expect` as written (None: not written; the load's shared empty one when it
    sets nothing), or None when invalid."""
    if raw is None:
        empty = strings.get(("expect", None))
        if empty is None:
            empty = strings[("expect", None)] = Expect()
        return empty
    if type(raw) is not dict:
        return None
    try:
        expect = Expect.model_validate(raw)
    except Exception:  # noqa: BLE001 - whatever it is, the full path says it
        return None
    if not expect.model_fields_set:
        expect = strings.setdefault(("expect", None), expect)
    return expect
