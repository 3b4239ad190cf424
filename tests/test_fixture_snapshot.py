"""Fixture snapshots (`model.fixture_snapshot`): a JSONL fixture file read from its snapshot
gives the very fixtures a parse gives (every field, the content keys); a changed file, a damaged
snapshot or a file the fast path does not take is parsed; a file in error keeps nothing."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
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


def test_stored_messages_are_read_when_asked_for(tmp_path: Path) -> None:
    """A fixture read from a snapshot holds no messages: each read reads the snapshot's file
    (still the file it loaded from when a newer one replaced it); a value set is held."""
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    parsed = load_fixtures(["fixtures"], root=root)
    load_fixtures(["fixtures"], root=root, cache_dir=cache)
    stored = load_fixtures(["fixtures"], root=root, cache_dir=cache)
    assert [fx.messages for fx in stored] == [fx.messages for fx in parsed]
    a = stored[0]
    assert a.messages == a.messages and a.messages is not a.messages  # read, not held
    assert a.request_body()["messages"] == parsed[0].messages
    for twin in (copy.copy(a), pickle.loads(pickle.dumps(a))):
        assert _fields([twin]) == _fields([parsed[0]])
    (snapshot,) = _snapshots(cache)
    snapshot.unlink()  # pruned by another run: what was loaded reads what it loaded
    assert [fx.messages for fx in stored] == [fx.messages for fx in parsed]
    a.messages = [{"role": "user", "content": "set"}]
    assert a.messages is a.messages and a.messages[0]["content"] == "set"
    assert stored[1].messages == parsed[1].messages


def test_damaged_stored_messages_are_a_clear_error(tmp_path: Path) -> None:
    """Messages are read after the load: damaged ones stop the run with an error naming the
    snapshot, which is removed so that the next load parses the file again."""
    root, cache = _project(tmp_path, LINES), tmp_path / "cache"
    parsed = _load(root, None)
    _load(root, cache)
    (snapshot,) = _snapshots(cache)
    loaded = load_fixtures(["fixtures"], root=root, cache_dir=cache)
    start = loaded[0]._stored._offsets[loaded[0]._at]  # where the first one's messages are
    with snapshot.open("r+b") as fh:  # (in place: the file the fixtures read)
        fh.seek(start)
        fh.write(b"\x00")  # no marshal type code
    assert loaded[1].messages == LINES[1]["messages"]  # the others read as stored
    with pytest.raises(ConfigError, match=r"fixture snapshot is damaged \(fixture 1 of the file\)"):
        loaded[0].messages  # noqa: B018
    assert _snapshots(cache) == []
    assert _load(root, cache) == parsed


@pytest.mark.parametrize("cached", [False, True])
def test_a_conversation_that_shows_a_reply_is_known_without_reading_it(
    tmp_path: Path, cached: bool
) -> None:
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
             {"role": "user", "content": "q2"}]  # fmt: skip
    lines = [*LINES, {"id": "t", "messages": turns}, {"id": "u", "messages": turns[1:]}]
    root, cache = _project(tmp_path, lines), tmp_path / "cache"
    load_fixtures(["fixtures"], root=root, cache_dir=cache if cached else None)
    loaded = load_fixtures(["fixtures"], root=root, cache_dir=cache if cached else None)
    assert [fx.may_show_replies for fx in loaded] == [False, False, False, True, False]
