"""Cost diffs: a base RunReport x a head RunReport -> a DiffReport (base / head / delta everywhere).

Pure functions over the two reports. Every delta, percentage and "what changed" flag that the
terminal, the PR comment, the job summary and the regression rules show is computed once, into
the typed DiffReport (`costguard.compare.model`); renderers and policy metrics read it. Format
documented in docs/report-format.md.

With no baseline (first run, base commit without costguard) the DiffReport still exists: `base`
says why there is none, every `base`/`delta` is null, and renderers say "no baseline yet".

Where the parts are:
  `figures`      one figure on both sides (`between`, `figure`, `change`)
  `fixtures`     per-fixture diffs and why a fixture moved (prompt, templates)
  `sections`     totals, tiers and suites, caches, routing, quality, counterfactual, run summary
  `diff_report`  the DiffReport object, its JSON form, reading and writing it
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from costguard import __version__
from costguard.compare import sections
from costguard.compare.diff_report import (
    DIFF_REQUIRED_KEYS as DIFF_REQUIRED_KEYS,
)
from costguard.compare.diff_report import (
    DIFF_SCHEMA_MAJOR as DIFF_SCHEMA_MAJOR,
)
from costguard.compare.diff_report import (
    DIFF_SCHEMA_VERSION,
    DiffReport,
)
from costguard.compare.diff_report import (
    load_diff as load_diff,
)
from costguard.compare.figures import change as change
from costguard.compare.figures import get
from costguard.compare.figures import quality_score as quality_score
from costguard.compare.fixtures import TOP_MOVERS as TOP_MOVERS
from costguard.compare.fixtures import fixture_changes
from costguard.compare.model import DiffReportModel
from costguard.compare.sections import USAGE_FIELDS
from costguard.report.run_report import RunReport


@dataclass(frozen=True)
class Baseline:
    """The run a head is compared with, or why there is none (`report` None, `reason` set)."""

    report: RunReport | None
    source: str
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.report is not None


def diff_reports(baseline: Baseline, head: RunReport, *, head_source: str = "head") -> DiffReport:
    """Compare `head` with `baseline` at total, tier, suite and fixture level."""
    base = baseline.report
    has_base = base is not None
    bdata = base.data if base is not None else None
    hdata = head.data
    t_b = base.totals if base is not None else None
    totals = sections.totals(t_b, head.totals)
    tiers = sections.named_blocks(
        get(bdata, "tiers") if has_base else None, head.tiers, USAGE_FIELDS, ("share",)
    )
    suites = sections.named_blocks(
        get(bdata, "suites") if has_base else None,
        head.suites,
        USAGE_FIELDS,
        ("share", "cost_per_request", "fixtures"),
    )
    fixtures = fixture_changes(base, head)
    moved = any((fixtures.added, fixtures.removed, fixtures.changed))
    model = DiffReportModel(
        kind="diff",
        schema_version=DIFF_SCHEMA_VERSION,
        costguard_version=__version__,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        base=sections.run_summary(base, baseline.source, baseline.reason),
        head=sections.run_summary(head, head_source),
        stack=get(hdata, "stack", "name"),
        changed=sections.changed(totals, (*tiers.values(), *suites.values()), moved, has_base),
        estimated=bool(head.totals.get("estimated", False) or (t_b or {}).get("estimated", False)),
        totals=totals,
        tiers=tiers,
        suites=suites,
        cache=sections.cache(bdata, hdata),
        routing=sections.routing(bdata, hdata),
        quality=sections.quality(bdata, hdata),
        counterfactual=sections.counterfactual(bdata, hdata),
        fixtures=fixtures,
        policy=None,
    )
    return DiffReport(model)
