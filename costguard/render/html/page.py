"""The HTML report page: one self-contained file with plots, from a RunReport or DiffReport JSON alone.

`render_html(data, ...)` reads the report dict (and, for a diff, the head and base RunReports when
they are at hand: the routing histogram, semantic sweep and latency distributions need records
that a DiffReport does not keep) and returns the page: inline CSS, inline SVG plots
(`costguard.render.plots`, matplotlib, imported only here), no JavaScript, and a
Content-Security-Policy that forbids every network load, so it opens offline from a CI artifact.

Every string from the user's repository goes through jinja2's autoescape (fixture ids, suite and
tier names, reasons, warnings) and matplotlib's own XML escaping inside the SVGs. Nothing is
recomputed: figures are read from the report; a section whose data the report lacks says so.
"""

from __future__ import annotations

import datetime as _dt
from functools import lru_cache
from pathlib import Path
from typing import Any

from costguard.render.html.format import money, ms, num, verdict_value
from costguard.render.html.routing import cache_section, routing_section
from costguard.render.html.sections import (
    frontier_section,
    live_section,
    movers_section,
    quality_section,
    spend_section,
)
from costguard.render.links import NO_LINKS, EvidenceLinks
from costguard.render.markdown import count, integer, pct_delta, points, rate, usd_delta

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
FILTERS: dict[str, Any] = {
    "usd": money,
    "usd_delta": usd_delta,
    "pct_delta": pct_delta,
    "rate": rate,
    "points": points,
    "count": count,
    "integer": integer,
    "ms": ms,
    "num": num,
    "verdict_value": verdict_value,
}
"""The template's filters: the page's money (no `md` escaping: autoescape does it) and the
comment's other formatters."""


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,  # HTML: every value is escaped unless marked safe (our SVGs)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def _headline(data: dict[str, Any], diff: bool) -> dict[str, Any]:
    if diff:
        cost = data["totals"]["cost_per_month"]
        est = data["totals"].get("estimated") or {}
        policy = data.get("policy")
        return {
            "diff": True,
            "has_base": data["base"]["available"],
            "base_reason": data["base"].get("reason"),
            "base_source": data["base"].get("source"),
            "head_source": data["head"].get("source"),
            "base_cost": money(cost.get("base"), bool(est.get("base"))),
            "head_cost": money(cost.get("head"), bool(est.get("head"))),
            "delta": usd_delta(cost.get("delta")),
            "delta_pct": pct_delta(cost.get("delta_pct")),
            "up": (cost.get("delta") or 0) > 0,
            "requests": count(data["totals"]["requests_per_month"].get("head")),
            "fixtures": data.get("fixtures") or {},
            "verdicts": (policy or {}).get("verdicts") or [],
            "policy": policy,
            "warnings": (data.get("head") or {}).get("warnings") or [],
            "incomplete": [
                (side, data[side].get("incomplete_reason"))
                for side in ("base", "head")
                if data[side].get("available") and not data[side].get("complete", True)
            ],
        }
    totals = data.get("totals") or {}
    cf = data.get("counterfactual") or {}
    return {
        "diff": False,
        "head_cost": money(totals.get("cost_per_month"), bool(totals.get("estimated"))),
        "requests": count(totals.get("requests_per_month")),
        "fixtures_n": totals.get("fixtures"),
        "per_request": money(
            (totals.get("cost_per_request") or {}).get("mean"), bool(totals.get("estimated"))
        ),
        "counterfactual": cf,
        "cf_cost": money(cf.get("cost_per_month"), bool(totals.get("estimated"))),
        "cf_saving": money(cf.get("saving_per_month"), bool(totals.get("estimated"))),
        "estimated_share": totals.get("estimated_share"),
        "verdicts": [],
        "policy": None,
        "warnings": data.get("warnings") or [],
        "incomplete": []
        if data.get("complete", True)
        else [("run", data.get("incomplete_reason"))],
    }


def render_html(
    data: dict[str, Any],
    *,
    head: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    frontier: dict[str, Any] | None = None,
    links: EvidenceLinks | None = None,
) -> str:
    """The report page for a RunReport dict (`data["kind"] == "run"`) or a DiffReport dict.

    For a diff, `head` (and `base`) are the RunReports it was made from, when at hand; `frontier`
    is `costguard frontier --format json`'s output; `links` point at the evidence.
    """
    kind = data.get("kind")
    if kind not in ("run", "diff"):
        raise ValueError(f"not a RunReport or DiffReport (kind {kind!r})")
    diff = kind == "diff"
    run = head if diff else data
    links = links or NO_LINKS
    sections = {
        "spend": spend_section(data, diff),
        "movers": movers_section(data, diff, links),
        "routing": routing_section(run, data, diff),
        "cache": cache_section(run, data, diff),
        "quality": quality_section(run, data, diff),
        "frontier": frontier_section(frontier, run),
        "live": live_section(run),
    }
    stack = data.get("stack")
    title_stack = stack.get("name") if isinstance(stack, dict) else stack
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            kind=kind,
            data=data,
            run=run,
            base_run=base,
            title_stack=title_stack or "stack",
            headline=_headline(data, diff),
            s=sections,
            links=links,
            generated=data.get("created_at")
            or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            version=data.get("costguard_version"),
        )
    )


def write_html(path: str | Path, text: str) -> None:
    """Write the page atomically: a reader never sees half a file."""
    import os
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
