"""Per-fixture diffs: pair the two runs' records by id, say which fixtures moved and why.

A fixture is `changed` when a figure moved, its prompt changed (content hash) or its outcome
(which tier served it, the cache outcome, escalation) differs. Why it moved is attributed to
the prompt (`prompt_changed`) and, when templates render it, to the template files whose
content differs between the runs (`templates_changed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from typing import Any

from pydantic import ValidationError

from costguard.compare.figures import estimated_pair, figure, get, moved, num
from costguard.compare.model import FixtureChange, FixtureChanges, Pair, Status
from costguard.errors import ConfigError
from costguard.report.rows import RecordRows, decode_row
from costguard.report.run_report import RunReport, validation_message

TOP_MOVERS = 10

# Per-request figures of one fixture.
FIXTURE_FIELDS = (
    "monthly_requests",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "cost_usd",
    "cost_per_month",
)
# What makes a fixture "changed" besides its numbers.
FIXTURE_OUTCOMES = ("served_by", "cache", "escalated")


def _record_quality(record: dict[str, Any] | None) -> float | None:
    q = (record or {}).get("quality")
    return num(q.get("score")) if isinstance(q, dict) else None


# -- why it moved -------------------------------------------------------------------------------


def changed_templates(base: RunReport, head: RunReport) -> set[str]:
    """Template files (project-relative) whose content differs between the runs, or are new."""

    def hashes(report: RunReport) -> dict[str, Any]:
        inputs = report.get("inputs") or {}
        return {t.get("path"): t.get("sha256") for t in inputs.get("templates") or []}

    before, after = hashes(base), hashes(head)
    return {path for path, sha in after.items() if path and before.get(path) != sha}


def _prompt_changed(b: dict[str, Any] | None, h: dict[str, Any] | None) -> bool:
    return b is not None and h is not None and b.get("content_hash") != h.get("content_hash")


def _templates_moved(h: dict[str, Any], changed: set[str]) -> list[str]:
    """The changed template files among those that render the head's fixture."""
    used = (h.get("extra") or {}).get("templates") or []
    return [t for t in used if t in changed]


# -- one fixture --------------------------------------------------------------------------------


def _identical(b: dict[str, Any], h: dict[str, Any]) -> bool:
    return (
        b.get("content_hash") == h.get("content_hash")
        and all(b.get(f) == h.get(f) for f in FIXTURE_FIELDS)
        and all(b.get(k) == h.get(k) for k in FIXTURE_OUTCOMES)
        and _record_quality(b) == _record_quality(h)
    )


def _status(
    b: dict[str, Any] | None,
    h: dict[str, Any] | None,
    has_base: bool,
    moved_figures: bool,
    moved_outcome: bool,
) -> Status:
    if not has_base:
        return "head_only"
    if b is None:
        return "added"
    if h is None:
        return "removed"
    if _prompt_changed(b, h) or moved_figures or moved_outcome:
        return "changed"
    return "unchanged"


def fixture_change(
    b: dict[str, Any] | None,
    h: dict[str, Any] | None,
    has_base: bool,
    templates: set[str] | None = None,
) -> FixtureChange:
    """One fixture on both sides (`b` or `h` None: the fixture is only in the other run)."""
    ref = h if h is not None else b
    assert ref is not None
    figures: dict[str, Any] = {
        f: figure(num((b or {}).get(f)), num((h or {}).get(f)), has_base) for f in FIXTURE_FIELDS
    }
    outcomes = {
        "served_by": ((b or {}).get("served_by"), (h or {}).get("served_by")),
        "cache": (get(b, "cache", "outcome"), get(h, "cache", "outcome")),
        "escalated": ((b or {}).get("escalated"), (h or {}).get("escalated")),
    }
    optional: dict[str, Any] = {}
    qb, qh = _record_quality(b), _record_quality(h)
    if qb is not None or qh is not None:
        optional["quality"] = figure(qb, qh, has_base)
    prompt_changed = _prompt_changed(b, h)
    if prompt_changed and h is not None:
        optional["templates_changed"] = _templates_moved(h, templates or set())
    status = _status(
        b,
        h,
        has_base,
        any(moved(c) for c in figures.values()),
        any(vb != vh for vb, vh in outcomes.values()),
    )
    return FixtureChange(
        id=ref["id"],
        suite=ref.get("suite"),
        location=ref.get("location"),
        **figures,
        served_by=Pair[str](base=outcomes["served_by"][0], head=outcomes["served_by"][1]),
        cache=Pair[str](base=outcomes["cache"][0], head=outcomes["cache"][1]),
        escalated=Pair[bool](base=outcomes["escalated"][0], head=outcomes["escalated"][1]),
        estimated=estimated_pair(b, h),
        prompt_changed=prompt_changed,
        status=status,
        **optional,
    )


def _mover_key(entry: FixtureChange) -> tuple[float, str]:
    delta = entry.cost_per_month.delta or 0.0
    return (-abs(delta), entry.id)


# -- all fixtures -------------------------------------------------------------------------------


def _differing_records(
    base: RunReport | None, head: RunReport
) -> tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]:
    """The records to compare by id. Rows that are byte for byte the same in both reports at the
    same position are the same record (ids are unique within a report): unchanged, and left out
    without being decoded. With no base, or records held as dicts, every record is compared."""
    if base is None:
        return [], head.records
    rows_b, rows_h = base.records, head.records
    if not isinstance(rows_b, RecordRows) or not isinstance(rows_h, RecordRows):
        return rows_b, rows_h
    kept_b: list[dict[str, Any]] = []
    kept_h: list[dict[str, Any]] = []
    for index, (b, h) in enumerate(zip_longest(rows_b.raw(), rows_h.raw())):
        if b == h:
            continue
        if b is not None:
            kept_b.append(decode_row(b, index))
        if h is not None:
            kept_h.append(decode_row(h, index))
    return kept_b, kept_h


def fixture_changes(base: RunReport | None, head: RunReport) -> FixtureChanges:
    """The added, removed and changed fixtures (biggest |delta $/month| first) and the counts."""
    has_base = base is not None
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    base_records, head_records = _differing_records(base, head)
    identical = counts["unchanged"] = len(head.records) - len(head_records)
    base_by_id = {r["id"]: r for r in base_records}
    head_by_id = {r["id"]: r for r in head_records}
    ids = list(head_by_id) + [i for i in base_by_id if i not in head_by_id]
    templates = changed_templates(base, head) if base is not None else set()
    items = []
    for fid in ids:
        b, h = base_by_id.get(fid), head_by_id.get(fid)
        if b is not None and h is not None and _identical(b, h):
            counts["unchanged"] += 1  # the common case, decided without building the entry
            continue
        try:
            entry = fixture_change(b, h, has_base, templates)
        except ValidationError as exc:  # a record that is not what costguard writes: bad input
            sides = [r for r, rec in ((base, b), (head, h)) if r is not None and rec is not None]
            files = " or ".join(str(r.path or "report") for r in sides)
            raise ConfigError(validation_message(exc, f"record {fid!r} in {files}")) from None
        if entry.status in counts:
            counts[entry.status] += 1
        if entry.status in ("added", "removed", "changed"):
            items.append(entry)
    items.sort(key=_mover_key)  # biggest |delta $/month| first: the top movers lead
    return FixtureChanges(
        **counts,
        total=len(ids) + identical,
        items=items,
        top_movers=[e.id for e in items[:TOP_MOVERS]],
    )
