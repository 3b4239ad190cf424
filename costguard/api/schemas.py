"""JSON Schemas for the YAML inputs, so editors (yaml-language-server, VS Code) validate as you type,
and for the JSON outputs (RunReport, DiffReport), so other tools can read reports against a contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, dict[str, Any]]:
    from costguard.compare.model import diff_report_schema
    from costguard.model.config import StackConfig
    from costguard.model.fixtures import FixtureFile, FixtureSpec
    from costguard.model.policy_file import PolicyFile
    from costguard.report.model import run_report_schema

    stack = StackConfig.model_json_schema(by_alias=True)
    stack["title"] = "costguard stack config (costguard.yaml)"
    policy = PolicyFile.model_json_schema(by_alias=True)
    policy["title"] = "costguard policy"
    fixture_file = FixtureFile.model_json_schema(by_alias=True)
    fixture = FixtureSpec.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = fixture.pop("$defs", {})
    fixture.pop("required", None)  # `id` etc. may come from the file's `defaults:`
    defs["Fixture"] = fixture
    fixture_file["$defs"] = {**fixture_file.get("$defs", {}), **defs}
    fixture_file["properties"]["fixtures"]["items"] = {"$ref": "#/$defs/Fixture"}
    fixture_file["title"] = "costguard fixture file"
    out = {}
    for name, schema in (
        ("costguard.schema.json", stack),
        ("policy.schema.json", policy),
        ("fixtures.schema.json", fixture_file),
        ("run-report.schema.json", run_report_schema()),
        ("diff-report.schema.json", diff_report_schema()),
    ):
        out[name] = {"$schema": SCHEMA_URI, **schema}
    return out


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = out_dir / name
        path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
