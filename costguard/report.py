"""The RunReport: the versioned JSON that every renderer, diff and policy check reads.

Format documented in docs/report-format.md. Renderers never recompute: they read this.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError

DEFAULT_REPORT = "costguard-report.json"  # where front ends write the report unless told otherwise
SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = SCHEMA_VERSION.split(".")[0]


class RunReport:
    """A thin, typed view over the report dict (which is what gets written and read)."""

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path

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
    def records(self) -> list[dict[str, Any]]:
        return self.data["records"]

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete", False))

    @property
    def monthly_cost(self) -> float:
        return float(self.totals["cost_per_month"])

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_json(self) -> str:
        """Indented JSON, except that each record sits compact on one line: readable, diffable,
        and fast for 100k-record reports (the indenting encoder is pure Python)."""
        head = {k: v for k, v in self.data.items() if k != "records"}
        text = json.dumps(head, indent=2, ensure_ascii=False)
        records = self.data.get("records", [])
        if not records:
            return text[:-2] + ',\n  "records": []\n}\n'
        lines = ",\n    ".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records)
        return text[:-2] + ',\n  "records": [\n    ' + lines + "\n  ]\n}\n"

    def write(self, path: str | Path) -> Path:
        """Write atomically: a reader never sees a half-written report."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.path = path
        return path


REQUIRED_KEYS = ("schema_version", "complete", "totals", "tiers", "suites", "records")


def load_report(path: str | Path) -> RunReport:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("report not found (run `costguard run --out FILE` first)", file=path) from None
    except UnicodeDecodeError:
        raise ConfigError("report is not UTF-8 JSON", file=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"report is not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    if not isinstance(data, dict) or data.get("kind", "run") != "run":
        raise ConfigError("not a costguard RunReport", file=path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(f"not a costguard RunReport (missing {', '.join(missing)})", file=path)
    version = str(data["schema_version"])
    if version.split(".")[0] != SCHEMA_MAJOR:
        raise ConfigError(
            f"report schema_version {version} is not readable by this costguard (reads {SCHEMA_MAJOR}.x); "
            "re-run the baseline with this version",
            file=path,
        )
    return RunReport(data, path)
