"""The HTML report: sections from the JSON alone, escaping, links, the CLI, and a real browser.

The browser tests open the pages in headless Chromium (Debian's package) over the DevTools
protocol, fail on any console error, exception or failed load, check that every plot drew, and
save full-page screenshots under test-artifacts/html-report/ (or $COSTGUARD_TEST_ARTIFACTS).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from costguard import api
from costguard.render.html import render_html
from costguard.render.links import EvidenceLinks
from tests import browser
from tests.conftest import REPO, run_cli, write

ARTIFACTS = (
    Path(os.environ.get("COSTGUARD_TEST_ARTIFACTS") or REPO / "test-artifacts") / "html-report"
)
SHARED_CACHE = REPO / ".costguard" / "cache"
SECTIONS = ("headline", "spend", "movers", "routing", "caches", "quality", "frontier", "live")
SIZE_LIMIT = 2 * 1024 * 1024

# Run in the page: per section, its plots (size and how many shapes and texts each drew) and
# whether it says that data is missing.
PROBE = """
JSON.stringify(Array.from(document.querySelectorAll('main > section')).map(s => ({
  id: s.id,
  missing: Array.from(s.querySelectorAll('.missing')).map(p => p.textContent.trim()),
  svgs: Array.from(s.querySelectorAll('figure > svg')).map(svg => {
    const box = svg.getBoundingClientRect();
    return {w: box.width, h: box.height,
            shapes: svg.querySelectorAll('path, rect, use, polygon, polyline, line').length,
            texts: Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim()).length};
  })
})))
"""


def sections_in_browser(page: Path, shot: str, *, docs: Path | None = None) -> dict[str, Any]:
    result = browser.open_page(page, PROBE, width=1100, top_height=2200 if docs else 0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / shot).write_bytes(result.screenshot)
    if docs is not None:  # the README's picture, refreshed on request
        docs.write_bytes(result.top)
    assert result.errors == [], f"{page.name}: {result.errors}"
    assert result.screenshot.startswith(b"\x89PNG")
    sections = {s["id"]: s for s in json.loads(result.value)}
    assert list(sections) == list(SECTIONS)
    for name, s in sections.items():
        assert s["svgs"] or s["missing"] or name == "headline", f"section {name} shows nothing"
        for svg in s["svgs"]:
            assert svg["w"] > 200 and svg["h"] > 80, f"{name}: plot not laid out: {svg}"
            assert svg["shapes"] >= 5 and svg["texts"] >= 3, f"{name}: empty plot: {svg}"
    return sections


@pytest.fixture
def bundled_copy(tmp_path: Path) -> Path:
    """The bundled example in a temporary directory (fixtures copied: the test edits a template)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(REPO / "fixtures", project / "fixtures")
    for name in ("policies", "tokenizers"):
        (project / name).symlink_to(REPO / name, target_is_directory=True)
    (project / "costguard.yaml").write_text(
        (REPO / "costguard.yaml").read_text()
        + f"cache_dir: {json.dumps(str(SHARED_CACHE))}\n"
        + f"allowed_paths: [{json.dumps(str(REPO))}]\n"  # the symlinks lead into the repository
    )
    return project


def gh_env(sha: str = "0123456789abcdef0123456789abcdef01234567") -> dict[str, str]:
    return {
        "GITHUB_SERVER_URL": "https://github.example.com",
        "GITHUB_REPOSITORY": "acme/llm-stack",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_SHA": sha,
        "COSTGUARD_ARTIFACT_URL": "https://github.example.com/acme/llm-stack/actions/runs/4242/artifacts/99",
        "COSTGUARD_ARTIFACT_NAME": "costguard-default",
    }


@pytest.mark.slow
@pytest.mark.skipif(browser.chromium() is None, reason=browser.SKIP_REASON)
def test_bundled_report_and_diff_open_in_chromium_with_every_section_drawn(
    bundled_copy: Path,
) -> None:
    project = bundled_copy
    env = {**gh_env(), "GITHUB_WORKSPACE": str(project.parent)}
    base = run_cli(
        "run", "--out", "base.json", "--html", "run.html", "-q", cwd=project, timeout=600
    )
    assert base.returncode == 0, base.stderr
    # the change under review: a longer coding template and a lower large-tier threshold
    template = project / "fixtures" / "templates" / "code_request.j2"
    template.write_text(
        "You are reviewing production code. Explain each change and its risks.\n"
        + template.read_text()
    )
    config = project / "costguard.yaml"
    config.write_text(
        config.read_text().replace(
            "{max_score: 3.6, tier: quantized}", "{max_score: 3.0, tier: quantized}"
        )
    )
    head = run_cli("run", "--out", "head.json", "-q", cwd=project, timeout=600)
    assert head.returncode == 0, head.stderr
    diff = run_cli(
        "diff", "base.json", "head.json", "--policy", "policies/default.yaml", "--out", "diff.json",
        "--html", "diff.html", cwd=project, env=env, timeout=600,
    )  # fmt: skip
    assert diff.returncode == 0, diff.stderr
    assert "HTML report written to diff.html" in diff.stderr

    run_page, diff_page = project / "run.html", project / "diff.html"
    for page in (run_page, diff_page):
        size = page.stat().st_size
        assert size < SIZE_LIMIT, f"{page.name} is {size} bytes"
        text = page.read_text()
        assert "<script" not in text and 'http-equiv="Content-Security-Policy"' in text
    run_sections = sections_in_browser(run_page, "bundled-run.png")
    for name in ("spend", "movers", "routing", "caches"):
        assert run_sections[name]["svgs"], name
    assert len(run_sections["routing"]["svgs"]) == 4  # histogram, shares, baselines, PGR sweep
    assert len(run_sections["caches"]["svgs"]) == 3  # hit rates, $ saved, semantic sweep
    # the bundled example has no recorded responses, no frontier and no live run: it says so
    assert "no quality score was measured" in run_sections["quality"]["missing"][0]
    assert "costguard frontier" in run_sections["frontier"]["missing"][0]
    assert "no live replay" in run_sections["live"]["missing"][0]

    readme_shot = REPO / "docs" / "html-report.png"
    refresh = os.environ.get("COSTGUARD_UPDATE_SCREENSHOT") == "1"
    diff_sections = sections_in_browser(
        diff_page, "bundled-diff.png", docs=readme_shot if refresh else None
    )
    assert len(diff_sections["spend"]["svgs"]) == 2 and len(diff_sections["movers"]["svgs"]) == 1
    html = diff_page.read_text()
    data = json.loads((project / "diff.json").read_text())
    mover = next(f for f in data["fixtures"]["items"] if f.get("templates_changed"))
    assert mover["templates_changed"] == ["fixtures/templates/code_request.j2"]
    path, line = mover["location"].rsplit(":", 1)
    blob = "https://github.example.com/acme/llm-stack/blob/0123456789abcdef0123456789abcdef01234567/project"
    assert f'href="{blob}/{path}#L{line}"' in html
    assert f'href="{blob}/fixtures/templates/code_request.j2"' in html
    assert 'href="https://github.example.com/acme/llm-stack/actions/runs/4242"' in html

    # the same page from the JSON files alone
    again = run_cli(
        "report",
        "--html",
        "again.html",
        "diff.json",
        "--head",
        "head.json",
        "--base",
        "base.json",
        cwd=project,
    )
    assert again.returncode == 0, again.stderr
    sections_in_browser(project / "again.html", "bundled-diff-from-json.png")


@pytest.mark.skipif(browser.chromium() is None, reason=browser.SKIP_REASON)
def test_the_browser_check_catches_console_errors_and_failed_loads(tmp_path: Path) -> None:
    page = write(
        tmp_path / "bad.html",
        '<html><body><script>console.error("boom")</script><img src="missing.png"></body></html>',
    )
    result = browser.open_page(page)
    assert any("boom" in e for e in result.errors)
    assert any("missing.png" in e for e in result.errors)


def small_report(project_dir: Path) -> dict[str, Any]:
    return api.run(api.load_project(project_dir / "costguard.yaml")).data


HOSTILE = '<script>alert("x")</script></svg><img src=x onerror=alert(1)>$\\frac{a}{b}$'


def test_untrusted_names_are_escaped_in_the_page_and_in_the_plots(project_dir: Path) -> None:
    data = small_report(project_dir)
    for record in data["records"]:
        record["id"] = HOSTILE + record["id"]
    data["suites"][HOSTILE] = data["suites"].pop("support")
    data["warnings"].append(HOSTILE)
    html = render_html(data)
    assert (
        "<script" not in html
        and "<img" not in html
        and "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    )
    assert "&lt;script&gt;alert(" in html  # shown as text, in the table and in the SVG labels
    assert html.count("&lt;/svg&gt;") >= 2


def test_sections_say_what_the_report_lacks(project_dir: Path) -> None:
    data = small_report(project_dir)
    data.pop("quality", None)
    data["records"] = []
    data["routing"].pop("comparison", None)
    html = render_html(data)
    assert "the report has no fixture records" in html
    assert "no router scores in the report" in html
    assert "no fixture has quality assertions" in html
    assert "this report has no frontier" in html
    assert "no live replay" in html


def test_live_latency_distributions_and_frontier_are_drawn(project_dir: Path) -> None:
    data = small_report(project_dir)
    quantiles = {"count": 40, "mean": 120.0, "p1": 40.0, "p5": 50.0, "p10": 60.0, "p25": 80.0,
                 "p50": 110.0, "p75": 150.0, "p90": 190.0, "p95": 220.0, "p99": 300.0,
                 "p0": 35.0, "p100": 320.0}  # fmt: skip
    data["replay"] = {
        "concurrency": 4, "request_rate_per_s": None, "stream": True, "duration_s": 3.0,
        "requests": {"planned": 4, "answered_by_cache": 0, "sent": 4, "completed": 4, "failed": 0, "retries": 0},
        "request_throughput": 1.3, "input_throughput": 100.0, "output_throughput": 50.0,
        "latency": {"all": {"mean_ttft_ms": 100.0, "median_ttft_ms": 90.0, "p99_ttft_ms": 300.0}},
        "distribution": {t: {m: quantiles for m in ("ttft", "tpot", "itl", "e2el")} for t in ("small", "large")},
        "stopped": None,
    }  # fmt: skip
    variants = [
        {"name": "current", "description": "as configured", "cost_per_month": 900.0, "cost_estimated": False,
         "quality": 0.91, "latency_p95_s": 1.2, "on_frontier": True, "dominated_by": None, "verdict": "pass"},
        {"name": "only large", "description": "every request on large", "cost_per_month": 3000.0,
         "cost_estimated": True, "quality": 0.97, "latency_p95_s": 2.0, "on_frontier": True, "dominated_by": None},
        {"name": "no caches", "description": "caches off", "cost_per_month": 1100.0, "cost_estimated": False,
         "quality": 0.90, "latency_p95_s": 1.3, "on_frontier": False, "dominated_by": "current"},
    ]  # fmt: skip
    frontier = {"kind": "frontier", "objectives": [], "policy": "p.yaml", "recommended": "current",
                "frontier": ["current", "only large"], "notes": [], "variants": variants}  # fmt: skip
    html = render_html(data, frontier=frontier)
    for metric in ("TTFT", "TPOT", "ITL", "E2EL"):
        assert f"{metric}: box p25–p75" in html
    assert "chosen: current" in html and "non-dominated set" in html
    assert "hollow: cost estimated" in html


def test_links_are_built_from_the_environment_and_omitted_when_unknown() -> None:
    from costguard.integrations.actions import evidence_links

    links = evidence_links({**gh_env(), "GITHUB_WORKSPACE": "/ws"}, project_dir="/ws/stack")
    assert links.location("fixtures/a.yaml:12") == (
        "https://github.example.com/acme/llm-stack/blob/0123456789abcdef0123456789abcdef01234567/stack/fixtures/a.yaml#L12"
    )
    assert links.run_url == "https://github.example.com/acme/llm-stack/actions/runs/4242"
    assert links.artifact.endswith("/artifacts/99")
    none = evidence_links({})
    assert (
        none.location("fixtures/a.yaml:12") is None
        and none.run_url is None
        and none.artifact is None
    )
    # malformed parts are dropped, never linked
    odd = EvidenceLinks(server="javascript:alert(1)", repo="a/b", sha="zz", run_id="1;2")
    assert odd.run_url is None and odd.blob("x.yaml", 1) is None
    assert EvidenceLinks(server="https://g.io", repo="a/b", sha="abcdef1").blob("../x.yaml") is None
    by_name = EvidenceLinks(
        server="https://g.io", repo="a/b", run_id="7", artifact_name="costguard-x"
    )
    assert by_name.artifact == "https://g.io/a/b/actions/runs/7#artifacts"


def test_pr_comment_links_top_movers_and_footer_only_when_known(project_dir: Path) -> None:
    from costguard.compare.diff import Baseline
    from costguard.render.markdown import render_comment

    base = api.run(api.load_project(project_dir / "costguard.yaml"))
    fixtures = project_dir / "fixtures" / "support.yaml"
    fixtures.write_text(
        fixtures.read_text().replace("expect: {output_tokens: 500}", "expect: {output_tokens: 900}")
    )
    head = api.run(api.load_project(project_dir / "costguard.yaml"))
    diff, _ = api.compare(head, Baseline(report=base, source="base"))
    links = EvidenceLinks(server="https://github.com", repo="acme/s", sha="a" * 40, run_id="9",
                          artifact_url="https://github.com/acme/s/actions/runs/9/artifacts/5",
                          artifact_name="costguard-default")  # fmt: skip
    with_links = render_comment(diff, links=links)
    mover = diff.data["fixtures"]["items"][0]
    line = mover["location"].rsplit(":", 1)[1]
    assert (
        f"[refactor](https://github.com/acme/s/blob/{'a' * 40}/fixtures/support.yaml#L{line})"
        in with_links
    )
    assert "[workflow run](https://github.com/acme/s/actions/runs/9)" in with_links
    assert "(https://github.com/acme/s/actions/runs/9/artifacts/5)" in with_links
    plain = render_comment(diff)
    assert "](http" not in plain and "Evidence" not in plain


def test_report_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.json", '{"kind": "run", "schema_version": "1.0"}')
    result = run_cli("report", "--html", "out.html", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out.html").exists()
    broken = write(tmp_path / "broken.json", "{not json")
    result = run_cli("report", "--html", "out.html", str(broken), cwd=tmp_path)
    assert result.returncode == 2 and "broken.json" in result.stderr
    assert not (tmp_path / "out.html").exists()


def test_report_cli_renders_a_run_report_and_matplotlib_stays_lazy(project_dir: Path) -> None:
    report = api.run(api.load_project(project_dir / "costguard.yaml"))
    report.write(project_dir / "r.json")
    result = run_cli("report", "--html", "r.html", "r.json", cwd=project_dir)
    assert result.returncode == 0, result.stderr
    assert (project_dir / "r.html").read_text().startswith("<!DOCTYPE html>")
    lazy = subprocess.run(
        [sys.executable, "-c", "import sys, costguard.cli.main; assert 'matplotlib' not in sys.modules"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert lazy.returncode == 0, lazy.stderr


def test_html_is_deterministic(project_dir: Path) -> None:
    data = small_report(project_dir)
    assert render_html(copy.deepcopy(data)) == render_html(copy.deepcopy(data))


def test_a_live_run_draws_its_latency_distributions_per_tier(project_dir: Path) -> None:
    from tests.doubles.fake_vllm import FakeVLLM
    from tests.test_live_backend import configure

    small = FakeVLLM("test/small-8b", enable_prompt_tokens_details=True).start_in_thread()
    large = FakeVLLM("test/large-70b", enable_prompt_tokens_details=True).start_in_thread()
    try:
        configure(project_dir, small.base_url, large.base_url)
        live = run_cli(
            "run",
            "--backend",
            "endpoint",
            "-o",
            "live.json",
            "--html",
            "live.html",
            "-q",
            cwd=project_dir,
        )
    finally:
        small.stop()
        large.stop()
    assert live.returncode == 0, live.stderr
    report = json.loads((project_dir / "live.json").read_text())
    dist = report["replay"]["distribution"]
    assert set(dist) == {"all", "small", "large"}
    assert dist["small"]["e2el"]["count"] == 2 and dist["large"]["ttft"]["p50"] > 0
    html = (project_dir / "live.html").read_text()
    for metric in ("TTFT", "TPOT", "ITL", "E2EL"):
        assert f"{metric}: box p25–p75" in html
    assert "small (n=2)" in html and "large (n=1)" in html
    if browser.chromium() is not None:
        sections = sections_in_browser(project_dir / "live.html", "live-run.png")
        assert len(sections["live"]["svgs"]) == 4
