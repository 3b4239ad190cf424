"""Prepared result-cache passes kept across runs.

`ResultCaches.prepare` (arrival order and times, what the PII guard finds in each request, each
request's exact-cache key) depends only on the fixtures' contents, suites and weights, the
config's `caches:` and `traffic:`, and the code that computes it. A run whose fixtures did not
change (a PR that edits the router, a tier or a price) reads it from here instead of computing
it again (2-3 s of one core for 100k fixtures).

The key is the sha256 of all of that: each fixture's content hash (messages, model, sampling,
tools), suite and weight in load order, the two config sections as JSON, the source of the
modules that compute the pass and the Python version. A snapshot is checked against the number
of fixtures; a damaged or foreign one is a miss, never an error. The `KEEP` most recently used
are kept, in `<cache_dir>/passes/`.
"""

from __future__ import annotations

import hashlib
import marshal
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costguard.model.files import keep_cache_file, source_fingerprint
from costguard.model.fixture_spec import canonical_json

if TYPE_CHECKING:
    from costguard.model.config import StackConfig
    from costguard.model.fixtures import Fixture

FORMAT = 1
KEEP = 8
SUFFIX = ".pass"
# What computes a prepared pass (paths under costguard/): a change to any of them is a miss.
CODE_FILES = (
    "engine/result_caches.py",
    "engine/caches/exact.py",
    "engine/caches/pii.py",
    "engine/caches/semantic.py",
    "engine/traffic.py",
    "serving/replay.py",
)
_code: list[str] = []


def _code_fingerprint() -> bytes:
    if not _code:
        package = Path(__file__).resolve().parent.parent
        salt = f"passes {FORMAT} marshal {marshal.version}"
        _code.append(source_fingerprint(package, CODE_FILES, salt))
    return _code[0].encode()


def pass_key(config: StackConfig, fixtures: Sequence[Fixture]) -> str | None:
    """The key of the prepared pass of `fixtures` under `config` (None: not keyable, e.g. a
    message with a lone surrogate, which the run reports on its own)."""
    try:
        digest = hashlib.sha256(_code_fingerprint())
        settings = {
            "caches": config.caches.model_dump(mode="json"),
            "traffic": config.traffic.model_dump(mode="json"),
        }
        digest.update(canonical_json(settings).encode())
        digest.update(
            "\n".join(f"{fx.content_hash}\0{fx.suite}\0{fx.weight!r}" for fx in fixtures).encode(
                "utf-8", "surrogatepass"
            )
        )
    except (UnicodeEncodeError, OSError):
        return None
    return digest.hexdigest()


class PreparedStore:
    """The prepared passes of one cache directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key[:40]}{SUFFIX}"

    def load(self, key: str, count: int) -> tuple[Any, ...] | None:
        """(order, times, pii, exact keys) of a kept pass of `count` fixtures, or None."""
        path = self._path(key)
        try:
            data = marshal.loads(path.read_bytes())
            if type(data) is not tuple or len(data) != 6:
                return None
            fmt, stored_key, order, times, pii, keys = data
            if fmt != FORMAT or stored_key != key:
                return None
            if not (len(order) == len(times) == len(keys) == count) or type(pii) is not dict:
                return None
            os.utime(path)  # most recently used
        except (OSError, EOFError, ValueError, TypeError):
            return None
        return order, times, pii, keys

    def save(self, key: str, fields: tuple[Any, ...]) -> None:
        """Keep (order, times, pii, exact keys). Best effort: a cache that cannot be written is
        no error."""
        record: Any = (FORMAT, key, *fields)
        keep_cache_file(self._path(key), [marshal.dumps(record)], KEEP)
