"""Fixture snapshots: a JSONL fixture file parsed once per content.

A production fixture set is one large JSONL file that rarely changes between two runs. Parsing it
(JSON, the checks of the fast path) and deriving each fixture's content keys cost more than the
rest of loading; a snapshot keeps the result, keyed by the sha256 of the file's bytes and a
fingerprint of the loader (its source files, the Python version, the snapshot format), so that a
changed file, a changed loader or another interpreter never reads a stale one.

What is kept is what the fast path (`fixture_fast`) built from each line, as `marshal` data:
id, suite as written, weight, messages, the sampling and `expect` objects as written (validated
again through their models when read, exactly as the fast path validates them), the other
optional fields, the line number, and the two content keys (`Fixture.content_hash`,
`Fixture.messages_digest`). A file with any line the fast path does not take (templates, tools,
content parts, ...) gets no snapshot: the full path reads it every time. Errors are never kept:
a file that fails to load writes nothing.

The messages are kept apart from the rest, each fixture's as its own marshal data, and are not
read when a snapshot loads: a fixture read from a snapshot reads its messages from the snapshot's
file when they are asked for (`StoredMessages`), so a million fixtures' texts are not held in
memory, and a run that needs none of them (a warm one, whose token counts and result-cache pass
are kept too) reads none.

Snapshots live in `<cache_dir>/fixtures/`, the `KEEP` most recently used; a damaged or foreign
one is a miss, never an error (messages found damaged when read later: a clear error naming the
file).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import weakref
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from costguard.errors import ConfigError
from costguard.model.files import keep_cache_file, source_fingerprint
from costguard.model.fixture_fast import empty_list, shared_expect, shared_sampling
from costguard.model.fixture_record import Fixture

FORMAT = 3
KEEP = 8  # snapshots kept (most recently used): a base and a head of a few fixture files
CHUNK = 20_000  # fixtures per marshal record (bounded memory while reading or writing)
SUFFIX = ".fixtures"
_READ = 1 << 20

# A row: (id, suite as written, weight, size of its messages' marshal data, sampling index,
# expect as written or None, model, label, tags, skip, xfail, line, content_hash,
# messages_digest as its 32 bytes, whether an assistant message follows the first message).
# A chunk: a record of rows, then one of their messages' marshal data, one after the other.
Row = tuple[Any, ...]
_NOT_HELD: Any = None  # a stored fixture's `messages` slot


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read a block at a time into one buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_READ)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


# The loader: what turns a file's bytes into fixtures (this module included).
LOADER_FILES = (
    "fixture_fast.py",
    "fixture_record.py",
    "fixture_snapshot.py",
    "fixture_spec.py",
    "fixtures.py",
    "jsonl.py",
)
_fingerprint: list[str] = []


def loader_fingerprint() -> str:
    """What a snapshot depends on besides the file: the loader's source, Python, the format."""
    if not _fingerprint:
        salt = f"fixtures {FORMAT} marshal {marshal.version}"
        _fingerprint.append(source_fingerprint(Path(__file__).parent, LOADER_FILES, salt))
    return _fingerprint[0]


class SnapshotStore:
    """The snapshots of one cache directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, content: str) -> Path:
        return self.directory / f"{content[:40]}-{loader_fingerprint()[:16]}{SUFFIX}"

    def load(
        self, content: str, *, display: str, default_suite: str, strings: dict[Any, Any]
    ) -> list[Fixture] | None:
        """The fixtures of the file whose bytes hash to `content`, or None (no usable snapshot)."""
        path = self._path(content)
        try:
            with path.open("rb") as fh:
                header = _read(fh)
                if (
                    type(header) is not dict
                    or header.get("format") != FORMAT
                    or header.get("content") != content
                    or header.get("loader") != loader_fingerprint()
                ):
                    return None
                samplings = []
                for raw in header["samplings"]:
                    known = shared_sampling(raw, strings)
                    if known is None:
                        return None
                    samplings.append(known)
                fixtures: list[Fixture] = []
                stored = StoredMessages(path)
                for _ in range(header["chunks"]):
                    rows = _read(fh)
                    start = _skip(fh)  # the messages, read when asked for
                    fixtures.extend(
                        _fixtures(rows, start, stored, samplings, display, default_suite, strings)
                    )
                    if stored.end() != fh.tell():
                        return None
            if len(fixtures) != header["count"]:
                return None
            os.utime(path)  # most recently used
        except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError):
            return None
        return fixtures

    def save(self, content: str, fixtures: list[Fixture], raws: list[tuple[Any, Any, Any]]) -> None:
        """Keep `fixtures` (each as the fast path built it, with its (suite, sampling, expect) as
        written in `raws`) as the snapshot of the file whose bytes hash to `content`. Best effort:
        a cache that cannot be written is no error."""
        samplings: dict[str, int] = {}
        sampling_raws: list[Any] = []
        rows: list[Row] = []
        messages: list[bytes] = []
        for fx, (suite, sampling, expect) in zip(fixtures, raws, strict=True):
            written = repr(sampling)
            index = samplings.get(written)
            if index is None:
                index = samplings[written] = len(sampling_raws)
                sampling_raws.append(sampling)
            try:
                keys = (fx.content_hash, bytes.fromhex(fx.messages_digest))
            except UnicodeEncodeError:  # a lone surrogate: the run says so, not the cache
                return
            data = marshal.dumps(fx.messages)
            messages.append(data)
            rows.append(
                (
                    fx.id,
                    suite,
                    fx.weight,
                    len(data),
                    index,
                    expect,
                    fx.model,
                    fx.label,
                    fx.tags,
                    fx.skip,
                    fx.xfail,
                    fx.line,
                    *keys,
                    fx.may_show_replies,
                )  # fmt: skip
            )
        header = {
            "format": FORMAT,
            "content": content,
            "loader": loader_fingerprint(),
            "count": len(rows),
            "chunks": (len(rows) + CHUNK - 1) // CHUNK,
            "samplings": sampling_raws,
        }

        def records() -> Iterator[bytes]:
            yield marshal.dumps(header)
            for i in range(0, len(rows), CHUNK):
                yield marshal.dumps(rows[i : i + CHUNK])
                yield b"".join(messages[i : i + CHUNK])

        _write(self._path(content), records())


class StoredMessages:
    """The messages of a snapshot's fixtures, read from its file when asked for (`Fixture.messages`).

    The file stays open while any of its fixtures lives, so a newer snapshot that replaces or
    prunes it never changes what they read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._close = weakref.finalize(self, os.close, self._fd)
        self._offsets = array("Q")  # each fixture's messages: where they start in the file
        self._sizes = array("Q")  # ... and how many bytes they take
        self._replies: set[int] = set()  # fixtures whose conversation shows an assistant reply
        self._digests = bytearray()  # each fixture's messages digest (32 bytes each)
        self._end = 0

    def add(self, start: int, size: int, replies: bool, digest: bytes) -> int:
        """Keep where the next fixture's messages are, and their digest; returns the
        fixture's position."""
        if type(digest) is not bytes or len(digest) != 32:
            raise ValueError("a damaged row")
        at = len(self._offsets)
        self._digests += digest
        self._offsets.append(start)
        self._sizes.append(size)
        if replies:
            self._replies.add(at)
        self._end = start + size
        return at

    def end(self) -> int:
        """Where the last messages kept end."""
        return self._end

    def read(self, at: int) -> list[dict[str, Any]]:
        size = self._sizes[at]
        data = os.pread(self._fd, size, self._offsets[at])
        try:
            if len(data) != size:
                raise EOFError
            messages = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            messages = None
        if type(messages) is not list:
            try:  # the next load parses the fixture file again
                self.path.unlink()
            except OSError:
                pass
            raise ConfigError(
                f"fixture snapshot is damaged (fixture {at + 1} of the file); it is removed, "
                "run again",
                file=str(self.path),
            )
        return messages

    def digest(self, at: int) -> str:
        """`Fixture.messages_digest` of the fixture at `at` (kept as bytes: 113 bytes a fixture
        as a string)."""
        return self._digests[32 * at : 32 * at + 32].hex()

    def may_show_replies(self, at: int) -> bool:
        return at in self._replies

    def __reduce__(self) -> tuple[Any, ...]:  # a copy opens the same file again
        state = (self._offsets, self._sizes, self._replies, self._digests, self._end)
        return (_reopened, (self.path, *state))


def _reopened(
    path: Path,
    offsets: array[int],
    sizes: array[int],
    replies: set[int],
    digests: bytearray,
    end: int,
) -> StoredMessages:
    stored = StoredMessages(path)
    stored._offsets, stored._sizes, stored._replies = offsets, sizes, replies
    stored._digests, stored._end = digests, end
    return stored


def _fixtures(
    rows: list[Row],
    start: int,
    stored: StoredMessages,
    samplings: list[tuple[Any, str]],
    display: str,
    default_suite: str,
    strings: dict[Any, Any],
) -> Iterable[Fixture]:
    """The fixtures of one chunk's `rows`, whose messages start at `start` in the file."""
    empty = shared_expect(None, strings)
    no_list = empty_list(strings)
    add = stored.add
    for (
        fid, suite, weight, size, index, expect, model, label, tags, skip, xfail, line,
        content_hash, digest, replies,
    ) in rows:  # fmt: skip
        sampling, sampling_json = samplings[index]
        shared = empty if expect is None else shared_expect(expect, strings)
        if shared is None:
            raise ValueError("an expectation the fast path no longer takes")
        if type(size) is not int or size < 0:
            raise ValueError("a damaged row")
        # Positional, in Fixture's field order (as fast_fixture builds it).
        yield Fixture(
            fid,
            suite or default_suite,
            weight,
            _NOT_HELD,  # messages: read from `stored`
            sampling,
            shared,
            display,
            line,
            model,
            label,
            tags or no_list,
            skip,
            xfail,
            no_list,  # templates
            None,
            None,
            content_hash,
            None,  # messages_digest: from `stored`
            sampling_json,
            stored,
            add(start, size, replies, digest),
        )
        start += size


def _read(fh: BinaryIO) -> Any:
    """One record: its length (8 bytes, little-endian), then its marshal data (read whole:
    `marshal.load` on a file reads it a few bytes at a time)."""
    size = int.from_bytes(fh.read(8), "little")
    if size > os.fstat(fh.fileno()).st_size - fh.tell():
        raise EOFError("snapshot cut short")
    data = fh.read(size)
    if len(data) != size:
        raise EOFError("snapshot cut short")
    return marshal.loads(data)


def _skip(fh: BinaryIO) -> int:
    """Step over one record without reading it; returns where its data starts."""
    size = int.from_bytes(fh.read(8), "little")
    start = fh.tell()
    if size > os.fstat(fh.fileno()).st_size - start:
        raise EOFError("snapshot cut short")
    fh.seek(size, os.SEEK_CUR)
    return start


def _write(path: Path, records: Iterable[bytes]) -> None:
    def framed() -> Iterator[bytes]:
        for data in records:
            yield len(data).to_bytes(8, "little")
            yield data

    keep_cache_file(path, framed(), KEEP)
