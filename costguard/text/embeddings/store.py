"""`EmbeddingCache`: float32 vectors on disk keyed by (model id, sha256(text)), in immutable
shards published atomically; a bad shard is dropped with a warning, never raised."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costguard.text.embeddings.shards import (
    KEY_BYTES,
    SHARD_SUFFIX,
    ModelRows,
    NewerShardError,
    _np,
    read_shard,
    write_shard,
)

CACHE_SUBDIR = Path(".costguard") / "cache" / "embeddings"


_STALE_TMP_SECONDS = 3600


class EmbeddingCacheWarning(RuntimeWarning):
    """The on-disk embedding cache had a problem it recovered from (corrupt shard, unwritable dir)."""


def text_key(text: str) -> bytes:
    """The 32-byte cache key of `text` (sha256 of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _text_keys(texts: Sequence[str]) -> list[bytes]:
    sha = hashlib.sha256
    return [sha(t.encode("utf-8", "surrogatepass")).digest() for t in texts]


def default_cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """`<root>/.costguard/cache/embeddings` (root defaults to the current directory)."""
    return Path(root if root is not None else os.getcwd()) / CACHE_SUBDIR


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
        self._stores: dict[str, ModelRows] = {}
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
            if not isinstance(k, bytes) or len(k) != KEY_BYTES:
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
        return sum(1 for p in path.iterdir() if p.name.endswith(SHARD_SUFFIX))

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
                    if p.suffix in (SHARD_SUFFIX, ".tmp"):
                        with contextlib.suppress(OSError):
                            p.unlink()

    # ---------------------------------------------------------------- internals

    def _model_dir(self, model_id: str) -> Path | None:
        if self.directory is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:80] or "model"
        digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:10]
        return self.directory / f"{safe}-{digest}"

    def _store(self, model_id: str) -> ModelRows:
        store = self._stores.get(model_id)
        if store is None:
            if not isinstance(model_id, str) or not model_id:
                raise ValueError("model_id must be a non-empty string")
            store = self._stores[model_id] = ModelRows(self._model_dir(model_id))
        if not store.loaded:
            store.loaded = True
            if store.path is not None:
                self._refresh(store, model_id)
        return store

    def _warn(self, message: str) -> None:
        warnings.warn(f"costguard embedding cache: {message}", EmbeddingCacheWarning, stacklevel=4)

    def _disk_failed(self, store: ModelRows, what: str, exc: BaseException) -> None:
        if not self._disk_warned:
            self._disk_warned = True
            self._warn(
                f"cannot {what} {store.path} ({exc}); embeddings are kept in memory for this run "
                "only and will be recomputed next time. Fix the permissions or point the cache at "
                "a writable directory."
            )

    def _refresh(self, store: ModelRows, model_id: str) -> bool:
        """Load shards written since the last look (by us or other processes). True if any."""
        path = store.path
        assert path is not None
        found: list[tuple[str, list[bytes], Any]] = []
        for _attempt in range(3):
            try:
                names = sorted(
                    e.name
                    for e in os.scandir(path)
                    if e.name.endswith(SHARD_SUFFIX) and not e.name.startswith(".")
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
                    keys, vecs = read_shard(path / name, model_id, dim)
                except FileNotFoundError:
                    vanished = True  # merged and deleted by another process: rescan
                    continue
                except NewerShardError:
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

    def _write_shard(
        self, store: ModelRows, model_id: str, keys: list[bytes], vecs: Any
    ) -> str | None:
        path = store.path
        assert path is not None
        try:
            if path.exists() and not path.is_dir():
                self._warn(f"{path} is a file, not a directory; replacing it")
                path.unlink()
            path.mkdir(parents=True, exist_ok=True)
            return write_shard(path, model_id, keys, vecs)
        except OSError as exc:
            self._disk_failed(store, "write to", exc)
            return None

    def _compact(self, store: ModelRows, model_id: str, *, everything: bool = False) -> None:
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
