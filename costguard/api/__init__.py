"""The costguard API: the one facade the CLI, the pytest plugin and the Action scripts call.

`Costguard` (in `facade`) is the object to drive: run, check, compare/diff, load a baseline (one
grammar, `baselines`), ci and comment (`ci`), merge, calibrate, frontier, recordings, the vLLM
stack. The functions below are the same operations over an explicit `Project`, for code that
builds its own. Front ends import this package and `costguard.render`, nothing deeper (the
import contract in pyproject.toml checks it).

Every name is imported on first use (PEP 562), so `costguard --help` and pytest start-up do
not pay for the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costguard.api.baselines import BaselineSpec, baseline_from_options, parse_baseline
    from costguard.api.core import (
        check,
        compare,
        frontier,
        load_baseline,
        project_offline,
        run,
    )
    from costguard.api.facade import Costguard, Observed, StackControl
    from costguard.api.verify import VERIFY_VIA, verify
    from costguard.compare.diff import Baseline, DiffReport
    from costguard.engine.backends.factory import BACKENDS, open_backend
    from costguard.engine.observed import DEFAULT_SUITE, ObservedCall, observed_records
    from costguard.engine.project import (
        DEFAULT_CONFIG,
        Project,
        load_holdout,
        load_project,
        with_variant,
    )
    from costguard.engine.records import ESTIMATED_OUTPUT, RequestRecord
    from costguard.engine.run import (
        Replay,
        audit_recordings,
        build_prefix_fleet,
        count_prompt_tokens,
        prune_recordings,
        replay,
    )
    from costguard.engine.traffic import parse_shard
    from costguard.model.fixtures import Fixture
    from costguard.model.settings import read_tool_settings
    from costguard.policy.engine import Acknowledgement, PolicyResult, Verdict
    from costguard.report.assemble import build_report, merge_shards, report_from_records
    from costguard.report.run_report import DEFAULT_REPORT, RunReport
    from costguard.serving import interrupts

_FROM: dict[str, str] = {  # name -> the module that defines it
    "BaselineSpec": "costguard.api.baselines",
    "baseline_from_options": "costguard.api.baselines",
    "parse_baseline": "costguard.api.baselines",
    "check": "costguard.api.core",
    "compare": "costguard.api.core",
    "frontier": "costguard.api.core",
    "load_baseline": "costguard.api.core",
    "project_offline": "costguard.api.core",
    "run": "costguard.api.core",
    "Costguard": "costguard.api.facade",
    "Observed": "costguard.api.facade",
    "StackControl": "costguard.api.facade",
    "VERIFY_VIA": "costguard.api.verify",
    "verify": "costguard.api.verify",
    "Baseline": "costguard.compare.diff",
    "DiffReport": "costguard.compare.diff",
    "BACKENDS": "costguard.engine.backends.factory",
    "open_backend": "costguard.engine.backends.factory",
    "DEFAULT_SUITE": "costguard.engine.observed",
    "ObservedCall": "costguard.engine.observed",
    "observed_records": "costguard.engine.observed",
    "DEFAULT_CONFIG": "costguard.engine.project",
    "Project": "costguard.engine.project",
    "load_holdout": "costguard.engine.project",
    "load_project": "costguard.engine.project",
    "with_variant": "costguard.engine.project",
    "ESTIMATED_OUTPUT": "costguard.engine.records",
    "RequestRecord": "costguard.engine.records",
    "Replay": "costguard.engine.run",
    "audit_recordings": "costguard.engine.run",
    "build_prefix_fleet": "costguard.engine.run",
    "count_prompt_tokens": "costguard.engine.run",
    "prune_recordings": "costguard.engine.run",
    "replay": "costguard.engine.run",
    "parse_shard": "costguard.engine.traffic",
    "Fixture": "costguard.model.fixtures",
    "read_tool_settings": "costguard.model.settings",
    "Acknowledgement": "costguard.policy.engine",
    "PolicyResult": "costguard.policy.engine",
    "Verdict": "costguard.policy.engine",
    "build_report": "costguard.report.assemble",
    "merge_shards": "costguard.report.assemble",
    "report_from_records": "costguard.report.assemble",
    "DEFAULT_REPORT": "costguard.report.run_report",
    "RunReport": "costguard.report.run_report",
}
_MODULES = {
    "interrupts": "costguard.serving.interrupts",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _FROM:
        value = getattr(importlib.import_module(_FROM[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


__all__ = [
    "BACKENDS",
    "DEFAULT_CONFIG",
    "DEFAULT_REPORT",
    "DEFAULT_SUITE",
    "ESTIMATED_OUTPUT",
    "Acknowledgement",
    "Baseline",
    "BaselineSpec",
    "Costguard",
    "DiffReport",
    "Fixture",
    "Observed",
    "ObservedCall",
    "PolicyResult",
    "Project",
    "Replay",
    "RequestRecord",
    "RunReport",
    "StackControl",
    "Verdict",
    "audit_recordings",
    "baseline_from_options",
    "build_prefix_fleet",
    "build_report",
    "check",
    "compare",
    "count_prompt_tokens",
    "frontier",
    "load_baseline",
    "load_project",
    "merge_shards",
    "observed_records",
    "open_backend",
    "parse_baseline",
    "parse_shard",
    "project_offline",
    "prune_recordings",
    "read_tool_settings",
    "replay",
    "report_from_records",
    "run",
    "with_variant",
    "load_holdout",
    "verify",
    "VERIFY_VIA",
    "interrupts",
]
