"""Terminal rendering (rich tables) of a RunReport, a DiffReport, policy verdicts, the frontier
and a calibration. Reads the typed reports, never recomputes.

- `tables`: the console, the house table, fitting it to the width, literal user text
- `run`: a run (headline, tables, details); `caches`, `live`, `routing`: its sections
- `diffs`: a DiffReport (the "why" of a fixture's move is `costguard.render.why`, shared with the
  PR comment); `verdicts`: a policy's verdicts
- `tuning`: `costguard frontier` and `costguard calibrate`
"""

from costguard.render.terminal.caches import cache_tables
from costguard.render.terminal.diffs import diff_headline, print_diff
from costguard.render.terminal.live import REPLAY_TERMS, replay_tables
from costguard.render.terminal.routing import TERMS, print_routing, routing_lines, routing_table
from costguard.render.terminal.run import (
    detail_lines,
    headline_lines,
    print_run,
    quality_line,
    quality_table,
    run_tables,
    summary_lines,
)
from costguard.render.terminal.tables import fit, make_console
from costguard.render.terminal.tuning import print_calibration, print_frontier
from costguard.render.terminal.verdicts import (
    STATUS_LABEL,
    STATUS_STYLE,
    print_check,
    print_verdict,
    print_verdict_table,
    verdict_line,
)
from costguard.render.why import change_reasons

__all__ = [
    "REPLAY_TERMS",
    "STATUS_LABEL",
    "STATUS_STYLE",
    "TERMS",
    "cache_tables",
    "change_reasons",
    "detail_lines",
    "diff_headline",
    "fit",
    "headline_lines",
    "make_console",
    "print_calibration",
    "print_check",
    "print_diff",
    "print_frontier",
    "print_routing",
    "print_run",
    "print_verdict",
    "print_verdict_table",
    "quality_line",
    "quality_table",
    "replay_tables",
    "routing_lines",
    "routing_table",
    "run_tables",
    "summary_lines",
    "verdict_line",
]
