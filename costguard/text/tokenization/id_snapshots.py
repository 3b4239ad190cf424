"""Token-id snapshots: the prompt token ids of one whole fixture set, for one tokenizer, in one
file.

The token cache (SQLite, one row per conversation) serves any mix of old and new prompts; reading
100k rows back costs about a second. When a run asks for exactly the conversations an earlier run
asked for (same messages digests in the same order, same tokenizer fingerprint), this file
answers instead: the distinct conversations' ids as one uint32 array in the file, each fixture a
zero-copy view of it (identical conversations share one view, as the cache's arrays do).

Layout (little-endian): magic, the key (64 hex characters), the number of distinct
conversations D and of fixtures N, D+1 uint64 offsets into the ids, N uint32 indices (each
fixture's conversation), then the uint32 ids. Checked when loaded (magic, key, sizes,
offsets): a damaged or foreign file is a miss, never an error. The `KEEP` most recently used are
kept in `<cache_dir>/token-ids/`.

The file is mapped, not read: its pages come in as the prefix-cache simulation reads them, and
`release_pages` lets the simulation hand back those it has read (a million prompts' ids are
gigabytes), so they never all count towards the run's memory at once.
"""

from __future__ import annotations

import hashlib
import itertools
import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costguard.model.files import keep_cache_file

MAGIC = b"costguard-ids-1\n"
KEEP = 4
SUFFIX = ".ids"
_HEADER = len(MAGIC) + 64 + 16


def snapshot_key(fingerprint: str, keys: Sequence[str]) -> str:
    """The snapshot key of the conversations `keys` (messages digests, in order) under the
    tokenizer `fingerprint`."""
    digest = hashlib.sha256(f"{fingerprint}\0".encode())
    digest.update("\n".join(keys).encode())
    return digest.hexdigest()


def release_pages(ids: Any) -> None:
    """Hand back the pages of the snapshot file that `ids` (a fixture's ids, as `load` gives
    them) is a view of: they are read again from the file if asked for again. Nothing for ids
    that are not from a snapshot."""
    base = ids
    while base is not None and not isinstance(base, mmap.mmap):  # array -> ... -> the mapping
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or not supported here: they stay
            pass


class IdSnapshots:
    """The token-id snapshots of one cache directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key[:40]}{SUFFIX}"

    def load(self, key: str, count: int) -> list[Any] | None:
        """Each fixture's ids (read-only uint32 views), or None (no usable snapshot)."""
        import numpy as np

        path = self._path(key)
        try:
            with path.open("rb") as fh:
                # (the mapping outlives the file: a newer snapshot replaces it, never changes it)
                data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            if len(data) < _HEADER or data[: len(MAGIC)] != MAGIC:
                return None
            at = len(MAGIC)
            if data[at : at + 64] != key.encode():
                return None
            at += 64
            distinct = int.from_bytes(data[at : at + 8], "little")
            fixtures = int.from_bytes(data[at + 8 : at + 16], "little")
            at += 16
            if fixtures != count or distinct > count:
                return None
            size = _HEADER + 8 * (distinct + 1) + 4 * fixtures
            if len(data) < size or (len(data) - size) % 4:
                return None
            offsets = np.frombuffer(data, "<u8", distinct + 1, at)
            index = np.frombuffer(data, "<u4", fixtures, at + 8 * (distinct + 1))
            ids = np.frombuffer(data, "<u4", (len(data) - size) // 4, size)
            if (
                offsets[0] != 0
                or offsets[-1] != len(ids)
                or (distinct and bool((np.diff(offsets.astype(np.int64)) < 0).any()))
                or (fixtures and int(index.max()) >= distinct)
            ):
                return None
            ids = ids.astype(np.uint32, copy=False)
            bounds = offsets.tolist()
            views = [ids[bounds[d] : bounds[d + 1]] for d in range(distinct)]
            os.utime(path)  # most recently used
        except (OSError, ValueError):
            return None
        return [views[d] for d in index.tolist()]

    def save(self, key: str, keys: Sequence[str], arrays: Sequence[Any]) -> None:
        """Keep `arrays` (each fixture's ids; conversations named by `keys`). Best effort: a
        cache that cannot be written is no error."""
        import numpy as np

        first: dict[str, int] = {}
        index = np.empty(len(keys), "<u4")
        distinct: list[Any] = []
        for i, k in enumerate(keys):
            d = first.get(k)
            if d is None:
                d = first[k] = len(distinct)
                distinct.append(arrays[i])
            index[i] = d
        lengths = np.fromiter((len(a) for a in distinct), np.int64, len(distinct))
        offsets = np.zeros(len(distinct) + 1, "<u8")
        np.cumsum(lengths, out=offsets[1:])
        header = (
            MAGIC
            + key.encode()
            + len(distinct).to_bytes(8, "little")
            + len(keys).to_bytes(8, "little")
        )
        # Each array written as it is (no copy of the whole set: a run that writes a snapshot
        # holds its ids already).
        pieces = (np.ascontiguousarray(a, "<u4").data for a in distinct)
        keep_cache_file(
            self._path(key), itertools.chain([header, offsets.data, index.data], pieces), KEEP
        )
