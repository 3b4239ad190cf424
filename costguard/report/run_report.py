"""The RunReport: the versioned JSON that every renderer, diff and policy check reads.

Format documented in docs/report-format.md. Renderers never recompute: they read this.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from costguard.errors import ConfigError
from costguard.model.files import write_atomic as write_atomic  # re-exported: diff writes with it
from costguard.report.model import RunReportModel
from costguard.report.rows import RecordRows

DEFAULT_REPORT = "costguard-report.json"  # where front ends write the report unless told otherwise
SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = SCHEMA_VERSION.split(".")[0]


class RunReport:
    """A run's report: `model` is what readers read (typed sections, `costguard.report.model`);
    `data` is its JSON form, which is what gets written, and `records` the per-fixture lines.

    The data is not changed after the report is made, so the typed model parsed from it once
    stays true.
    """

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path

    @cached_property
    def model(self) -> RunReportModel:
        """Every section but the records, typed (validated on first use, once)."""
        return RunReportModel.model_validate({k: v for k, v in self.data.items() if k != "records"})

    # sections
    @property
    def totals(self) -> dict[str, Any]:
        return self.data["totals"]

    @property
    def tiers(self) -> dict[str, dict[str, Any]]:
        return self.data["tiers"]

    @property
    def suites(self) -> dict[str, dict[str, Any]]:
        return self.data["suites"]

    @property
    def records(self) -> Sequence[dict[str, Any]]:
        """The per-fixture records: a list, or RecordRows (compact JSON rows decoded on demand)."""
        return self.data["records"]

    @property
    def complete(self) -> bool:
        """Only a literal `true` is complete ("false", "yes" and 1 are not)."""
        return self.data.get("complete", False) is True

    @property
    def monthly_cost(self) -> float:
        return float(self.totals["cost_per_month"])

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_json(self) -> str:
        """Indented JSON, except that each record sits compact on one line: readable, diffable,
        and fast for 100k-record reports (the indenting encoder is pure Python)."""
        return json_with_compact_rows(self.data, ("records",))

    def write(self, path: str | Path) -> Path:
        """Write atomically: a reader never sees a half-written report. The records are streamed
        to the file row by row, never held as one string."""
        self.path = write_atomic(path, iter_json_with_compact_rows(self.data, ("records",)))
        return self.path


def json_with_compact_rows(data: dict[str, Any], path: tuple[str, ...]) -> str:
    """`data` as indented JSON, except the list at `path` (e.g. the records): one compact row per line."""
    return "".join(iter_json_with_compact_rows(data, path))


_ROWS_PER_CHUNK = 2048


def iter_json_with_compact_rows(data: dict[str, Any], path: tuple[str, ...]) -> Iterator[str]:
    """`json_with_compact_rows` in pieces (a few thousand rows each), for streaming to a file."""
    rows: Any = data
    for key in path:
        rows = rows.get(key) if isinstance(rows, dict) else None
    if not isinstance(rows, (list, RecordRows)) or not rows:
        if isinstance(rows, RecordRows):  # no rows: an empty list
            data = _replaced(data, path, [])
        yield json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        return
    placeholder = "\u0000costguard-rows\u0000"
    outer = _replaced(data, path, placeholder)
    text = json.dumps(outer, indent=2, ensure_ascii=False)
    quoted = json.dumps(placeholder)
    at = text.index(quoted)
    indent = " " * (at - text.rfind("\n", 0, at) - 1 - len(json.dumps(path[-1])) - 2)
    inner = indent + "  "
    separator = ",\n" + inner
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    yield text[:at] + "[\n" + inner
    if isinstance(rows, RecordRows):  # already encoded: copied as they are
        joiner = separator.encode()
        first = True
        for _, joined in rows.chunks():
            piece = joined.replace(b"\n", joiner).decode("utf-8")
            yield piece if first else separator + piece
            first = False
        yield "\n" + indent + "]" + text[at + len(quoted) :] + "\n"
        return
    for start in range(0, len(rows), _ROWS_PER_CHUNK):
        chunk = separator.join(encode(r) for r in rows[start : start + _ROWS_PER_CHUNK])
        yield (separator + chunk) if start else chunk
    yield "\n" + indent + "]" + text[at + len(quoted) :] + "\n"


def _replaced(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = dict(data)
    out[path[0]] = value if len(path) == 1 else _replaced(data[path[0]], path[1:], value)
    return out


REQUIRED_KEYS = ("schema_version", "complete", "totals", "tiers", "suites", "records")


def read_json(path: str | Path, *, missing_hint: str, rows_key: str | None = None) -> Any:
    """Parse a JSON file, turning every failure into a one-line ConfigError naming the file.

    `rows_key`: the top-level list that costguard writes one compact row per line (a RunReport's
    records). When the file has that layout the rows are kept as RecordRows (decoded on demand,
    checked by the caller); any other layout is parsed whole.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"not found ({missing_hint})", file=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a JSON file", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror or exc})", file=path) from None
    return parse_json_bytes(raw, path, rows_key=rows_key)


def parse_json_bytes(raw: bytes, path: Path, *, rows_key: str | None = None) -> Any:
    """`read_json` of bytes already read from `path` (named in errors)."""
    rows = _split_rows(raw, rows_key) if rows_key else None
    if rows is not None:
        head, records = rows
        data = _parse_json(head, path)
        if isinstance(data, dict) and data.get(rows_key) == []:
            data[rows_key] = records
            return data
    return _parse_json(raw, path)


def _split_rows(raw: bytes, key: str) -> tuple[bytes, RecordRows] | None:
    """(the document with an empty `key` list, its rows) when `key` is the last top-level key
    and holds one compact row per line, as `RunReport.write` lays it out; else None."""
    opening = b'\n  "' + key.encode() + b'": [\n'
    at = raw.rfind(opening)
    if at < 0:
        return None
    start = at + len(opening)
    end = raw.rfind(b"\n  ]\n}")
    if end < start or raw[end + 6 :].strip():
        return None
    rows = RecordRows()
    for line in raw[start:end].split(b"\n"):
        row = line.strip()
        if row.endswith(b","):
            row = row[:-1]
        if not (line.startswith(b"    {") and row.endswith(b"}")):
            return None
        rows.append_encoded(row)
    rows.first_line = raw.count(b"\n", 0, start) + 1
    return raw[:at] + b'\n  "' + key.encode() + b'": []\n}\n', rows


def _parse_json(raw: bytes, path: Path) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 JSON", file=path) from None
    from costguard.report.integrity import json_constant

    try:
        return json.loads(text, parse_constant=json_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    except ValueError as exc:  # NaN / Infinity, or an integer too long to convert
        import re

        m = re.search(r"[:\[,]\s*(-?Infinity|NaN)\b", text)
        line = text.count("\n", 0, m.start(1)) + 1 if m else None
        raise ConfigError(f"not valid JSON: {exc}", file=path, line=line) from None
    except RecursionError:
        raise ConfigError("not valid JSON: nested too deeply", file=path) from None


def load_document(
    path: str | Path,
    *,
    kind: str,
    what: str,
    required: tuple[str, ...],
    schema_major: str,
    missing_hint: str,
    stale_hint: str = "re-create it with this version",
    default_kind: str | None = None,
    rows_key: str | None = None,
) -> dict[str, Any]:
    """Read a versioned costguard JSON document (RunReport, DiffReport), checking kind and major version."""
    data = read_json(path, missing_hint=missing_hint, rows_key=rows_key)
    if not isinstance(data, dict) or data.get("kind", default_kind) != kind:
        raise ConfigError(f"not a costguard {what}", file=path)
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"not a costguard {what} (missing {', '.join(missing)})", file=path)
    version = str(data["schema_version"])
    if version.split(".")[0] != schema_major:
        raise ConfigError(
            f"{what} schema_version {version} is not readable by this costguard (reads {schema_major}.x); "
            + stale_hint,
            file=path,
        )
    return data


def load_report(path: str | Path) -> RunReport:
    data = load_document(
        path,
        kind="run",
        what="RunReport",
        required=REQUIRED_KEYS,
        schema_major=SCHEMA_MAJOR,
        missing_hint="run `costguard run --out FILE` first",
        stale_hint="re-run the baseline with this version",
        default_kind="run",
        rows_key="records",
    )
    from costguard.report.integrity import check_report

    check_report(data, path)
    report = RunReport(data, Path(path))
    try:
        report.model  # noqa: B018 - validate now: a bad report is bad input, named with its key
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "RunReport"), file=path) from None
    return report


def validation_message(exc: ValidationError, what: str) -> str:
    """One line for a report that does not match its model: the key path and what is wrong."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"not a valid {what}: {where}: {err['msg']}{more}"
