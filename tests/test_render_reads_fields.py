"""Renderers format the report's fields; they never compute a figure of their own.

- The live replay table shows `vllm bench serve`'s millisecond figures as milliseconds (it once
  printed every latency 1000x too large: 35.2 ms as "35,200.0 ms"), rendered from a real live
  run against the vLLM double.
- The terminal and Markdown renderers, fed a report whose every number is a distinct sentinel,
  print only numbers that the formatter makes of those sentinels.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from costguard.compare.diff import DiffReport
from costguard.render.markdown import render
from costguard.render.terminal import print_diff, print_run, replay_tables
from costguard.report import format as fmt
from costguard.report.run_report import RunReport, load_report
from tests.conftest import run_cli
from tests.doubles.fake_vllm import FakeVLLM
from tests.test_live_backend import configure

GOLDEN = Path(__file__).parent / "golden"


def _text(renderables: list[Any]) -> str:
    console = Console(width=250, record=True, color_system=None, file=io.StringIO())
    for r in renderables:
        console.print(r)
    return console.export_text()


def test_live_replay_table_shows_milliseconds_as_milliseconds(project_dir: Path) -> None:
    # each streamed token comes 30 ms after the last: TTFT and TPOT are about 30 ms, not 30,000
    small = FakeVLLM("test/small-8b", ttft_s=0.03, tpot_s=0.03).start_in_thread()
    large = FakeVLLM("test/large-70b", ttft_s=0.03, tpot_s=0.03).start_in_thread()
    try:
        configure(project_dir, small.base_url, large.base_url)
        live = run_cli("run", "--backend", "endpoint", "-o", "live.json", cwd=project_dir)
    finally:
        small.stop()
        large.stop()
    assert live.returncode == 0, live.stderr
    report = load_report(project_dir / "live.json")
    replay = report.model.replay
    assert replay is not None
    latency = replay.latency["all"]
    assert latency.mean_ttft_ms is not None and 25 <= latency.mean_ttft_ms < 1000
    text = _text(replay_tables(report))
    row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("all "))
    cells = re.findall(r"([\d,]+\.\d) ms", row)
    assert len(cells) == 7, row
    assert cells[0] == f"{latency.mean_ttft_ms:,.1f}", row  # the field, as milliseconds
    assert all(float(c.replace(",", "")) < 1000 for c in cells), row
    # the same run through the CLI's renderer
    assert fmt.duration_ms(latency.mean_ttft_ms) in live.stdout


def _sentinels(data: Any, counter: list[int]) -> Any:
    """Every number in `data` replaced by a distinct value (same sign, kind and range class)."""
    if isinstance(data, bool) or data is None or isinstance(data, str):
        return data
    if isinstance(data, dict):
        return {k: _sentinels(v, counter) for k, v in data.items()}
    if isinstance(data, list):
        return [_sentinels(v, counter) for v in data]
    counter[0] += 1
    n = counter[0]
    if isinstance(data, int):
        return 100 + n
    # fractions stay fractions (shares, rates), others get a distinct non-round value
    return (
        (0.1 + n / 10_000) if 0 < abs(data) <= 1 else (1000.0 + 7.3 * n) * (1 if data >= 0 else -1)
    )


def _formatted(data: Any) -> set[str]:
    """Every way the formatter writes every number in `data`."""
    out: set[str] = set()
    if isinstance(data, dict):
        for v in data.values():
            out |= _formatted(v)
    elif isinstance(data, list):
        for v in data:
            out |= _formatted(v)
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        v = float(data)
        for f in (
            fmt.money, fmt.money_delta, fmt.percent, fmt.percentage, fmt.percent_change,
            fmt.points, fmt.tokens, fmt.count, fmt.count_delta, fmt.duration_ms, fmt.duration_s,
        ):  # fmt: skip
            out.add(f(v))
            out.add(f(abs(v)))
        for unit in ("usd", "usd_delta", "ratio", "pct", "points", "tokens", "seconds", "count"):
            out.add(fmt.format_value(v, unit))
        out.add(f"{v:g}")
        out.add(f"{v:.1f}")
        out.add(f"{v:.2f}")
    return out


NUMBER = re.compile(r"[+\-−±]?\$?\d(?:[\d,]*\d)?(?:\.\d+)?(?:[kMB%]| pts| ms)?")


def _numbers(text: str) -> set[str]:
    return {m.group(0).replace("−", "-") for m in NUMBER.finditer(text)}


def _explained(number: str, allowed: set[str]) -> bool:
    plain = number.lstrip("+-±")
    return any(number in a or plain in a for a in allowed)


def _check_only_fields(text: str, data: Any, also: set[str] = frozenset()) -> None:
    allowed = {a.replace("−", "-") for a in _formatted(data)} | set(also)
    strays = sorted(n for n in _numbers(text) if not _explained(n, allowed))
    assert not strays, f"numbers the renderer computed itself: {strays[:10]}"


@pytest.fixture(scope="module")
def head_report() -> dict[str, Any]:
    return json.loads((GOLDEN / "run_head.json").read_text())


def test_terminal_run_renderer_prints_only_the_reports_numbers(head_report: dict) -> None:
    data = _sentinels({k: v for k, v in head_report.items() if k != "timing"}, [0])
    data["timing"] = {}
    report = RunReport(data)
    console = Console(width=300, record=True, color_system=None, file=io.StringIO())
    print_run(report, console)
    text = console.export_text()
    assert fmt.money(report.model.totals.cost_per_month) in text
    # numbers in user-facing names and the config's own text (model ids, GPU names) are words
    words = {"$0.00"}  # the "(cache)" row: a cache hit costs nothing
    _check_only_fields(text, data, words | _numbers(json.dumps(data["stack"])))


@pytest.mark.parametrize("name", ["regression", "no_baseline"])
def test_terminal_and_markdown_diff_renderers_print_only_the_diffs_numbers(name: str) -> None:
    raw = json.loads((GOLDEN / f"diff_{name}.json").read_text())
    data = _sentinels(raw, [0])
    diff = DiffReport(data)
    console = Console(width=300, record=True, color_system=None, file=io.StringIO())
    print_diff(diff, console)
    terminal = console.export_text()
    markdown = render(diff)
    assert fmt.money(diff.model.totals.cost_per_month.head) in terminal
    # rule names, limits and messages are policy text (written by the policy engine, not here);
    # file:line locations and the fixed parts of the template are words
    words = _numbers(json.dumps(data["policy"])) | _numbers(
        json.dumps([f.get("location") for f in data["fixtures"]["items"]])
    )
    words |= _numbers(data["base"]["source"] + data["head"]["source"])
    words |= {
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "10",
        "50",
        "80",
        "100",
        "200",
        "11",
    }
    _check_only_fields(terminal, data, words)
    _check_only_fields(markdown, data, words)


def test_published_report_schemas_accept_the_goldens_and_refuse_a_broken_report(
    tmp_path: Path,
) -> None:
    import jsonschema

    out = run_cli("schema", "-o", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_schema = json.loads((tmp_path / "run-report.schema.json").read_text())
    diff_schema = json.loads((tmp_path / "diff-report.schema.json").read_text())
    run = json.loads((GOLDEN / "run_head.json").read_text())
    run["timing"] = {}
    jsonschema.validate(run, run_schema)
    for name in ("regression", "no_baseline"):
        jsonschema.validate(json.loads((GOLDEN / f"diff_{name}.json").read_text()), diff_schema)
    broken = {**run, "totals": {**run["totals"], "cost_per_month": "a lot"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, run_schema)


def test_a_report_that_breaks_the_model_is_refused_with_its_key(tmp_path: Path) -> None:
    run = json.loads((GOLDEN / "run_head.json").read_text())
    run["timing"] = {}
    run["tiers"]["small"]["cost_per_month"] = "a lot"
    (tmp_path / "bad.json").write_text(json.dumps(run))
    (tmp_path / "p.yaml").write_text("rules:\n  spend: {metric: monthly_spend, max: 10}\n")
    out = run_cli("check", "bad.json", "--policy", "p.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "tiers.small.cost_per_month" in out.stderr and "Traceback" not in out.stderr
