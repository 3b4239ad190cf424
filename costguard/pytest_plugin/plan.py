"""The plan of one `pytest --costguard` run: one item per fixture and per policy rule, decided
once from the projection (and read by xdist workers), with the message a failure shows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from costguard import api
from costguard.api import (
    ESTIMATED_OUTPUT,
    Fixture,
    PolicyResult,
    RunReport,
    Verdict,
)


@dataclass
class ItemSpec:
    kind: str  # "fixture" | "policy"
    name: str
    line: int | None
    outcome: str  # "pass" | "fail" | "skip" | "warn"
    message: str = ""
    keywords: list[str] = field(default_factory=list)
    properties: list[tuple[str, Any]] = field(default_factory=list)
    skip: str | None = None
    xfail: str | None = None


@dataclass
class FileSpec:
    path: str  # absolute
    nodeid: str
    items: list[ItemSpec] = field(default_factory=list)


@dataclass
class Plan:
    config: str  # absolute path of the stack config (workers load it for the costguard fixture)
    backend: str
    files: list[FileSpec]

    def has_file(self, path: Path) -> bool:
        resolved = str(path.resolve())
        return any(f.path == resolved for f in self.files)

    def file(self, path: Path) -> FileSpec:
        resolved = str(path.resolve())
        return next(f for f in self.files if f.path == resolved)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        files = [
            FileSpec(
                path=f["path"],
                nodeid=f["nodeid"],
                items=[
                    ItemSpec(**{**i, "properties": [tuple(p) for p in i["properties"]]})
                    for i in f["items"]
                ],
            )
            for f in data["files"]
        ]
        return cls(config=data["config"], backend=data["backend"], files=files)


def _display(path: Path, rootpath: Path) -> str:
    try:
        return path.resolve().relative_to(rootpath.resolve()).as_posix()
    except ValueError:
        return str(path)


def _short(value: float | None) -> float | None:
    """A float for a JUnit property: 10 significant digits, no binary noise (4.23e-05, not 4.2300000000000005e-05)."""
    return None if value is None else float(f"{value:.10g}")


def quality_failure(quality: dict[str, Any]) -> str | None:
    """The failure text for a scored fixture, or None when it passed or was not measured.

    Contract with the quality scorers: `record["quality"]` holds `passed` (bool), optional
    `score` and `measured` (False: no response to score), and `assertions`, each with `type`,
    `passed` and `message`.
    """
    if quality.get("measured") is False or quality.get("passed", True):
        return None
    failed = [a for a in quality.get("assertions", []) if not a.get("passed", True)]
    score = (
        f" (score {quality['score']:.2f})" if isinstance(quality.get("score"), int | float) else ""
    )
    lines = [
        f"quality: {len(failed)} of {len(quality.get('assertions', []))} assertion(s) failed{score}"
    ]
    lines += [f"  {a.get('type', '?')}: {a.get('message', 'failed')}" for a in failed]
    return "\n".join(lines)


def fixture_item(fx: Fixture, record: dict[str, Any] | None, report: RunReport) -> ItemSpec:
    keywords = [fx.suite, *fx.tags]
    if record is None:
        reason = report.get("incomplete_reason") or "the run did not reach it"
        return ItemSpec(
            "fixture",
            fx.id,
            fx.line,
            "fail",
            f"fixture {fx.id}: no record in this run ({reason})",
            keywords,
            skip=fx.skip,
            xfail=fx.xfail,
        )
    primary = record["calls"][0] if record["calls"] else {}
    output_source = (
        "cache"
        if record["cache"]["outcome"] in ("exact", "semantic")
        else primary.get("output_source", "")
    )
    keywords.append(record["route"]["tier"])
    properties: list[tuple[str, Any]] = [
        ("suite", fx.suite),
        ("tier", record["route"]["tier"]),
        ("served_by", record["served_by"]),
        ("cache", record["cache"]["outcome"]),
        ("input_tokens", record["input_tokens"]),
        ("input_tokens_source", primary.get("input_source", "")),
        ("input_tokens_exact", primary.get("input_source") in ("exact", "measured")),
        ("cached_tokens", record["cached_tokens"]),
        ("output_tokens", record["output_tokens"]),
        ("output_tokens_source", output_source),
        ("output_tokens_estimated", output_source in ESTIMATED_OUTPUT),
        ("cost_usd", _short(record["cost_usd"])),
        ("monthly_requests", _short(record["monthly_requests"])),
        ("cost_per_month", _short(record["cost_per_month"])),
        ("estimated", record["estimated"]),
    ]
    outcome, message = "pass", ""
    quality = record.get("quality")
    if isinstance(quality, dict):
        properties.append(("quality_score", quality.get("score")))
        failure = quality_failure(quality)
        if failure:
            outcome, message = "fail", f"fixture {fx.id}: {failure}"
    elif fx.expect.assertions:
        properties.append(("quality", "not scored"))
    return ItemSpec(
        "fixture", fx.id, fx.line, outcome, message, keywords, properties, fx.skip, fx.xfail
    )


def rule_message(v: Verdict, where: str) -> str:
    text = f"rule {v.rule}: {'actual ' if v.actual is not None else ''}{v.message}"
    return f"{text}\n  at {where} (metric {v.metric}, level {v.level})"


def rule_item(v: Verdict, rootpath: Path) -> ItemSpec:
    where = _display(Path(v.file), rootpath) + (f":{v.line}" if v.line else "") if v.file else "?"
    outcome = {"pass": "pass", "fail": "fail", "warn": "warn", "skip": "skip"}[v.status]
    message = v.message if outcome == "skip" else rule_message(v, where)
    properties: list[tuple[str, Any]] = [
        ("metric", v.metric),
        ("level", v.level),
        ("status", v.status),
        ("actual", _short(v.actual)),
        ("limit", v.limit),
        ("unit", v.unit),
        ("estimated", v.estimated),
    ]
    return ItemSpec("policy", v.rule, v.line, outcome, message, [v.metric], properties)


def build_plan(
    project: api.Project,
    report: RunReport,
    results: list[PolicyResult],
    *,
    backend: str,
    rootpath: Path,
) -> Plan:
    by_id = {r["id"]: r for r in report.records}
    files: dict[str, FileSpec] = {}
    for fx in project.fixtures:
        path = Path(fx.file) if Path(fx.file).is_absolute() else project.root / fx.file
        path = path.resolve()
        spec = files.setdefault(str(path), FileSpec(str(path), _display(path, rootpath)))
        spec.items.append(fixture_item(fx, by_id.get(fx.id), report))
    for result in results:
        path = Path(result.policy).resolve()
        spec = files.setdefault(str(path), FileSpec(str(path), _display(path, rootpath)))
        spec.items.extend(rule_item(v, rootpath) for v in result.verdicts)
    return Plan(
        config=str(project.stack.path.resolve()), backend=backend, files=list(files.values())
    )
