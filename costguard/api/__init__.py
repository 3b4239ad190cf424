"""The costguard API: the one facade the CLI, the pytest plugin and the Action scripts call.

`Costguard` (in `facade`) is the object to drive: run, check, compare/diff, load a baseline (one
grammar, `baselines`), ci and comment (`ci`), merge, calibrate, frontier, recordings, the vLLM
stack. The functions below are the same operations over an explicit `Project`, for code that
builds its own. Front ends import this package and `costguard.render`, nothing deeper (the
import contract in pyproject.toml checks it).
"""

from __future__ import annotations

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
