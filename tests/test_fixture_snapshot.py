"""Fixture snapshots (`model.fixture_snapshot`): a JSONL fixture file read from its snapshot
gives the very fixtures a parse gives (every field, the content keys); a changed file, a damaged
snapshot or a file the fast path does not take is parsed; a file in error keeps nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costguard.errors import ConfigError
from costguard.model import fixture_snapshot, fixtures
from costguard.model.fixtures import load_fixtures
from tests.test_fixture_fast_path import FIELDS, FIXTURE


def _fields(loaded: list[fixtures.Fixture]) -> list[Any]:
    out = []
    for fx in loaded:
        try:
            keys: Any = (fx.messages_digest, fx.content_hash, fx.sampling_json)
        except UnicodeEncodeError:
            keys = "unencodable"
        out.append(([(n, repr(getattr(fx, n)), type(getattr(fx, n))) for n in FIELDS], keys))
    return out


def _load(root: Path, cache: Path | None, hashes: dict[str, str] | None = None) -> Any:
    try:
        return _fields(load_fixtures(["fixtures"], root=root, cache_dir=cache, hashes=hashes))
    except ConfigError as exc:
        return ("error", str(exc))


def _no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed although a snapshot of these bytes exists")

    monkeypatch.setattr(fixtures, "json_lines", refuse)


def _snapshots(cache: Path) -> list[Path]:
    return sorted((cache / "fixtures").glob("*" + fixture_snapshot.SUFFIX))


LINES = [
    {"id": "a", "messages": [{"role": "system", "content": "S" * 100}, {"role": "user", "content": "q é"}]},
    {"id": "b", "suite": "s", "weight": 2, "sampling": {"temperature": 0}, "expect": {"output_tokens": 5},
     "messages": [{"role": "system", "content": "S" * 100}, {"role": "user", "content": "r\u2028"}]},
    {"id": "c", "weight": 0.5, "sampling": {"temperature": 0.0}, "model": "m", "label": "l",
     "tags": ["x", "y"], "skip": "why", "expect": {}, "messages": [{"role": "user", "content": "t"}]},
]  # fmt: skip


def _project(tmp_path: Path, lines: list[dict[str, Any]], blank: bool = True) -> Path:
    (tmp_path / "fixtures").mkdir(exist_ok=True)
    text = "\n".join(json.dumps(line) for line in lines) + ("\n\n" if blank else "\n")
    (tmp_path / "fixtures" / "set.jsonl").write_text(text, "utf-8", "surrogatepass")
    return tmp_path


def test_a_snapshot_gives_the_parsed_fixtures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    parsed = _load(root, None)
    hashes: dict[str, str] = {}
    assert _load(root, cache, hashes) == parsed  # parsed, and kept
    (snapshot,) = _snapshots(cache)
    data = (root / "fixtures" / "set.jsonl").read_bytes()
    assert hashes == {
        str((root / "fixtures" / "set.jsonl").resolve()): hashlib.sha256(data).hexdigest()
    }
    with monkeypatch.context() as m:
        _no_parse(m)
        again: dict[str, str] = {}
        assert _load(root, cache, again) == parsed  # read from the snapshot
        assert again == hashes
        a, b, c = load_fixtures(["fixtures"], root=root, cache_dir=cache)
        assert a.messages[0]["content"] is b.messages[0]["content"]  # repeated texts stored once
        assert b.sampling is c.sampling and a.expect is c.expect  # shared as a parse shares
    assert _snapshots(cache) == [snapshot]


def test_an_edited_file_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    _load(root, cache)
    edited = [*LINES[:2], {**LINES[2], "weight": 3}]
    _project(tmp_path, edited)
    loaded = load_fixtures(["fixtures"], root=root, cache_dir=cache)
    assert loaded[2].weight == 3.0
    assert len(_snapshots(cache)) == 2
    # Back to the first content: its snapshot is still there and read.
    _project(tmp_path, LINES)
    with monkeypatch.context() as m:
        _no_parse(m)
        assert load_fixtures(["fixtures"], root=root, cache_dir=cache)[2].weight == 0.5


def test_an_edit_that_breaks_the_file_is_an_error_every_time(tmp_path: Path) -> None:
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    _load(root, cache)
    kept = _snapshots(cache)
    (root / "fixtures" / "set.jsonl").write_text(json.dumps(LINES[0]) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"set\.jsonl:2: invalid JSON"):
        load_fixtures(["fixtures"], root=root, cache_dir=cache)
    assert _snapshots(cache) == kept
    # Each line valid, the set not: the file may be kept, the set is refused on every load.
    (root / "fixtures" / "set.jsonl").write_text(json.dumps(LINES[0]) + "\n" + json.dumps(LINES[0]))
    for _ in range(2):
        with pytest.raises(ConfigError, match="duplicate fixture id 'a'"):
            load_fixtures(["fixtures"], root=root, cache_dir=cache)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # cut short
        lambda b: b[:8] + b"\x00" * (len(b) - 8),  # garbage after the length
        lambda b: b"",  # empty
        lambda b: (10**12).to_bytes(8, "little") + b[8:],  # a length past the end
    ],
)
def test_a_damaged_snapshot_is_a_miss(tmp_path: Path, damage: Any) -> None:
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    parsed = _load(root, cache)
    (snapshot,) = _snapshots(cache)
    snapshot.write_bytes(damage(snapshot.read_bytes()))
    assert _load(root, cache) == parsed


def test_a_snapshot_of_other_bytes_is_not_read(tmp_path: Path) -> None:
    """A snapshot names the content it holds: a file renamed to another content's name is a miss."""
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    _load(root, cache)
    (first,) = _snapshots(cache)
    _project(tmp_path, LINES[:1])
    parsed = _load(root, None)
    _load(root, cache)
    second = next(p for p in _snapshots(cache) if p != first)
    second.write_bytes(first.read_bytes())  # the three-fixture snapshot under the one-fixture name
    assert _load(root, cache) == parsed


def test_a_file_the_fast_path_does_not_take_keeps_no_snapshot(tmp_path: Path) -> None:
    templated = {"id": "t", "messages": [{"role": "user", "template": "t.j2"}], "vars": {}}
    root = _project(tmp_path, [*LINES, templated])
    (root / "fixtures" / "t.j2").write_text("hello")
    cache = tmp_path / "cache"
    parsed = _load(root, None)
    assert _load(root, cache) == parsed
    assert _snapshots(cache) == []


def test_at_most_keep_snapshots_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixture_snapshot, "KEEP", 2)
    cache = tmp_path / "cache"
    for weight in (1, 2, 3):
        _project(tmp_path, [{**LINES[0], "weight": weight}])
        _load(tmp_path, cache)
    assert len(_snapshots(cache)) == 2


def test_a_snapshot_spans_several_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixture_snapshot, "CHUNK", 2)
    lines = [{**LINES[i % 3], "id": f"f{i}"} for i in range(7)]
    root, cache = _project(tmp_path, lines), tmp_path / "cache"
    parsed = _load(root, None)
    assert _load(root, cache) == parsed
    with monkeypatch.context() as m:
        _no_parse(m)
        assert _load(root, cache) == parsed


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(FIXTURE, min_size=1, max_size=4))
def test_any_file_loads_the_same_through_its_snapshot(
    tmp_path_factory: pytest.TempPathFactory, lines: list[dict[str, Any]]
) -> None:
    for i, line in enumerate(lines):
        if isinstance(line.get("id"), str):
            line["id"] = f"{line['id']}{i}"  # distinct ids: every line is compared
    root = tmp_path_factory.mktemp("p")
    _project(root, lines)
    cache = root / "cache"
    parsed = _load(root, None)
    assert _load(root, cache) == parsed  # parsed (and kept, where it can be)
    assert _load(root, cache) == parsed  # read from the snapshot, where one was kept


def test_another_loader_does_not_read_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot is of one loader: its source files, Python and the format name it."""
    here = Path(fixture_snapshot.__file__).parent
    assert all((here / name).is_file() for name in fixture_snapshot.LOADER_FILES)
    assert {"fixture_fast.py", "fixtures.py", "jsonl.py"} <= set(fixture_snapshot.LOADER_FILES)
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    parsed = _load(root, cache)
    monkeypatch.setattr(fixture_snapshot, "_fingerprint", ["another loader"])
    with monkeypatch.context() as m:
        _no_parse(m)
        with pytest.raises(AssertionError, match="parsed although"):
            load_fixtures(["fixtures"], root=root, cache_dir=cache)
    assert _load(root, cache) == parsed
    assert len(_snapshots(cache)) == 2
