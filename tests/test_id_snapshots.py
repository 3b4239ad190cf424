"""Token-id snapshots (`tokenization.id_snapshots`): a run that asks for exactly the
conversations an earlier run asked for reads their ids from one file, identical to the token
cache's; any other request, or a damaged file, goes to the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from costguard.text.tokenization import TokenCountCache, encode_chat_cached, id_snapshots
from costguard.text.tokenization.id_snapshots import IdSnapshots, snapshot_key
from tests.test_tokenize_parallel import conversations, tokenizer  # noqa: F401 (fixture)


def _ids(arrays: list[Any]) -> list[list[int]]:
    return [a.tolist() for a in arrays]


def _files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "token-ids").glob("*" + id_snapshots.SUFFIX))


def _encode(tok: Any, convs: list[Any], cache_dir: Path) -> list[Any]:
    with TokenCountCache(cache_dir) as cache:
        return encode_chat_cached(tok, convs, cache, compact=True)


def _no_cache_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read the token cache although a snapshot of the set exists")

    monkeypatch.setattr(TokenCountCache, "get_many", refuse)


def test_the_same_set_is_read_from_its_snapshot(
    tokenizer: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    convs = conversations(200) + conversations(30)  # duplicates share one array
    expected = [tokenizer.encode_chat(c) for c in convs]
    first = _encode(tokenizer, convs, tmp_path)
    assert _ids(first) == expected and len(_files(tmp_path)) == 1
    with monkeypatch.context() as m:
        _no_cache_reads(m)
        again = _encode(tokenizer, convs, tmp_path)
    assert _ids(again) == expected
    assert all(a.dtype == np.uint32 and not a.flags.writeable for a in again)
    assert again[0] is again[200]  # identical conversations: one view, as the cache gives


@pytest.mark.parametrize(
    "other",
    [
        lambda convs: convs[::-1],  # another order
        lambda convs: convs[:-1],  # a subset
        lambda convs: [*convs, [{"role": "user", "content": "new"}]],  # one more
    ],
)
def test_another_set_reads_the_cache(
    tokenizer: Any,  # noqa: F811
    tmp_path: Path,
    other: Any,
) -> None:
    convs = conversations(50)
    _encode(tokenizer, convs, tmp_path)
    changed = other(convs)
    assert _ids(_encode(tokenizer, changed, tmp_path)) == [
        tokenizer.encode_chat(c) for c in changed
    ]
    assert len(_files(tmp_path)) == 2


def test_the_key_names_the_tokenizer_and_the_order() -> None:
    keys = ["a" * 64, "b" * 64]
    assert snapshot_key("fp1", keys) != snapshot_key("fp2", keys)
    assert snapshot_key("fp1", keys) != snapshot_key("fp1", keys[::-1])
    assert snapshot_key("fp1", keys) != snapshot_key("fp1", keys[:1])


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) - 3],  # cut inside the ids
        lambda b: b[:40],  # cut inside the header
        lambda b: b"",
        lambda b: b[:16] + b"0" * 64 + b[80:],  # another key
        lambda b: b[:80] + (10**9).to_bytes(8, "little") + b[88:],  # a wrong count
        lambda b: b[:96] + (7).to_bytes(8, "little") + b[104:],  # offsets not from 0
    ],
)
def test_a_damaged_snapshot_is_a_miss(
    tokenizer: Any,  # noqa: F811
    tmp_path: Path,
    damage: Any,
) -> None:
    convs = conversations(40)
    expected = _ids(_encode(tokenizer, convs, tmp_path))
    (path,) = _files(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    assert _ids(_encode(tokenizer, convs, tmp_path)) == expected


def test_out_of_range_indices_are_a_miss(tmp_path: Path) -> None:
    store = IdSnapshots(tmp_path)
    arrays = [np.array([1, 2], np.uint32), np.array([3], np.uint32)]
    store.save("k" * 64, ["x", "y"], arrays)
    assert _ids(store.load("k" * 64, 2) or []) == [[1, 2], [3]]
    path = next(tmp_path.glob("*.ids"))
    data = bytearray(path.read_bytes())
    at = 16 + 64 + 16 + 8 * 3  # the first fixture's index
    data[at : at + 4] = (9).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert store.load("k" * 64, 2) is None


def test_at_most_keep_snapshots_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(id_snapshots, "KEEP", 2)
    store = IdSnapshots(tmp_path)
    for c in "abc":
        store.save(c * 64, ["x"], [np.array([1], np.uint32)])
    assert len(list(tmp_path.glob("*.ids"))) == 2


def _rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_pages_read_are_handed_back(tmp_path: Path) -> None:
    """The snapshot is mapped: the pages read count towards this process until `release_pages`,
    and the ids read the same afterwards."""
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 2**32, 4096, dtype=np.uint32) for _ in range(1024)]  # 16 MB
    keys = [f"k{i}" for i in range(len(arrays))]
    store = IdSnapshots(tmp_path)
    store.save("a" * 64, keys, arrays)
    loaded = store.load("a" * 64, len(keys))
    assert loaded is not None
    before = _rss_file_kb()
    assert sum(int(a.sum()) for a in loaded) == sum(int(a.sum()) for a in arrays)  # all read
    read = _rss_file_kb()
    assert read - before > 12_000
    id_snapshots.release_pages(loaded[5])  # any view of the file hands back all of it
    assert read - _rss_file_kb() > 12_000
    assert _ids(loaded) == _ids(arrays)
    id_snapshots.release_pages(arrays[0])  # not from a snapshot: nothing
    id_snapshots.release_pages([1, 2, 3])
