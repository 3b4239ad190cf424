"""The terminal output a person reads: the answer on the first screen, nothing cut at 100 columns,
every acronym defined, no percentage over zero events, and the same "why" as the Markdown diff."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from costguard.compare.model import DiffReportModel
from costguard.render import markdown
from costguard.render.terminal import print_check, print_diff, print_run
from costguard.report.run_report import load_report
from tests.conftest import REPO, run_cli

GOLDEN = Path(__file__).parent / "golden"


def render(fn, *args, width: int = 100, **kwargs) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    fn(*args, console=console, **kwargs)
    return console.export_text()


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`costguard run` on the bundled example at 100 columns: its stdout and its report."""
    out = tmp_path_factory.mktemp("run") / "report.json"
    proc = run_cli("run", "--out", str(out), cwd=REPO, env={"COLUMNS": "100"}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, out


def test_run_leads_with_spend_saving_estimate_note_and_warnings(bundled: tuple[str, Path]) -> None:
    stdout, path = bundled
    first = stdout.splitlines()[:15]
    head = "\n".join(first)
    report = json.loads(path.read_text())
    assert first[0].startswith("costguard offline projection of stack cairnway-assistant")
    assert head.count("Projected monthly spend: $") == 1
    assert "Saving: $" in head and "for everything on the largest tier (large)" in head
    assert "* estimated: " in head
    assert "not gated" in stdout[: stdout.index("Details")]  # says where the verdict comes from
    # every warning of the report starts within the first screen
    for warning in report["warnings"]:
        assert f"warning: {warning[:40]}" in head.replace("\n", " ")
    assert "Details" in stdout and stdout.index("Details") > stdout.index("warning: ")


def test_run_at_100_columns_cuts_nothing_and_defines_its_terms(bundled: tuple[str, Path]) -> None:
    stdout, _ = bundled
    lines = stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" not in stdout
    for term in ("PGR (performance gap recovered)", "APGR = ", "CPT(x%) = "):
        assert term in stdout.replace("\n", " ")
    assert not re.search(r"\bAPC\b", stdout) and "vLLM automatic" in stdout
    # the cascade says how confidence was estimated, without the fitted formula
    assert "logistic fit of the router score" in stdout.replace("\n", " ")
    assert "exp(" not in stdout
    # before/after-cache shares are labelled
    assert "by the tier that answers them (after caches and cascade)" in stdout
    assert "as routed, before caches and cascade" in stdout.replace("\n", " ")


def test_rates_over_zero_events_are_not_percentages(bundled: tuple[str, Path]) -> None:
    stdout, path = bundled
    report = load_report(path)
    semantic = report.get("cache")["semantic"]
    assert semantic["hits"] == 0  # the shipped threshold serves nothing on the bundled example
    assert "false-hit rate n/a" in stdout.replace("\n", " ")
    shipped = next(row for row in semantic["sweep"] if row["shipped"])
    assert shipped["hits"] == 0
    sweep = stdout[stdout.index("threshold sweep") :]
    row = next(line for line in sweep.splitlines() if "(shipped)" in line)
    assert row.rstrip(" │").endswith("n/a")


def test_summary_prints_only_the_answer(bundled: tuple[str, Path]) -> None:
    _, path = bundled
    report = load_report(path)
    full = render(print_run, report)
    summary = render(print_run, report, details=False)
    assert full.startswith(summary.rstrip("\n"))
    assert "Tiers" not in summary and "Routing against baselines" not in summary
    assert "Projected monthly spend" in summary


def test_terminal_diff_has_the_markdown_why_column_and_leads_with_the_verdict() -> None:
    diff = DiffReportModel.model_validate(json.loads((GOLDEN / "diff_regression.json").read_text()))
    out = render(print_diff, diff, width=160)
    lines = out.splitlines()
    assert lines[0].startswith("Projected monthly spend +$")
    assert lines[1].startswith("Verdict: ")
    assert out.index("Verdict: ") < out.index("Tiers")
    comment = markdown.render_comment(diff)
    for why in ("new fixture", "traffic share", "prompt changed", "fixture removed"):
        assert why in comment and why in out
    movers = out[out.index("Top movers") :]
    assert "why" in movers.splitlines()[2]


def _mover_with_every_reason(prompt_changed: bool = False) -> dict[str, Any]:
    """diff_regression.json with one changed fixture, the only top mover, moved for many reasons."""
    raw = json.loads((GOLDEN / "diff_regression.json").read_text())
    changed = next(f for f in raw["fixtures"]["items"] if f["status"] == "changed")
    changed["prompt_changed"] = prompt_changed or changed["prompt_changed"]
    changed["templates_changed"] = ["prompts/support.j2"]
    changed["served_by"] = {"base": "small", "head": "large"}
    changed["cached_tokens"] = {"base": 1200, "head": 0, "delta": -1200, "delta_pct": -100.0}
    raw["fixtures"]["top_movers"] = [changed["id"]]
    return raw


def test_terminal_and_markdown_give_the_same_why_from_one_set_of_rules() -> None:
    # The terminal once missed two of the comment's reasons (a changed template, prefix-cached
    # tokens) and so said "traffic share" where the comment named the template; both now read
    # costguard.render.why and differ only in typography (arrow, inert Markdown, links).
    raw = _mover_with_every_reason()
    diff = DiffReportModel.model_validate(raw)
    expected = (
        "template prompts/support.j2 changed; served by small -> large; "
        "prefix-cached tokens 1,200 -> 0"
    )
    assert expected in " ".join(render(print_diff, diff, width=400).split())
    comment = markdown.render_comment(diff)
    assert expected.replace("->", "→").replace("_", "&#95;") in comment
    assert "traffic share" not in comment


def test_check_prints_the_verdict_before_the_table() -> None:
    diff = json.loads((GOLDEN / "diff_regression.json").read_text())
    out = render(print_check, diff["policy"])
    assert out.startswith("Verdict: ")
    assert out.index("Verdict: ") < out.index("Policy ")


def test_readme_routing_figures_are_what_the_bundled_run_reports(bundled: tuple[str, Path]) -> None:
    """README's routing table and prose are checked against the bundled run, so they cannot drift."""
    _, path = bundled
    report = json.loads(path.read_text())
    readme = (REPO / "README.md").read_text()
    rows = {
        "complexity router (bundled config)": "router",
        "length router, same shares": "length",
        "random router, same shares (expected)": "random",
        "everything on large": "all_largest",
        "everything on small": "all_smallest",
    }
    baselines = report["routing"]["comparison"]["baselines"]

    def pct(value: float | None, digits: int = 1) -> str:
        if value is None:
            return ""
        text = f"{100 * value:.{digits}f}%"
        return text.replace(".0%", "%") if value in (0.0, 1.0) else text

    for label, key in rows.items():
        b = baselines[key]
        expected = [
            f"${b['cost_per_month']:,.0f}",
            pct(b["quality"]),
            pct(b["pgr"]),
            pct(b.get("apgr")),
            pct(b.get("cpt50")),
            pct(b.get("cpt80")),
        ]
        line = next(row for row in readme.splitlines() if row.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        # APGR and CPT rank requests by router score, which comes from float32 embeddings whose
        # last bits depend on the CPU's vector kernels: between machines they may move by a
        # tenth of a point (README says so). Everything else is the same on every machine.
        assert cells[:3] == expected[:3], (label, cells, expected)
        for got, want in zip(cells[3:], expected[3:], strict=True):
            assert (got == "") == (want == ""), (label, cells, expected)
            if got:
                assert abs(float(got.rstrip("%")) - float(want.rstrip("%"))) <= 0.25, (
                    label, cells, expected,
                )  # fmt: skip
    router = baselines["router"]
    assert f"large-tier share {100 * router['strong_share']:.1f}%" in readme
    escalation = report["routing"]["escalation"]
    total = report["totals"]["cost_per_month"]
    largest = report["counterfactual"]["cost_per_month"]
    prose = " ".join(readme.split())
    assert (
        f"{100 * escalation['rate']:.1f}% of requests escalated from small to large, "
        f"+${escalation['cost_per_month']:,.0f}/month" in prose
    )
    assert f"the projected spend is ${total:,.0f}/month against ${largest:,.0f}" in prose
    assert f"buys {100 * router['pgr']:.1f}% of the quality gap" in prose


def test_html_gives_the_same_why_as_the_terminal_from_one_set_of_rules() -> None:
    # The HTML page once had its own copy of the rules (templates before "prompt changed", and a
    # "same route and tokens" fallback); it now reads costguard.render.why like the others.
    from costguard.render.html.sections import movers_section
    from costguard.render.links import NO_LINKS

    raw = _mover_with_every_reason(prompt_changed=True)
    diff = DiffReportModel.model_validate(raw)
    expected = (
        "prompt changed; template prompts/support.j2 changed; served by small -> large; "
        "prefix-cached tokens 1,200 -> 0"
    )
    assert expected in " ".join(render(print_diff, diff, width=400).split())
    rows = movers_section(raw, True, NO_LINKS)["rows"]
    assert "; ".join(rows[0]["reasons"]) == expected.replace("->", "→")
