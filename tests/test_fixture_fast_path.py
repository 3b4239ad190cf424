"""The fast path of JSONL fixture loading (`model.fixture_fast`) against the full pydantic path:
for any line, the same Fixture (every field, the content keys) or the same error, never an
input the full path refuses; and line numbers follow `str.splitlines` as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costguard.errors import ConfigError
from costguard.model import fixture_fast, fixtures
from costguard.model.fixtures import load_fixture_file

FIELDS = (
    "id suite weight messages sampling expect file line model label tags skip xfail templates "
    "tools tool_choice"
).split()


def _load(path: Path, *, fast: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(fixtures, "fast_fixture", lambda *a, **k: None)
        try:
            loaded = load_fixture_file(path, display="f.jsonl")
        except ConfigError as exc:
            return ("error", str(exc))
    return [
        (
            [(name, repr(getattr(fx, name)), type(getattr(fx, name))) for name in FIELDS],
            _keys(fx),
        )
        for fx in loaded
    ]


def _keys(fx: fixtures.Fixture) -> Any:
    try:
        return (fx.messages_digest, fx.content_hash, fx.sampling_json)
    except UnicodeEncodeError as exc:  # a lone surrogate: the full path's key fails the same way
        return ("unencodable", str(exc))


TEXT = st.one_of(
    st.sampled_from(["", "hi", "x" * 70, "é\u2028ü", "\ud800", "a\nb", "line\r"]),
    st.text(max_size=12),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, -0.0, 0.5, 1e-300, 2.5, 2**53, 2**53 + 1, 10**30, 1e308]),
    TEXT,
)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", "robot"]), "content": TEXT}
    ),
    st.dictionaries(
        st.sampled_from(["role", "content", "name", "template", "tool_calls"]), SCALAR, max_size=3
    ),
    st.fixed_dictionaries(
        {"role": st.just("user"), "content": st.lists(st.fixed_dictionaries({"text": TEXT}))}
    ),
)
SAMPLING = st.dictionaries(
    st.sampled_from(["temperature", "top_p", "max_tokens", "seed", "stop", "bogus"]),
    SCALAR,
    max_size=3,
)
EXPECT = st.dictionaries(
    st.sampled_from(["output_tokens", "reference", "assertions"]),
    st.one_of(SCALAR, st.just([{"contains": "x"}]), st.just([{"regex": "("}])),
    max_size=2,
)
PLAIN = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool", "developer", "System"]),
        "content": TEXT,
    }
)
COMMON = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "a-1", "b:2/x", "c.d_e"]),
        "messages": st.lists(PLAIN, min_size=1),
    },
    optional={
        "suite": st.one_of(st.sampled_from(["s", ""]), SCALAR),
        "weight": st.one_of(st.sampled_from([1, 2, 0.5, 3.25]), SCALAR),
        "sampling": st.one_of(
            st.sampled_from([{}, {"temperature": 0}, {"temperature": 0.7, "max_tokens": 64}]),
            SAMPLING,
        ),
        "expect": st.one_of(st.sampled_from([{}, {"output_tokens": 12}]), EXPECT),
        "model": st.one_of(st.just("m"), SCALAR),
        "label": st.one_of(st.just("l"), st.none()),
        "tags": st.one_of(st.lists(TEXT, max_size=2), st.lists(SCALAR, max_size=2)),
        "skip": st.one_of(st.just("why"), st.none()),
        "xfail": st.none(),
    },
)
HOSTILE = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["a", "a-1", "bad id", "x\n", "-a"]), SCALAR)},
    optional={
        "suite": SCALAR,
        "weight": SCALAR,
        "messages": st.one_of(st.lists(MESSAGE, max_size=3), SCALAR),
        "sampling": st.one_of(SAMPLING, SCALAR),
        "expect": st.one_of(EXPECT, SCALAR),
        "model": SCALAR,
        "tags": st.one_of(st.lists(TEXT, max_size=2), st.lists(SCALAR, max_size=2), SCALAR),
        "vars": st.just({}),
        "tools": st.just([]),
        "extra": SCALAR,
    },
)
FIXTURE = st.one_of(COMMON, HOSTILE)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(FIXTURE, min_size=1, max_size=3))
def test_the_fast_path_loads_what_the_full_path_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[dict[str, Any]]
) -> None:
    for i, line in enumerate(lines):
        if isinstance(line.get("id"), str) and line["id"] == "a":
            line["id"] = f"a{i}"  # mostly distinct ids, so later lines are compared too
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", "utf-8", "surrogatepass")
    assert _load(path, fast=True, monkeypatch=monkeypatch) == _load(
        path, fast=False, monkeypatch=monkeypatch
    )


def test_common_fixtures_take_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.jsonl"
    line = {
        "id": "a",
        "suite": "s",
        "weight": 2,
        "messages": [{"role": "system", "content": "S" * 100}, {"role": "user", "content": "q"}],
        "sampling": {"temperature": 0},
        "expect": {"output_tokens": 5},
    }
    path.write_text(json.dumps(line) + "\n" + json.dumps({**line, "id": "b"}) + "\n")
    monkeypatch.setattr(fixtures, "validate_json_line", None)  # the full path is not taken
    a, b = load_fixture_file(path)
    assert a.weight == 2.0 and isinstance(a.weight, float)
    assert a.messages[0]["content"] is b.messages[0]["content"]  # repeated texts stored once
    assert a.sampling is b.sampling and a.sampling.temperature == 0.0
    assert a.sampling_json == '{"temperature":0.0}'
    assert fixture_fast.SHARED_MIN <= 100


@pytest.mark.parametrize(
    "text",
    [
        '{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n\n  \n{"id": 1}\n',
        '\ufeff{"id": "a", "messages": [{"role": "user", "content": "x"}]}\r\n{"id": 1}',
        '{"id": "a", "messages": [{"role": "user", "content": "x"}]}\r{"id": 1}',
        '{"id": "a", "messages": [{"role": "user", "content": "x\u2028y"}]}\n',
        '{"id": "a", "messages": [{"role": "user", "content": "x\x85y"}]}\n',
        "[1]\n",
    ],
)
def test_line_numbers_follow_str_splitlines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(text, "utf-8", newline="")
    with pytest.raises(ConfigError) as err:
        load_fixture_file(path, display="f.jsonl")
    lines = text.removeprefix("\ufeff").splitlines()
    bad = next(
        n
        for n, line in enumerate(lines, start=1)
        if line.strip() and not (line.startswith('{"id": "a"') and line.endswith("}"))
    )
    assert err.value.line == bad


def test_a_file_that_is_not_utf8_is_reported_as_before(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    good = b'{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n'
    path.write_bytes(good + good.replace(b'"a"', b'"b"') + b'{"id": "c\xff"}\n')
    with pytest.raises(ConfigError) as err:
        load_fixture_file(path, display="f.jsonl")
    assert err.value.line == 3 and "not valid UTF-8 (byte 0xff at offset" in err.value.message


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.sampled_from(["a", "é", "\n", "\r", "\r\n", "\u2028", "\x85", "\x0b", " ", "\ufeff"])
    ),
    st.booleans(),
    st.sampled_from([1, 2, 3, 7, 1 << 22]),
)
def test_text_lines_are_read_texts_lines(
    tmp_path: Path, parts: list[str], bom: bool, block: int
) -> None:
    from costguard.model.jsonl import text_lines
    from costguard.model.yamlio import read_text

    path = tmp_path / "t.txt"
    path.write_bytes((("\ufeff" if bom else "") + "".join(parts)).encode())
    assert list(text_lines(path, block=block)) == list(
        enumerate(read_text(path).splitlines(), start=1)
    )
