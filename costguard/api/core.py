"""The facade's functions over a Project: run, check, compare, load a baseline, frontier.

`costguard.api` re-exports them with the `Costguard` object that front ends drive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from costguard.compare.diff import Baseline, DiffReport, diff_reports
from costguard.compare.frontier import Frontier, outcome_of, place
from costguard.compare.projection_cache import external_inputs
from costguard.engine.project import DEFAULT_CONFIG, Project, load_project
from costguard.engine.run import (
    replay,
)
from costguard.errors import UsageError
from costguard.model.heap import collector_paced
from costguard.model.variants import Variant
from costguard.policy.engine import (
    Acknowledgement,
    MetricContext,
    PolicyResult,
    evaluate,
    load_policy,
)
from costguard.report.assemble import report_from_records
from costguard.report.run_report import RunReport


def run(project: Project, **options: Any) -> RunReport:
    """Replay every fixture (or one shard) through the stack and build the RunReport; `options`
    as for `replay` (backend, progress, shard, replay_settings, notify).

    A live run that stops early returns a report with `complete: false`, which no policy passes.
    """
    started = time.perf_counter()
    with collector_paced():  # the run keeps nearly all it allocates until the report is built
        replayed = replay(project, **options)
        return report_from_records(project, replayed.records, backend=replayed.backend,
                                   seconds=time.perf_counter() - started, replayed=replayed)  # fmt: skip


def check(
    report: RunReport,
    policy_path: str | Path,
    *,
    baseline: RunReport | None = None,
    diff: DiffReport | None = None,
    acknowledgement: Acknowledgement | None = None,
    baseline_reason: str | None = None,
) -> PolicyResult:
    """Evaluate a policy file against a report (and a baseline, for regression rules)."""
    policy = load_policy(policy_path)
    ctx = MetricContext(
        report=report,
        baseline=baseline,
        diff=diff.model if diff is not None else None,
        baseline_reason=baseline_reason,
    )
    return evaluate(policy, ctx, acknowledgement=acknowledgement)


def project_offline(
    config: Path,
    fixtures: list[str] | None = None,
    cache_dir: Path | None = None,
    tree: Path | None = None,
) -> tuple[RunReport, dict[str, str] | None]:
    """An offline projection of a checkout (a git ref's baseline), sharing `cache_dir` if given,
    with the files outside the checkout `tree` it read (None: do not cache this projection)."""
    project = load_project(config, fixtures, cache_dir)
    report = run(project)
    external = (
        external_inputs(project, tree, report.data.get("inputs") or {})
        if tree is not None
        else None
    )
    return report, external


def load_baseline(
    *,
    path: str | Path | None = None,
    base_ref: str | None = None,
    config: str | Path = DEFAULT_CONFIG,
    fixtures: Sequence[str | Path] | None = None,
    cache_dir: Path | None = None,
) -> Baseline:
    """The baseline from a report file or artifact directory (`path`) or a git ref, or none."""
    from costguard.compare import baseline as store

    if path is not None and base_ref is not None:
        raise UsageError("give either a baseline file/directory or --base-ref, not both")
    if path is not None:
        return store.baseline_from_path(path)
    if base_ref is not None:
        return store.baseline_from_git_ref(
            base_ref, config=config, project=project_offline, fixtures=fixtures, cache_dir=cache_dir
        )
    return store.no_baseline("no baseline was given (pass --base-ref REF or --baseline FILE|DIR)")


def compare(
    head: RunReport,
    baseline: Baseline,
    *,
    policy: str | Path | None = None,
    acknowledgement: Acknowledgement | None = None,
    head_source: str = "working tree",
) -> tuple[DiffReport, PolicyResult | None]:
    """Diff `head` against `baseline` and, with a policy, attach its verdicts to the DiffReport."""
    diff = diff_reports(baseline, head, head_source=head_source)
    result = None
    if policy is not None:
        result = check(
            head,
            policy,
            baseline=baseline.report,
            diff=diff,
            acknowledgement=acknowledgement,
            baseline_reason=baseline.reason,
        )
        diff.attach_policy(result.to_dict())
    return diff, result


VariantRunner = Callable[[Project], RunReport]


def frontier(
    project: Project,
    variants: Sequence[Variant],
    *,
    policy: str | Path | None = None,
    run_variant: VariantRunner | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Frontier:
    """Run every variant over the same fixtures and recorded responses, and place them."""
    rules = load_policy(policy) if policy is not None else None
    runner = run_variant or (lambda p: run(p, backend="offline"))
    outcomes = []
    for k, variant in enumerate(variants):
        if progress:
            progress("variants", k, len(variants))
        report = runner(project.with_config(variant.config, variant.name))
        result = evaluate(rules, MetricContext(report=report)) if rules is not None else None
        outcomes.append(
            outcome_of(
                variant,
                report,
                result.verdict if result is not None else None,
                [v.rule for v in result.failed] if result is not None else (),
            )
        )
    if progress:
        progress("variants", len(variants), len(variants))
    return place(
        outcomes,
        policy=str(policy) if policy is not None else None,
        on_unmeasured=rules.on_unmeasured if rules is not None else "warn",
    )
