"""A report's per-fixture records as compact JSON rows, encoded once and decoded on demand.

A 100k-fixture run has 100k records: held as dicts they cost ~2 KB each and their JSON encoding
dominates writing the report. `RecordRows` holds each record as its compact JSON line (what the
report file contains, one row per line), in chunks; past `SPILL_BYTES` the chunks go to an
anonymous temporary file, so memory stays bounded however many fixtures there are. Readers
iterate it like a list of dicts; writing the report copies the rows as they are.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, NamedTuple, overload

import orjson

ROWS_PER_CHUNK = 4096
SPILL_BYTES = 16 * 1024 * 1024  # rows beyond this many bytes live in a temporary file


class RowError(ValueError):
    """A row that is not a JSON object (or not JSON, or holds a number that is not finite):
    `index` is its position among the rows."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def encode_row(record: dict[str, Any]) -> bytes:
    """One record as a compact JSON row (UTF-8, like the report's `ensure_ascii=False` JSON)."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate in an id: escaped, as `json` does
        return json.dumps(record, separators=(",", ":")).encode("ascii")


class RowsLayout(NamedTuple):
    chunks: list[tuple[int, int]]  # (offset, size) of each chunk of joined rows in the file
    counts: list[int]  # rows per chunk
    rows: int


class RecordRows(Sequence[dict[str, Any]]):
    """Records as compact JSON rows. Append with `append_encoded`/`append`; read like a list."""

    def __init__(self, rows: Iterable[bytes] = (), *, file: IO[bytes] | None = None) -> None:
        """`file`: an empty temporary file that holds every chunk (none held in memory)."""
        self._chunks: list[bytes | tuple[int, int]] = []  # joined rows, or (offset, size) in _file
        self._counts: list[int] = []  # rows per chunk
        self._pending: list[bytes] = []
        self._held = 0  # bytes of chunks held in memory
        self._file: IO[bytes] | None = file
        self._spill = 0 if file is not None else SPILL_BYTES
        self._len = 0
        self.first_line: int | None = None  # the line of row 0 in the file it was read from
        for row in rows:
            self.append_encoded(row)

    # -- building -----------------------------------------------------------------------
    def append_encoded(self, row: bytes) -> None:
        """Add one compact JSON row (no newline inside: JSON strings escape theirs)."""
        self._pending.append(row)
        self._len += 1
        if len(self._pending) >= ROWS_PER_CHUNK:
            self._flush()

    def append(self, record: dict[str, Any]) -> None:
        self.append_encoded(encode_row(record))

    def _flush(self) -> None:
        if not self._pending:
            return
        chunk = b"\n".join(self._pending)
        self._counts.append(len(self._pending))
        self._pending = []
        if self._held + len(chunk) > self._spill:
            if self._file is None:
                self._file = tempfile.TemporaryFile()
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(chunk)
            self._chunks.append((offset, len(chunk)))
        else:
            self._held += len(chunk)
            self._chunks.append(chunk)

    def layout(self) -> RowsLayout:
        """Where the rows of a file-backed RecordRows sit in its file (everything written out):
        what a process that shares the file needs to read them (`from_layout`)."""
        self._flush()
        assert self._file is not None and all(isinstance(c, tuple) for c in self._chunks)
        self._file.flush()
        return RowsLayout(list(self._chunks), list(self._counts), self._len)  # type: ignore[arg-type]

    @classmethod
    def from_layout(cls, file: IO[bytes], layout: RowsLayout) -> RecordRows:
        """The rows another process wrote into `file` (shared with it) as `layout` says."""
        rows = cls(file=file)
        rows._chunks = list(layout.chunks)
        rows._counts = list(layout.counts)
        rows._len = layout.rows
        return rows

    # -- reading ------------------------------------------------------------------------
    def chunks(self) -> Iterator[tuple[int, bytes]]:
        """(rows in it, the rows joined by newlines) for every chunk, in order."""
        for count, chunk in zip(self._counts, self._chunks, strict=True):
            if isinstance(chunk, tuple):
                assert self._file is not None
                self._file.seek(chunk[0])
                yield count, self._file.read(chunk[1])
            else:
                yield count, chunk
        if self._pending:
            yield len(self._pending), b"\n".join(self._pending)

    def raw(self) -> Iterator[bytes]:
        """Every row's bytes, in order."""
        for _, chunk in self.chunks():
            yield from chunk.split(b"\n")

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[dict[str, Any]]:
        index = 0
        for row in self.raw():
            yield decode_row(row, index)
            index += 1

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("record index out of range")
        start = 0
        for count, chunk in self.chunks():
            if index < start + count:
                return decode_row(chunk.split(b"\n")[index - start], index)
            start += count
        raise IndexError("record index out of range")  # pragma: no cover - counts add up

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordRows | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return self._len > 0

    def __repr__(self) -> str:
        return f"RecordRows({self._len} rows)"

    def line_of(self, index: int) -> int | None:
        """The line of row `index` in the report file it was read from (None: not read from one)."""
        return None if self.first_line is None else self.first_line + index

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def decode_row(row: bytes, index: int) -> dict[str, Any]:
    # orjson refuses NaN, Infinity and numbers that overflow to infinity; an integer beyond 64
    # bits reads as a float, which the report checks refuse where a record's figures are read.
    try:
        value = orjson.loads(row)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise RowError(index, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RowError(index, "must be a mapping")
    return value
