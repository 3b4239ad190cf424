"""Writing files so that a reader never sees half of one (reports, recordings, edited configs)."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomic(path: str | Path, text: str | Iterable[str]) -> Path:
    """Write `text` (a string or its pieces) to `path` through a temporary file and a rename, so
    nothing is half-written."""
    pieces = [text] if isinstance(text, str) else text
    return write_atomic_bytes(path, (piece.encode("utf-8") for piece in pieces))


def write_atomic_bytes(path: str | Path, pieces: Iterable[bytes | memoryview]) -> Path:
    """`write_atomic` for bytes (cache files): all of them, or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def keep_newest(directory: Path, pattern: str, keep: int) -> None:
    """Remove all but the `keep` most recently modified files matching `pattern` in `directory`
    (cache files whose readers touch them when used)."""
    found = []
    for path in Path(directory).glob(pattern):
        try:
            found.append((path.stat().st_mtime_ns, path))
        except OSError:
            continue
    found.sort(reverse=True)
    for _, path in found[keep:]:
        path.unlink(missing_ok=True)


def keep_cache_file(path: Path, pieces: Iterable[bytes | memoryview], keep: int) -> None:
    """Write a cache file (atomically) and keep the `keep` most recently used of its directory
    with the same suffix. Best effort: a cache that cannot be written is no error."""
    try:
        write_atomic_bytes(path, pieces)
        keep_newest(path.parent, f"*{path.suffix}", keep)
    except (OSError, ValueError):
        pass


def source_fingerprint(base: Path, names: Iterable[str], salt: str) -> str:
    """sha256 of `salt`, the Python version and the source files `names` under `base`: what a
    cache of computed results depends on besides its inputs."""
    digest = hashlib.sha256(f"{salt}\0{sys.version}".encode())
    for name in names:
        digest.update((base / name).read_bytes())
    return digest.hexdigest()
