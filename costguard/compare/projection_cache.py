"""Base projections cached by commit: a PR's base is projected once, not on every push.

`diff --base-ref`, `check`/`ci` with a git ref, the pytest plugin's `--costguard-baseline REF`
and the Action all project the base commit through `baseline_from_git_ref`, which asks this
cache first. An entry is keyed by what fixes the projection's inputs:

- the commit (its tree fixes the config, fixtures, templates and recordings inside the repo),
  the config path and fixture paths asked for;
- this costguard's code (a hash of the package's files) and the versions of the libraries that
  count tokens or embed (tokenizers, tiktoken, jinja2, sentence-transformers, torch), plus the
  environment variables that choose tokenizer caches, and the CPU (model and instruction-set
  flags: embeddings differ in their last bits between CPUs);

and it records the files outside the repository the projection read (tokenizer files from the
Hugging Face or tiktoken cache, templates or recordings given by absolute path) with their
sha256: a changed file invalidates the entry. A projection with an approximate tokenizer (a
fallback that a later run may not need) is never cached. Entries live in the project's cache
directory (`<cache_dir>/base-projections/`), which the Action saves and restores with
actions/cache; the newest `KEEP` entries are kept. An entry keeps the records as the report
holds them in memory (compact rows in chunks), so reading it back decodes nothing: a second
`diff` with the same base costs a hash of the entry's files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from costguard.errors import ConfigError
from costguard.report.rows import RecordRows, RowsLayout, encode_row
from costguard.report.run_report import SCHEMA_VERSION, RunReport, parse_json_bytes, write_atomic

KEEP = 4  # entries kept per cache directory (a 100k-fixture report is ~100 MB)
_LIBRARIES = ("tokenizers", "tiktoken", "jinja2", "sentence-transformers", "torch", "numpy")
_ENVIRONMENT = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TIKTOKEN_CACHE_DIR")


def _sha256_file(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """This costguard's code and data files plus the counting/embedding libraries' versions."""
    from importlib import metadata

    import costguard

    package = Path(costguard.__file__).resolve().parent
    digest = hashlib.sha256(SCHEMA_VERSION.encode())
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json", ".yaml", ".yml", ".j2", ".jinja"):
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    for name in _LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}={version}\0".encode())
    for name in _ENVIRONMENT:
        digest.update(f"{name}={os.environ.get(name, '')}\0".encode())
    digest.update(cpu_identity().encode())
    return digest.hexdigest()


def cpu_identity() -> str:
    """The CPU model and instruction-set flags: embeddings (and so router scores) are float32
    sums whose last bits depend on the vector kernels the CPU runs, so a projection cached on one
    kind of CPU is not reused on another."""
    import platform

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "model name", "flags", "Features", "CPU implementer"):
                    fields.setdefault(key, value.strip())
                if not line.strip() and fields:
                    break  # the first processor is enough
    except OSError:
        pass
    return f"{platform.machine()}\0{platform.processor()}\0" + "\0".join(
        f"{k}={v}" for k, v in sorted(fields.items())
    )


def projection_key(commit: str, config: str, fixtures: Sequence[str] | None) -> str:
    """The entry of one commit projected with one config path and fixture paths (repo-relative)."""
    payload = json.dumps(
        {"commit": commit, "config": config, "fixtures": list(fixtures or []),
         "code": code_fingerprint()},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def external_inputs(project: Any, tree: Path, inputs: dict[str, Any]) -> dict[str, str] | None:
    """{absolute path: sha256} of the files outside `tree` that projecting `project` read (its
    tokenizers' files and the report's `inputs`), or None when the projection must not be cached (an approximate tokenizer, an unreadable file)."""
    tree = tree.resolve()
    paths: set[Path] = set()
    for tier in project.config.tiers:
        tokenizer = project.tokenizer(tier.name)
        if not tokenizer.exact:
            return None
        paths.update(Path(p).resolve() for p in tokenizer.sources)
    listed: Iterable[dict[str, Any]] = [
        inputs["config"],
        *inputs.get("fixtures", []),
        *inputs.get("templates", []),
        *inputs.get("recordings", []),
    ]
    for entry in listed:
        path = Path(entry["path"])
        paths.add((path if path.is_absolute() else project.root / path).resolve())
    out: dict[str, str] = {}
    for path in sorted(paths):
        if path.is_relative_to(tree):
            continue  # fixed by the commit
        digest = _sha256_file(path)
        if digest is None:
            return None
        out[str(path)] = digest
    return out


class BaseProjectionCache:
    """RunReports of projected commits in one directory. An entry is three files: `<key>.json`
    (the report without its records), `<key>.rows` (the records as RecordRows writes them:
    compact JSON rows, in chunks) and `<key>.inputs.json` (the commit, the outside inputs, the
    sha256 of the other two files and where the chunks sit), written last: it validates them."""

    def __init__(self, directory: str | Path, *, keep: int = KEEP) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return (
            self.directory / f"{key}.json",
            self.directory / f"{key}.rows",
            self.directory / f"{key}.inputs.json",
        )

    def get(self, key: str) -> RunReport | None:
        """The cached report, if its entry exists, is whole and every outside input is unchanged.

        The files must be the bytes `put` wrote (sha256): a damaged or edited entry is a miss,
        never a figure. The records stay in the rows file, decoded when read."""
        report_path, rows_path, inputs_path = self._paths(key)
        rows_file: IO[bytes] | None = None
        try:
            recorded = json.loads(inputs_path.read_text(encoding="utf-8"))
            external = recorded["external"]
            for path, digest in external.items():
                if _sha256_file(Path(path)) != digest:
                    return None
            raw = report_path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != recorded["sha256"]:
                return None
            layout = RowsLayout(
                [(int(o), int(n)) for o, n in recorded["rows_chunks"]],
                [int(c) for c in recorded["rows_counts"]],
                int(recorded["rows"]),
            )
            rows_file = rows_path.open("rb")
            if not _rows_file_matches(rows_file, layout, recorded["rows_sha256"]):
                raise ValueError("not the rows put wrote")
            data = parse_json_bytes(raw, report_path)
            if (
                not isinstance(data, dict)
                or data.get("kind") != "run"
                or data.get("complete") is not True
                or data.get("records") != []
            ):
                raise ValueError("not a complete run report")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError):
            if rows_file is not None:
                rows_file.close()
            return None
        data["records"] = RecordRows.from_layout(rows_file, layout)
        try:
            os.utime(inputs_path)  # most recently used: kept longest
        except OSError:
            pass
        return RunReport(data)

    def put(self, key: str, report: RunReport, external: dict[str, str], *, commit: str) -> None:
        """Store a complete projection (the report and its rows, then the file that validates them)."""
        if not report.complete:
            return
        report_path, rows_path, inputs_path = self._paths(key)
        records = report.records
        try:
            write_atomic(
                report_path,
                json.dumps({**report.data, "records": []}, indent=2, ensure_ascii=False),
            )
            chunks: list[tuple[int, int]] = []
            counts: list[int] = []
            digest = hashlib.sha256()
            tmp = rows_path.with_name(f".{rows_path.name}.tmp")
            with tmp.open("wb") as out:
                offset = 0
                for count, chunk in _row_chunks(records):
                    out.write(chunk)
                    digest.update(chunk)
                    chunks.append((offset, len(chunk)))
                    counts.append(count)
                    offset += len(chunk)
            os.replace(tmp, rows_path)
            write_atomic(
                inputs_path,
                json.dumps(
                    {
                        "commit": commit,
                        "external": external,
                        "sha256": _sha256_file(report_path),  # the bytes on disk
                        "rows_sha256": digest.hexdigest(),
                        "rows_chunks": chunks,
                        "rows_counts": counts,
                        "rows": len(records),
                    },
                    indent=2,
                ),
            )
            self._prune()
        except OSError:
            pass  # a cache that cannot be written is no reason for a run to fail

    def _prune(self) -> None:
        entries = sorted(
            self.directory.glob("*.inputs.json"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for stale in entries[self.keep :]:
            key = stale.name.removesuffix(".inputs.json")
            for path in reversed(self._paths(key)):  # the validating file first
                path.unlink(missing_ok=True)


def _row_chunks(records: Sequence[dict[str, Any]]) -> Iterator[tuple[int, bytes]]:
    """(rows, the rows joined by newlines) in chunks: as RecordRows holds them."""
    if isinstance(records, RecordRows):
        yield from records.chunks()
        return
    rows = RecordRows(encode_row(r) for r in records)
    yield from rows.chunks()


def _rows_file_matches(fh: IO[bytes], layout: RowsLayout, sha256: str) -> bool:
    """Whether the rows file is the one `put` wrote (its sha256) and holds the chunks and rows
    the layout says, back to back (so reading row i reads row i)."""
    if len(layout.chunks) != len(layout.counts) or sum(layout.counts) != layout.rows:
        return False
    digest = hashlib.sha256()
    fh.seek(0)
    offset = 0
    for (start, size), count in zip(layout.chunks, layout.counts, strict=True):
        if start != offset or size <= 0 or count <= 0:
            return False
        chunk = fh.read(size)
        if len(chunk) != size or chunk.count(b"\n") + 1 != count:
            return False
        digest.update(chunk)
        offset += size
    return not fh.read(1) and digest.hexdigest() == sha256
