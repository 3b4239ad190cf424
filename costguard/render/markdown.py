"""Markdown rendering of a DiffReport: the PR comment and the GitHub job summary.

Both come from the DiffReport JSON alone, through jinja2 templates shipped in
`costguard/render/templates/`; this module only supplies formatting filters. Nothing is recomputed
here: every delta, percentage and verdict was computed by `costguard.compare.diff` / `costguard.policy.engine`.

Text that comes from the user's repository (suite, tier, fixture and rule names, file paths,
warnings, waiver reasons, git ref names) is untrusted: `md()` turns it into inert text, so it
cannot open HTML, close a `<details>`, fake our hidden marker, break a table or mention people.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from costguard.compare.diff import DiffReport
from costguard.compare.model import Change, DiffReportModel, FixtureChange, VerdictRecord
from costguard.render.links import NO_LINKS, EvidenceLinks
from costguard.render.why import change_reasons
from costguard.report import format as fmt

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MAX_TEXT = 200
"""Longest untrusted string shown in full; longer ones are cut with an ellipsis."""
MAX_FIXTURE_ROWS = 200
"""Rows of the collapsed "all changed fixtures" table; the rest are counted, not listed."""

# Characters that mean something to Markdown or HTML, written as entities: the rendered text is
# the same character, but no parser sees markup in it (inside tables too: no raw `|`).
_ENTITIES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "|": "&#124;",
    "*": "&#42;",
    "_": "&#95;",
    "`": "&#96;",
    "[": "&#91;",
    "]": "&#93;",
    "\\": "&#92;",
    "~": "&#126;",
    "#": "&#35;",
    "@": "@&#8203;",  # a zero-width space after @ keeps GitHub from turning it into a mention
}
_ESCAPE_RE = re.compile("[" + re.escape("".join(_ENTITIES)) + "]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_LIST_MARKER_RE = re.compile(r"^([-+*]|\d{1,9}[.)])(?=\s|$)")
_MERMAID_SAFE = re.compile(r"[^A-Za-z0-9 ._:/+-]")


def md(value: Any, limit: int = MAX_TEXT) -> str:
    """Untrusted text as inert Markdown on one line (no HTML, links, emphasis, mentions, tables)."""
    if value is None:
        return ""
    text = _CONTROL_RE.sub(" ", str(value)).replace("\r", " ").replace("\n", " ").replace("\t", " ")
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = _ESCAPE_RE.sub(lambda m: _ENTITIES[m.group(0)], text)
    # "- x", "+ x" or "1. x" would start a list where the text opens a line (e.g. a list item)
    return _LIST_MARKER_RE.sub(lambda m: m.group(1)[:-1] + f"&#{ord(m.group(1)[-1])};", text)


def mermaid_label(value: Any) -> str:
    """A name as a Mermaid string literal's content: only harmless characters survive."""
    return _MERMAID_SAFE.sub("?", str(value))[:40]


def _typeset(text: str) -> str:
    """The formatter's plain text in the comment's typography: Unicode minus, em dash for n/a."""
    return "—" if text == fmt.MISSING else text.replace("-", "−")


def usd(value: float | None, estimated: bool = False) -> str:
    return _typeset(fmt.money(value)) + ("\\*" if estimated and value is not None else "")


def usd_delta(value: float | None) -> str:
    return _typeset(fmt.money_delta(value))


def pct_delta(value: float | None) -> str:
    return _typeset(fmt.percent_change(value))


def rate(value: float | None) -> str:
    return _typeset(fmt.percent(value))


def points(value: float | None) -> str:
    """A change of a rate (0..1) in percentage points."""
    return _typeset(fmt.points(value))


def count(value: float | None) -> str:
    """Tokens or requests, compact (1.2M, 35.0k, 812)."""
    return _typeset(fmt.tokens(value))


def integer(value: float | None) -> str:
    """An exact count (tokens per request, fixtures): 2,538."""
    return _typeset(fmt.count(value))


def count_delta(value: float | None) -> str:
    return _typeset(fmt.count_delta(value))


def arrow(block: Change | None, kind: str = "usd") -> str:
    """`base → head` of a changed figure, or just the value when it did not change."""
    if block is None:
        return "—"
    show = _FORMATS[kind]
    base, head = block.base, block.head
    if base is None or head is None or not block.delta:
        return show(head if head is not None else base)
    return f"{show(base)} → {show(head)}"


_FORMATS: dict[str, Callable[[float | None], str]] = {
    "usd": usd,
    "rate": rate,
    "count": count,
    "int": integer,
}


def verdict_value(verdict: VerdictRecord) -> str:
    """A policy verdict's measured value in its metric's unit (estimates marked)."""
    if verdict.actual is None:
        return "—"
    return md(_typeset(fmt.format_value(verdict.actual, verdict.unit))) + (
        "\\*" if verdict.estimated else ""
    )


def why(f: FixtureChange, links: EvidenceLinks) -> str:
    """A top mover's "why" cell: the rules of `costguard.render.why` (the terminal's too) in the
    comment's typography, each changed template linked to its file where `links` know the commit."""

    def template(path: str) -> str:
        url = links.blob(path)
        return f"[{md(path)}]({url})" if url else md(path)

    return "; ".join(change_reasons(f, name=md, arrow="→", count=integer, template=template))


def status_icon(status: str) -> str:
    return {"pass": "✅", "warn": "⚠️", "fail": "❌", "skip": "⏭️"}.get(status, "❔")


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,  # Markdown, not HTML: untrusted values go through the `md` filter
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(
        md=md,
        usd=usd,
        usd_delta=usd_delta,
        pct_delta=pct_delta,
        rate=rate,
        points=points,
        count=count,
        count_delta=count_delta,
        integer=integer,
        arrow=arrow,
        icon=status_icon,
        verdict_value=verdict_value,
        why=why,
        mermaid=mermaid_label,
    )
    return env


def render(
    diff: DiffReport | DiffReportModel,
    *,
    context: str = "comment",
    tag: str = "default",
    links: EvidenceLinks | None = None,
) -> str:
    """The Markdown for a DiffReport (its typed model is all the template sees). `context`: "comment" (PR comment) or "summary" (job summary); `links` lead to the evidence (fixture lines, run, artifact) where known.

    The comment's hidden marker is not part of this text: `costguard.integrations.github.compose_body` adds it.
    """
    if not isinstance(diff, (DiffReport, DiffReportModel)):
        raise TypeError(
            f"render() takes a DiffReport or DiffReportModel, not {type(diff).__name__}"
        )
    if context not in ("comment", "summary"):
        raise ValueError(f"unknown markdown context {context!r}")
    template = _environment().get_template("comment.md.j2")
    text = template.render(
        diff=diff.model if isinstance(diff, DiffReport) else diff,
        context=context,
        tag=tag,
        max_fixture_rows=MAX_FIXTURE_ROWS,
        links=links or NO_LINKS,
    )
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_comment(
    diff: DiffReport | DiffReportModel, *, tag: str = "default", links: EvidenceLinks | None = None
) -> str:
    return render(diff, context="comment", tag=tag, links=links)


def render_summary(
    diff: DiffReport | DiffReportModel, *, links: EvidenceLinks | None = None
) -> str:
    return render(diff, context="summary", links=links)
