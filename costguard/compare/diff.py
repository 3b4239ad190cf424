"""Cost diffs: a base RunReport x a head RunReport -> a DiffReport (base / head / delta everywhere).

Pure functions over the two report dicts. Every delta, percentage and "what changed" flag that the
terminal, the PR comment, the job summary and the regression rules show is computed here once;
renderers and policy metrics read the DiffReport. Format documented in docs/report-format.md.

With no baseline (first run, base commit without costguard) the DiffReport still exists: `base`
says why there is none, every `base`/`delta` is null, and renderers say "no baseline yet".
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from costguard import __version__
from costguard.compare.model import DiffReportModel
from costguard.errors import ConfigError
from costguard.report.run_report import (
    RunReport,
    json_with_compact_rows,
    load_document,
    validation_message,
    write_atomic,
)

DIFF_SCHEMA_VERSION = "1.0"
DIFF_SCHEMA_MAJOR = DIFF_SCHEMA_VERSION.split(".")[0]
TOP_MOVERS = 10

# Aggregate figures compared at every level (tier, suite, total) when present in both reports.
USAGE_FIELDS = (
    "requests_per_month",
    "input_tokens_per_month",
    "cached_tokens_per_month",
    "output_tokens_per_month",
    "cost_per_month",
)
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


@dataclass(frozen=True)
class Baseline:
    """The run a head is compared with, or why there is none (`report` None, `reason` set)."""

    report: RunReport | None
    source: str
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.report is not None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def change(base: float | None, head: float | None) -> dict[str, float | None]:
    """One figure as {base, head, delta, delta_pct}.

    A side that does not exist (a suite added by the PR, no baseline yet) is null; the delta then
    counts the missing side as 0 when the other side exists and there is a baseline at all, and
    `delta_pct` is null whenever the base is 0 or missing (no percentage of nothing).
    """
    if base is None and head is None:
        return {"base": None, "head": None, "delta": None, "delta_pct": None}
    b = float(base) if base is not None else None
    h = float(head) if head is not None else None
    delta = (h or 0.0) - (b or 0.0)
    if b is not None and h is not None and _close(b, h):
        delta = 0.0
    pct = 100.0 * delta / b if b else None
    return {"base": b, "head": h, "delta": delta, "delta_pct": pct}


def _no_base(head: float | None) -> dict[str, float | None]:
    return {
        "base": None,
        "head": None if head is None else float(head),
        "delta": None,
        "delta_pct": None,
    }


def _moved(c: dict[str, Any]) -> bool:
    return bool(c.get("delta"))


def _usage(
    base: dict[str, Any] | None, head: dict[str, Any] | None, fields: Iterable[str], has_base: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        b = (base or {}).get(f)
        h = (head or {}).get(f)
        if not isinstance(b, (int, float)) and not isinstance(h, (int, float)):
            continue
        out[f] = change(b, h) if has_base else _no_base(h)
    return out


def _estimated(base: dict[str, Any] | None, head: dict[str, Any] | None) -> dict[str, bool | None]:
    return {
        "base": bool(base.get("estimated", False)) if base is not None else None,
        "head": bool(head.get("estimated", False)) if head is not None else None,
    }


def _status(base: Any, head: Any, figures: dict[str, Any]) -> str:
    if base is None:
        return "added"
    if head is None:
        return "removed"
    return (
        "changed"
        if any(_moved(c) for c in figures.values() if isinstance(c, dict))
        else "unchanged"
    )


def _named_blocks(
    base: dict[str, dict[str, Any]] | None,
    head: dict[str, dict[str, Any]],
    fields: tuple[str, ...],
    extra: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """Tiers or suites: base order first, then names only the head has."""
    has_base = base is not None
    names = list(base or {}) + [n for n in head if n not in (base or {})]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        b = (base or {}).get(name)
        h = head.get(name)
        figures = _usage(b, h, fields + extra, has_base)
        entry: dict[str, Any] = {
            "status": _status(b, h, figures) if has_base else "head_only",
            **figures,
            "estimated": _estimated(b, h),
        }
        model_b, model_h = (b or {}).get("model"), (h or {}).get("model")
        if model_b is not None or model_h is not None:
            entry["model"] = {"base": model_b, "head": model_h}
            if has_base and b is not None and h is not None and model_b != model_h:
                entry["status"] = "changed"
        out[name] = entry
    return out


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def quality_score(data: dict[str, Any] | None, suite: str | None = None) -> float | None:
    """The report's quality score (0..1), overall or for one suite; None when the run has none.

    Read from `quality.score` and `quality.suites.NAME.score` (the quality section is optional).
    """
    if suite is None:
        return _num(_get(data, "quality", "score"))
    return _num(_get(data, "quality", "suites", suite, "score"))


def _record_quality(record: dict[str, Any] | None) -> float | None:
    q = (record or {}).get("quality")
    return _num(q.get("score")) if isinstance(q, dict) else None


def _fixture_entry(
    b: dict[str, Any] | None, h: dict[str, Any] | None, has_base: bool
) -> dict[str, Any]:
    ref = h if h is not None else b
    assert ref is not None
    figures = {
        f: change(_num((b or {}).get(f)), _num((h or {}).get(f)))
        if has_base
        else _no_base(_num(h.get(f)) if h else None)
        for f in FIXTURE_FIELDS
    }
    entry: dict[str, Any] = {
        "id": ref["id"],
        "suite": ref.get("suite"),
        "location": ref.get("location"),
        **figures,
    }
    outcomes = {
        "served_by": ((b or {}).get("served_by"), (h or {}).get("served_by")),
        "cache": (_get(b, "cache", "outcome"), _get(h, "cache", "outcome")),
        "escalated": ((b or {}).get("escalated"), (h or {}).get("escalated")),
    }
    for key, (vb, vh) in outcomes.items():
        entry[key] = {"base": vb, "head": vh}
    entry["estimated"] = _estimated(b, h)
    qb, qh = _record_quality(b), _record_quality(h)
    if qb is not None or qh is not None:
        entry["quality"] = change(qb, qh) if has_base else _no_base(qh)
    prompt_changed = (
        b is not None and h is not None and b.get("content_hash") != h.get("content_hash")
    )
    entry["prompt_changed"] = prompt_changed
    if not has_base:
        entry["status"] = "head_only"
    elif b is None:
        entry["status"] = "added"
    elif h is None:
        entry["status"] = "removed"
    elif (
        prompt_changed
        or any(_moved(figures[f]) for f in FIXTURE_FIELDS)
        or any(vb != vh for vb, vh in outcomes.values())
    ):
        entry["status"] = "changed"
    else:
        entry["status"] = "unchanged"
    return entry


def _identical(b: dict[str, Any], h: dict[str, Any]) -> bool:
    return (
        b.get("content_hash") == h.get("content_hash")
        and all(b.get(f) == h.get(f) for f in FIXTURE_FIELDS)
        and all(b.get(k) == h.get(k) for k in FIXTURE_OUTCOMES)
        and _record_quality(b) == _record_quality(h)
    )


def _mover_key(entry: dict[str, Any]) -> tuple[float, str]:
    delta = entry["cost_per_month"]["delta"] or 0.0
    return (-abs(delta), entry["id"])


def _changed_templates(base: RunReport, head: RunReport) -> set[str]:
    """Template files (project-relative) whose content differs between the runs, or are new."""

    def hashes(report: RunReport) -> dict[str, Any]:
        inputs = report.get("inputs") or {}
        return {t.get("path"): t.get("sha256") for t in inputs.get("templates") or []}

    before, after = hashes(base), hashes(head)
    return {path for path, sha in after.items() if path and before.get(path) != sha}


def _fixtures(base: RunReport | None, head: RunReport) -> dict[str, Any]:
    has_base = base is not None
    base_by_id = {r["id"]: r for r in base.records} if base is not None else {}
    head_by_id = {r["id"]: r for r in head.records}
    ids = list(head_by_id) + [i for i in base_by_id if i not in head_by_id]
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    changed_templates = _changed_templates(base, head) if base is not None else set()
    items = []
    for fid in ids:
        b, h = base_by_id.get(fid), head_by_id.get(fid)
        if b is not None and h is not None and _identical(b, h):
            counts["unchanged"] += 1  # the common case, decided without building the entry
            continue
        entry = _fixture_entry(b, h, has_base)
        if entry["prompt_changed"] and h is not None:
            used = (h.get("extra") or {}).get("templates") or []
            entry["templates_changed"] = [t for t in used if t in changed_templates]
        if entry["status"] in counts:
            counts[entry["status"]] += 1
        if entry["status"] in ("added", "removed", "changed"):
            items.append(entry)
    items.sort(key=_mover_key)  # biggest |delta $/month| first: the top movers lead
    return {
        **counts,
        "total": len(ids),
        "items": items,
        "top_movers": [e["id"] for e in items[:TOP_MOVERS]],
    }


def _cache(base: dict[str, Any] | None, head: dict[str, Any], has_base: bool) -> dict[str, Any]:
    """Hit rates and savings per cache layer, whatever layers the reports carry."""

    def pair(*path: str) -> dict[str, Any]:
        b, h = _num(_get(base, *path)), _num(_get(head, *path))
        return change(b, h) if has_base else _no_base(h)

    out: dict[str, Any] = {"hit_rate": pair("cache", "hit_rate"), "layers": {}}
    layers = [k for k, v in (head.get("cache") or {}).items() if isinstance(v, dict)]
    layers += [
        k
        for k, v in ((base or {}).get("cache") or {}).items()
        if isinstance(v, dict) and k not in layers
    ]
    for layer in layers:
        block = {}
        for key in (
            "hit_rate",
            "hit_rate_tokens",
            "saved_per_month",
            "cached_tokens_per_month",
            "false_hit_rate",
        ):
            c = pair("cache", layer, key)
            if c["base"] is not None or c["head"] is not None:
                block[key] = c
        if block:
            out["layers"][layer] = block
    return out


def _routing(base: dict[str, Any] | None, head: dict[str, Any], has_base: bool) -> dict[str, Any]:
    def pair(*path: str) -> dict[str, Any]:
        b, h = _num(_get(base, *path)), _num(_get(head, *path))
        return change(b, h) if has_base else _no_base(h)

    shares_b = _get(base, "routing", "shares") or {}
    shares_h = _get(head, "routing", "shares") or {}
    tiers = list(shares_b) + [t for t in shares_h if t not in shares_b]
    return {
        "escalation_rate": pair("routing", "escalation_rate"),
        "escalation_cost_per_month": pair("routing", "escalation_cost_per_month"),
        "cache_share": pair("routing", "cache_share"),
        "shares": {
            t: change(_num(shares_b.get(t)), _num(shares_h.get(t)))
            if has_base
            else _no_base(_num(shares_h.get(t)))
            for t in tiers
        },
    }


def _quality(
    base: dict[str, Any] | None, head: dict[str, Any], has_base: bool
) -> dict[str, Any] | None:
    overall_b, overall_h = quality_score(base), quality_score(head)
    suites_b = _get(base, "quality", "suites") or {}
    suites_h = _get(head, "quality", "suites") or {}
    if overall_b is None and overall_h is None and not suites_b and not suites_h:
        return None
    names = list(suites_b) + [s for s in suites_h if s not in suites_b]

    def count(data: dict[str, Any] | None, *keys: str) -> float | None:
        values = [_num(_get(data, "quality", k)) for k in keys]
        return None if all(v is None for v in values) else sum(v or 0.0 for v in values)

    counts = {
        "fixtures": (count(base, "fixtures"), count(head, "fixtures")),
        # not (fully) measured: no answer to score, or some assertion without a measurement
        "unmeasured": (count(base, "unmeasured", "partial"), count(head, "unmeasured", "partial")),
    }
    return {
        "score": change(overall_b, overall_h) if has_base else _no_base(overall_h),
        "suites": {
            s: change(quality_score(base, s), quality_score(head, s))
            if has_base
            else _no_base(quality_score(head, s))
            for s in names
        },
        **{k: change(b, h) if has_base else _no_base(h) for k, (b, h) in counts.items()},
    }


def _run_summary(
    report: RunReport | None, source: str, reason: str | None = None
) -> dict[str, Any]:
    if report is None:
        return {"available": False, "source": source, "reason": reason}
    return {
        "available": True,
        "source": source,
        "reason": None,
        "stack": _get(report.data, "stack", "name"),
        "backend": report.get("backend"),
        "created_at": report.get("created_at"),
        "complete": report.complete,
        "incomplete_reason": report.get("incomplete_reason"),
        "estimated": bool(report.totals.get("estimated", False)),
        "estimated_share": report.totals.get("estimated_share", 0.0),
        "fixtures": report.totals.get("fixtures", len(report.records)),
        "warnings": list(report.get("warnings", [])),
        # Tiers whose prompt tokens are counted with a stand-in or fallback tokenizer.
        "approximate_token_tiers": [
            t.get("name")
            for t in (_get(report.data, "stack", "tiers") or [])
            if isinstance(t, dict) and t.get("tokenizer_exact") is False
        ],
    }


def diff_reports(baseline: Baseline, head: RunReport, *, head_source: str = "head") -> DiffReport:
    """Compare `head` with `baseline` at total, tier, suite and fixture level."""
    base = baseline.report
    has_base = base is not None
    bdata = base.data if base is not None else None
    hdata = head.data
    t_b = base.totals if base is not None else None
    t_h = head.totals
    totals = _usage(t_b, t_h, USAGE_FIELDS, has_base)
    for label, path in (
        ("cost_per_request_mean", ("cost_per_request", "mean")),
        ("cost_per_request_p95", ("cost_per_request", "p95")),
        ("input_tokens_per_request_mean", ("tokens_per_request", "input", "mean")),
        ("output_tokens_per_request_mean", ("tokens_per_request", "output", "mean")),
        ("tokens_per_request_p95", ("tokens_per_request", "total", "p95")),
    ):
        b, h = _num(_get(t_b, *path)), _num(_get(t_h, *path))
        totals[label] = change(b, h) if has_base else _no_base(h)
    totals["estimated"] = _estimated(t_b, t_h)

    tiers = _named_blocks(
        _get(bdata, "tiers") if has_base else None, head.tiers, USAGE_FIELDS, ("share",)
    )
    suites = _named_blocks(
        _get(bdata, "suites") if has_base else None,
        head.suites,
        USAGE_FIELDS,
        ("share", "cost_per_request", "fixtures"),
    )
    fixtures = _fixtures(base, head)
    cf = {
        key: (
            change(
                _num(_get(bdata, "counterfactual", key)), _num(_get(hdata, "counterfactual", key))
            )
            if has_base
            else _no_base(_num(_get(hdata, "counterfactual", key)))
        )
        for key in ("cost_per_month", "saving_per_month", "saving_pct")
    }
    cf["label"] = _get(hdata, "counterfactual", "label")
    changed = has_base and (
        any(fixtures[k] for k in ("added", "removed", "changed"))
        or any(_moved(c) for c in totals.values() if isinstance(c, dict) and "delta" in c)
        or any(block["status"] != "unchanged" for block in (*tiers.values(), *suites.values()))
    )
    data: dict[str, Any] = {
        "kind": "diff",
        "schema_version": DIFF_SCHEMA_VERSION,
        "costguard_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": _run_summary(base, baseline.source, baseline.reason),
        "head": _run_summary(head, head_source),
        "stack": _get(hdata, "stack", "name"),
        "changed": bool(changed),
        "estimated": bool(t_h.get("estimated", False) or (t_b or {}).get("estimated", False)),
        "totals": totals,
        "tiers": tiers,
        "suites": suites,
        "cache": _cache(bdata, hdata, has_base),
        "routing": _routing(bdata, hdata, has_base),
        "quality": _quality(bdata, hdata, has_base),
        "counterfactual": cf,
        "fixtures": fixtures,
        "policy": None,
    }
    return DiffReport(data)


class DiffReport:
    """A diff: `model` is what renderers read (typed, `costguard.compare.model`); `data` is its
    JSON form, which is what gets written."""

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path
        self._model: DiffReportModel | None = None

    @property
    def model(self) -> DiffReportModel:
        """The typed diff (validated once; again after `attach_policy`)."""
        if self._model is None:
            self._model = DiffReportModel.model_validate(self.data)
        return self._model

    @property
    def has_baseline(self) -> bool:
        return bool(self.data["base"]["available"])

    @property
    def changed(self) -> bool:
        return bool(self.data["changed"])

    @property
    def totals(self) -> dict[str, Any]:
        return self.data["totals"]

    @property
    def monthly_cost(self) -> dict[str, Any]:
        return self.data["totals"]["cost_per_month"]

    @property
    def policy(self) -> dict[str, Any] | None:
        return self.data.get("policy")

    @property
    def verdict(self) -> str | None:
        policy = self.policy
        return policy.get("verdict") if policy else None

    def attach_policy(self, result: dict[str, Any]) -> None:
        """Record the policy verdicts (PolicyResult.to_dict()) so renderers need nothing else."""
        self.data["policy"] = result
        self._model = None

    def to_json(self) -> str:
        """Indented JSON with one compact line per changed fixture (fast and diffable at 100k)."""
        return json_with_compact_rows(self.data, ("fixtures", "items"))

    def write(self, path: str | Path) -> Path:
        self.path = write_atomic(path, self.to_json())
        return self.path


DIFF_REQUIRED_KEYS = ("schema_version", "base", "head", "totals", "tiers", "suites", "fixtures")


def load_diff(path: str | Path) -> DiffReport:
    data = load_document(
        path,
        kind="diff",
        what="DiffReport",
        required=DIFF_REQUIRED_KEYS,
        schema_major=DIFF_SCHEMA_MAJOR,
        missing_hint="write one with `costguard diff ... --out FILE`",
    )
    diff = DiffReport(data, Path(path))
    try:
        diff.model  # noqa: B018 - validate now: a bad diff is bad input, named with its key
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "DiffReport"), file=path) from None
    return diff
