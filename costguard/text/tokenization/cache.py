"""Prompt token ids kept in SQLite, keyed by (tokenizer fingerprint, hash of the messages),
so a re-run only tokenizes what changed; `encode_chat_cached` goes through it."""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import json
import os
import sqlite3
import sys
import threading
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from costguard.text.tokenization.chat_tokenizer import ChatTokenizer, logger
from costguard.text.tokenization.id_snapshots import IdSnapshots, snapshot_key
from costguard.text.tokenization.templates import _one_line
from costguard.text.tokenization.workers import (
    encode_packed,
    pack_ids,
    tokenizer_workers,
    worker_signals,
)


def messages_key(messages: Any, tools: Any = None) -> str:
    """sha256 of the canonical JSON of a conversation (and its tools, if any); for a fixture's
    messages without tools this is `Fixture.messages_digest`, derived once per fixture."""
    payload = messages if tools is None else {"messages": messages, "tools": tools}
    canonical = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _from_blob(blob: bytes) -> Any:
    """Stored ids as a read-only numpy uint32 array over the blob (no copy on little-endian)."""
    import numpy as np

    return np.frombuffer(blob, dtype="<u4").astype(np.uint32, copy=False)


def _as_compact(ids: Sequence[int]) -> Any:
    import numpy as np

    return np.asarray(ids, dtype=np.uint32)


def _unpack(blob: bytes) -> list[int]:
    arr = array("I")
    arr.frombytes(blob)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tolist()


_SQLITE_CORRUPT = 11


_SQLITE_NOTADB = 26


_SCHEMA_VERSION = 1


_BATCH = 500


_WRITERS: dict[Path, int] = {}  # background writers (process ids) by file, at most one each
_WRITERS_LOCK = threading.Lock()


def _reap_writer(path: Path) -> None:
    pid = _WRITERS.pop(path, None)
    if pid is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _reap_finished_writers() -> None:
    """Reap the writers that are done (a long-lived process, e.g. pytest, keeps no zombies)."""
    for path, pid in list(_WRITERS.items()):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                continue  # still writing
        del _WRITERS[path]


def _reap_all_writers() -> None:
    with _WRITERS_LOCK:
        for path in list(_WRITERS):
            _reap_writer(path)


class _UnknownSchema(sqlite3.DatabaseError):
    """The file is a database, but not one this version of costguard wrote."""


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, _UnknownSchema):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


class TokenCountCache:
    """Prompt token ids on disk, keyed by (tokenizer fingerprint, messages key).

    SQLite in WAL mode with a busy timeout, so several processes (pytest-xdist workers) can
    read and write at once. A corrupt file is reported with a warning and rebuilt empty; any
    other failure degrades to cache misses (the cache is never a reason for a run to fail).
    """

    def __init__(
        self, directory: str | Path, *, filename: str = "tokens.sqlite", timeout: float = 30.0
    ):
        self.directory = Path(directory)
        self.path = self.directory / filename
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.RLock()
        self._disabled = False
        with _WRITERS_LOCK:
            _reap_writer(self.path)  # read what an earlier run of this process wrote

    # -- connection management ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # after fork: never reuse the parent's connection
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise _UnknownSchema(f"unknown cache schema version {version}")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS prompt_tokens ("
                " fp TEXT NOT NULL, key TEXT NOT NULL, ids BLOB NOT NULL,"
                " PRIMARY KEY (fp, key)) WITHOUT ROWID"
            )
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _file_ok(self) -> bool:
        try:
            probe = sqlite3.connect(self.path, timeout=self.timeout)
            try:
                probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return probe.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            finally:
                probe.close()
        except sqlite3.DatabaseError:
            return False

    def _rebuild(self, exc: BaseException) -> None:
        self.close()
        # Another process may have rebuilt it already: only remove a file that is still bad.
        if not isinstance(exc, _UnknownSchema) and self._file_ok():
            return
        logger.warning(
            "token cache %s is corrupt (%s); rebuilding it empty", self.path, _one_line(exc)
        )
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except OSError:
                pass

    def _run(self, op: Any, default: Any) -> Any:
        """Run op(conn); rebuild once on corruption; on any other problem warn and give up."""
        if self._disabled:
            return default
        with self._lock:
            for attempt in (1, 2):
                try:
                    return op(self._connect())
                except sqlite3.DatabaseError as exc:
                    if attempt == 1 and _is_corruption(exc):
                        self._rebuild(exc)
                        continue
                    logger.warning(
                        "token cache %s unavailable (%s); continuing without it",
                        self.path,
                        _one_line(exc),
                    )
                    self._disabled = True
                    self.close()
                    return default
                except OSError as exc:
                    logger.warning(
                        "token cache %s unavailable (%s); continuing without it",
                        self.path,
                        _one_line(exc),
                    )
                    self._disabled = True
                    return default
            return default

    def put_packed_in_background(
        self, fingerprint: str, items: Sequence[tuple[str, bytes]]
    ) -> None:
        """`put_packed` in a forked process of its own, so a cold run goes on projecting on one
        core while the other writes (a thread would need the GIL for every row). Any
        TokenCountCache of the same file made later in this process waits for the write first,
        and so does this process's exit. Without fork (or a second core) it writes here."""
        if not items:
            return
        if tokenizer_workers() < 2:
            self.put_packed(fingerprint, items)
            return
        self.close()  # the child opens its own connection: none crosses the fork
        with _WRITERS_LOCK:
            _reap_writer(self.path)
            _reap_finished_writers()
            try:
                pid = os.fork()
            except OSError:
                pid = None
            if pid == 0:  # the child: write, leave (no exit handlers, no inherited connection)
                code = 1
                try:
                    worker_signals()
                    gc.disable()  # a collection would touch (and so copy) every shared page
                    self.put_packed(fingerprint, items)
                    code = 0
                finally:
                    os._exit(code)
            if pid is None:
                self.put_packed(fingerprint, items)
                return
            if not _WRITERS:
                atexit.register(_reap_all_writers)
            _WRITERS[self.path] = pid

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                try:
                    self._conn.close()
                except sqlite3.Error:
                    pass
            self._conn = None

    def __enter__(self) -> TokenCountCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations --------------------------------------------------------------------------
    def get_many(
        self, fingerprint: str, keys: Iterable[str], *, raw: bool = False
    ) -> dict[str, Any]:
        """{key: token ids} for the keys that are cached (missing keys are simply absent);
        `raw=True` gives the stored bytes (little-endian uint32) instead of lists."""
        # In key order: each B-tree page is read once, not once per random probe (2-3x faster).
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        unpack = bytes if raw else _unpack

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for i in range(0, len(wanted), _BATCH):
                chunk = wanted[i : i + _BATCH]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, ids FROM prompt_tokens WHERE fp = ? AND key IN ({marks})",
                    [fingerprint, *chunk],
                )
                for key, blob in rows:
                    found[key] = unpack(blob)
            return found

        return self._run(op, {})

    def put_many(
        self,
        fingerprint: str,
        items: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]],
    ) -> None:
        """Store token ids for many keys in one transaction."""
        pairs = items.items() if isinstance(items, Mapping) else items
        self.put_packed(fingerprint, [(key, pack_ids(ids)) for key, ids in pairs])

    def put_packed(self, fingerprint: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Store packed token ids (little-endian uint32 bytes) in one transaction, in key order:
        inserting sorted keys fills each B-tree page once instead of rewriting pages at random,
        which keeps the bytes written (WAL + checkpoint) near twice the file's growth."""
        if not items:
            return
        rows = sorted((fingerprint, key, blob) for key, blob in items)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO prompt_tokens (fp, key, ids) VALUES (?, ?, ?)", rows
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        self._run(op, None)

    def __len__(self) -> int:
        return self._run(lambda c: c.execute("SELECT count(*) FROM prompt_tokens").fetchone()[0], 0)


def encode_chat_cached(
    tokenizer: ChatTokenizer,
    messages_list: Sequence[list[dict]],
    cache: TokenCountCache | None,
    *,
    tools_list: Sequence[list | None] | None = None,
    compact: bool = False,
    keys: Sequence[str] | None = None,
    background_write: bool = False,
) -> list[Sequence[int]]:
    """Prompt token ids for many conversations: cached ones from `cache`, the misses tokenized
    in one batch and stored. Approximate tokenizers bypass the cache (they cost nothing).

    `compact=True` returns read-only numpy uint32 arrays (4 bytes a token, zero-copy views of
    the cached bytes; identical prompts share one array) instead of lists of Python ints (~36
    bytes a token): what keeping the ids of 100k long prompts in memory needs. `keys`: the
    conversations' `messages_key`s where the caller has them (`Fixture.messages_digest`).
    `background_write=True` stores the newly tokenized ids while the caller goes on
    (`TokenCountCache.put_packed_in_background`).
    """
    tools_seq = list(tools_list) if tools_list is not None else [None] * len(messages_list)
    if cache is None or tokenizer.kind == "approximate":
        encoded = tokenizer.encode_chat_many(messages_list, tools_list=tools_seq)
        return [_as_compact(ids) for ids in encoded] if compact else list(encoded)
    if keys is None:
        keys = [messages_key(m, t) for m, t in zip(messages_list, tools_seq, strict=True)]
    elif len(keys) != len(messages_list):
        raise ValueError(f"{len(keys)} keys for {len(messages_list)} conversations")
    if compact:
        # The whole set as an earlier run asked for it: one file (id_snapshots).
        snapshots = IdSnapshots(cache.directory / "token-ids")
        whole = snapshot_key(tokenizer.fingerprint, keys)
        kept = snapshots.load(whole, len(keys))
        if kept is not None:
            return kept
        blobs = cache.get_many(tokenizer.fingerprint, keys, raw=True)
        missing_idx = {}
        for i, key in enumerate(keys):
            if key not in blobs and key not in missing_idx:
                missing_idx[key] = i
        missing = list(missing_idx.items())
        # In chunks: a tokenizer's batch output (HF Encodings hold tokens, offsets and masks too)
        # for 10k long prompts would take gigabytes at once. The packed ids are what is kept (the
        # arrays are views of them) and stored in one sorted transaction at the end: random keys
        # committed chunk by chunk rewrite most pages of the file once per chunk.
        positions = [i for _, i in missing]
        packed = encode_packed(tokenizer, messages_list, tools_seq, positions)
        for (key, _), blob in zip(missing, packed, strict=True):
            blobs[key] = blob
        if missing:
            store = cache.put_packed_in_background if background_write else cache.put_packed
            store(tokenizer.fingerprint, [(key, blobs[key]) for key, _ in missing])
        arrays = {key: _from_blob(blob) for key, blob in blobs.items()}
        compact_ids = [arrays[key] for key in keys]
        snapshots.save(whole, keys, compact_ids)
        return compact_ids
    found = cache.get_many(tokenizer.fingerprint, keys)
    missing_at: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in found and key not in missing_at:
            missing_at[key] = i
    if missing_at:
        idx = list(missing_at.values())
        encoded = tokenizer.encode_chat_many(
            [messages_list[i] for i in idx], tools_list=[tools_seq[i] for i in idx]
        )
        new = dict(zip(missing_at.keys(), encoded, strict=True))
        cache.put_many(tokenizer.fingerprint, new)
        found.update(new)
    return [list(found[key]) for key in keys]
