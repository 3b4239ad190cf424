"""The on-disk shard format of the embedding cache, and the in-memory rows shards load into.

A shard is one immutable file: a JSON header (format, model id, count, dim, checksums) saved as a
uint8 array, a (n, 32) uint8 array of text digests and a (n, dim) float32 matrix, each written with
`np.save`; it is written to a temporary file and published with `os.replace`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

FORMAT = 1

KEY_BYTES = 32

SHARD_SUFFIX = ".shard"


class NewerShardError(Exception):
    """A shard written by a newer costguard (format we cannot read, but must not delete)."""


def _np() -> Any:
    import numpy

    return numpy


class ModelRows:
    """The in-memory view of one model's cache directory: a growable matrix plus a key index."""

    __slots__ = ("path", "index", "buf", "n", "shards", "bad", "loaded")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.index: dict[bytes, int] = {}  # key -> row of buf
        self.buf: Any = None  # (capacity, dim) float32; rows [0, n) are used
        self.n = 0
        self.shards: dict[str, list[bytes]] = {}  # shard file name -> its keys
        self.bad: set[str] = set()  # corrupt shards we could not delete
        self.loaded = False

    @property
    def dim(self) -> int | None:
        return None if self.buf is None else int(self.buf.shape[1])

    def append(self, keys: list[bytes], vecs: Any) -> None:
        """Add rows for keys not yet present (first writer wins)."""
        np = _np()
        index = self.index
        if len(set(keys)) != len(keys) or any(k in index for k in keys):
            fresh: dict[bytes, int] = {}
            for j, k in enumerate(keys):
                if k not in index and k not in fresh:
                    fresh[k] = j
            keys = list(fresh)
            vecs = vecs[list(fresh.values())]
        if not keys:
            return
        m = len(keys)
        if self.buf is None and vecs.flags.c_contiguous:
            self.buf = vecs  # adopt the shard's array as-is (no copy)
        else:
            if self.buf is None:
                self.buf = np.empty((max(m, 64), vecs.shape[1]), dtype=np.float32)
            elif self.n + m > self.buf.shape[0]:
                grown = np.empty(
                    (max(self.n + m, 2 * self.buf.shape[0]), self.buf.shape[1]), np.float32
                )
                grown[: self.n] = self.buf[: self.n]
                self.buf = grown
            if not self.buf.flags.writeable:
                self.buf = self.buf.copy()
            self.buf[self.n : self.n + m] = vecs
        for j, k in enumerate(keys, self.n):
            index[k] = j
        self.n += m


def checksums(keys: Any, vecs: Any) -> tuple[int, int]:
    """CRC32 of the keys and a wrap-around sum of the vectors' 32-bit words (fast, no copy)."""
    np = _np()
    words = vecs.reshape(-1).view(np.uint32)
    return zlib.crc32(keys), int(words.sum(dtype=np.uint64))


def read_shard(path: Path, model_id: str, dim: int | None) -> tuple[list[bytes], Any]:
    np = _np()
    with open(path, "rb") as f:
        header = np.load(f, allow_pickle=False)
        if header.dtype != np.uint8 or header.ndim != 1:
            raise ValueError("bad header")
        meta = json.loads(header.tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("format"), int):
            raise ValueError("no shard format in the header")
        if meta["format"] > FORMAT:
            raise NewerShardError(meta["format"])
        if meta["format"] != FORMAT:
            raise ValueError(f"old shard format {meta['format']}")
        if meta.get("model_id") != model_id:
            raise ValueError(f"shard belongs to model {meta.get('model_id')!r}")
        keys = np.load(f, allow_pickle=False)
        vecs = np.load(f, allow_pickle=False)
        if f.read(1):
            raise ValueError("trailing bytes")
    n, d = int(meta["n"]), int(meta["dim"])
    if keys.dtype != np.uint8 or keys.shape != (n, KEY_BYTES):
        raise ValueError(f"key array has shape {keys.shape}, expected ({n}, {KEY_BYTES})")
    if vecs.dtype != np.float32 or vecs.shape != (n, d) or d < 1:
        raise ValueError(f"vector array has shape {vecs.shape}, expected ({n}, {d})")
    if dim is not None and d != dim:
        raise ValueError(f"{d}-dim vectors, the other shards have {dim}")
    if not (keys.flags.c_contiguous and vecs.flags.c_contiguous):
        raise ValueError("arrays are not C-contiguous")
    if list(checksums(keys, vecs)) != meta["checksums"]:
        raise ValueError("checksum mismatch")
    raw = keys.tobytes()
    return [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)], vecs


def write_shard(path: Path, model_id: str, keys: list[bytes], vecs: Any) -> str:
    """Publish a shard of `keys` and their vectors in the directory `path` (which must exist);
    returns its file name. Raises OSError, leaving no temporary file behind."""
    np = _np()
    karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    meta = {
        "format": FORMAT,
        "model_id": model_id,
        "n": len(keys),
        "dim": int(vecs.shape[1]),
        "checksums": list(checksums(karr, vecs)),
    }
    header = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, header)
            np.save(f, karr)
            np.save(f, vecs)
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o644)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{SHARD_SUFFIX}"
        os.replace(tmp, path / name)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return name
