"""Project settings from `[tool.costguard]` in pyproject.toml (config, policy, fixtures, ...).

Front ends read these as defaults under their own flags (the pytest plugin: command line >
`[tool.pytest.ini_options]` > `[tool.costguard]` > built-in defaults). Paths are relative to the
pyproject.toml that holds them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from costguard.errors import ConfigError
from costguard.model.yamlio import StrictModel, validate


class ToolSettings(StrictModel):
    config: str | None = Field(
        default=None, description="stack config file (default costguard.yaml)"
    )
    policy: list[str] = Field(default_factory=list, description="policy file(s)")
    fixtures: list[str] = Field(default_factory=list, description="fixture files or directories")
    baseline: str | None = Field(default=None, description="baseline RunReport file")
    backend: str | None = Field(default=None, description="offline | endpoint | vllm")
    report: str | None = Field(default=None, description="where the RunReport JSON is written")

    @field_validator("policy", "fixtures", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def read_tool_settings(pyproject: Path) -> ToolSettings:
    """`[tool.costguard]` of a pyproject.toml (empty settings when the file or table is absent)."""
    if not pyproject.is_file():
        return ToolSettings()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=pyproject) from None
    table = data.get("tool", {}).get("costguard")
    if table is None:
        return ToolSettings()
    if not isinstance(table, dict):
        raise ConfigError("[tool.costguard] must be a table", file=pyproject, key="tool.costguard")
    try:
        return validate(ToolSettings, table, file=pyproject)
    except ConfigError as exc:
        raise ConfigError(
            exc.message,
            file=pyproject,
            key=f"tool.costguard.{exc.key}" if exc.key else "tool.costguard",
        ) from None
