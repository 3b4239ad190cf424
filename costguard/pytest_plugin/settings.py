"""The plugin's settings: command-line options over `[tool.costguard]` in pyproject.toml, and the
baseline they name (the facade's one grammar)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from costguard import api
from costguard.api import (
    DEFAULT_REPORT,
    RunReport,
    read_tool_settings,
)


@dataclass
class Settings:
    """Where everything is, resolved: command line > pytest ini options > [tool.costguard] > defaults."""

    config: Path
    policies: list[Path]
    fixtures: list[Path]
    baseline: Path | None
    backend: str
    report: Path
    baseline_spec: str | None = None  # as given: a report file / artifact directory, or a git ref


def resolve_settings(config: pytest.Config) -> Settings:
    invocation = Path(config.invocation_params.dir)
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    pyproject = (
        config.inipath
        if config.inipath and config.inipath.name == "pyproject.toml"
        else config.rootpath / "pyproject.toml"
    )
    tool = read_tool_settings(pyproject)

    def many(name: str) -> list[Path]:
        if cli := config.getoption(f"costguard_{name}"):
            return [invocation / p for p in cli]
        if ini := config.getini(f"costguard_{name}"):
            return [ini_dir / p for p in ini]
        return [pyproject.parent / p for p in getattr(tool, name)]

    def one(name: str) -> tuple[Path, str] | None:
        if cli := config.getoption(f"costguard_{name}"):
            return invocation, cli
        if ini := config.getini(f"costguard_{name}"):
            return ini_dir, ini
        if value := getattr(tool, name):
            return pyproject.parent, value
        return None

    def path(name: str, default: str | None) -> Path | None:
        found = one(name)
        if found is None:
            return config.rootpath / default if default else None
        return found[0] / found[1]

    backend = one("backend")
    return Settings(
        config=path("config", api.DEFAULT_CONFIG),  # type: ignore[arg-type]
        policies=many("policy"),
        fixtures=many("fixtures"),
        baseline=path("baseline", None),
        backend=backend[1] if backend else "offline",
        report=path("report", DEFAULT_REPORT),  # type: ignore[arg-type]
        baseline_spec=baseline_given[1] if (baseline_given := one("baseline")) else None,
    )


def resolve_baseline_with_reason(settings: Settings) -> tuple[RunReport | None, str | None]:
    """`--costguard-baseline`: a RunReport file or artifact directory if that path exists, else a
    git ref projected offline in a temporary worktree (the same code path as `costguard diff
    --base-ref`). None with why when there is no usable one (e.g. an incomplete run)."""
    assert settings.baseline is not None
    if settings.baseline.exists() or settings.baseline_spec is None:
        spec = api.BaselineSpec("path", str(_cwd_relative(settings.baseline)))
    else:  # one grammar (ref:, artifact:, file:); a bare word that is no path is a git ref
        spec = api.parse_baseline(
            settings.baseline_spec, bare="path-or-ref", option="--costguard-baseline"
        )
    found = api.Costguard(_cwd_relative(settings.config)).load_baseline(spec)
    return found.report, found.reason


def _cwd_relative(path: Path) -> Path:
    """Relative to the working directory when under it, so titles and verdicts read as the user wrote them."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
