"""DiffReport: base/head/delta at total, tier, suite and fixture level, from real projections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costguard import api
from costguard.compare.diff import Baseline, change, diff_reports, load_diff
from costguard.errors import ConfigError
from costguard.report.run_report import RunReport


def _run(project_dir: Path) -> RunReport:
    return api.run(api.load_project(project_dir / "costguard.yaml"))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_change_block() -> None:
    assert change(10.0, 12.5) == {"base": 10.0, "head": 12.5, "delta": 2.5, "delta_pct": 25.0}
    assert change(0.0, 3.0)["delta_pct"] is None  # no percentage of nothing
    assert change(None, 3.0) == {
        "base": None,
        "head": 3.0,
        "delta": 3.0,
        "delta_pct": None,
    }  # added
    assert change(2.0, None)["delta"] == -2.0  # removed
    assert change(0.1 + 0.2, 0.3)["delta"] == 0.0  # float noise is not a change


def test_identical_runs_have_no_change(project_dir: Path) -> None:
    base = _run(project_dir)
    head = _run(project_dir)
    diff = diff_reports(Baseline(base, "file base.json"), head)
    assert diff.changed is False
    assert diff.data["fixtures"]["unchanged"] == 4 and diff.data["fixtures"]["items"] == []
    assert diff.monthly_cost["delta"] == 0.0 and diff.monthly_cost["delta_pct"] == 0.0
    assert all(t["status"] == "unchanged" for t in diff.data["tiers"].values())


def test_prompt_edit_moves_exactly_that_fixture(project_dir: Path) -> None:
    base = _run(project_dir)
    _edit(
        project_dir / "fixtures" / "support.yaml",
        "Where is my order 12345? It has been two weeks.",
        "Where is my order 12345? It has been two weeks and the tracking page shows nothing at all.",
    )
    head = _run(project_dir)
    diff = diff_reports(Baseline(base, "file base.json"), head).data

    assert diff["kind"] == "diff" and diff["schema_version"] == "1.0" and diff["changed"] is True
    assert [f["id"] for f in diff["fixtures"]["items"]] == ["order-status"]
    entry = diff["fixtures"]["items"][0]
    b = {r["id"]: r for r in base.records}["order-status"]
    h = {r["id"]: r for r in head.records}["order-status"]
    assert entry["prompt_changed"] is True and entry["status"] == "changed"
    assert entry["input_tokens"] == {
        "base": b["input_tokens"],
        "head": h["input_tokens"],
        "delta": h["input_tokens"] - b["input_tokens"],
        "delta_pct": pytest.approx(
            100 * (h["input_tokens"] - b["input_tokens"]) / b["input_tokens"]
        ),
    }
    assert entry["input_tokens"]["delta"] > 0
    assert entry["cost_per_month"]["delta"] == pytest.approx(
        h["cost_per_month"] - b["cost_per_month"]
    )
    # The fixture's $ delta is the whole run's delta, and all of it lands in its suite and tier.
    total = diff["totals"]["cost_per_month"]
    assert total["delta"] == pytest.approx(entry["cost_per_month"]["delta"])
    assert total["delta_pct"] == pytest.approx(100 * total["delta"] / base.monthly_cost)
    assert diff["suites"]["support"]["cost_per_month"]["delta"] == pytest.approx(total["delta"])
    assert diff["suites"]["coding"]["status"] == "unchanged"
    assert diff["tiers"]["small"]["input_tokens_per_month"]["delta"] == pytest.approx(
        entry["input_tokens"]["delta"] * h["monthly_requests"]
    )
    assert diff["fixtures"]["top_movers"] == ["order-status"]
    assert diff["estimated"] is True  # outputs are estimates in this project


def test_added_removed_and_rerouted_fixtures_and_suites(project_dir: Path) -> None:
    base = _run(project_dir)
    fx = project_dir / "fixtures" / "support.yaml"
    _edit(fx, "  - id: order-status\n", "  - id: order-status-v2\n")  # removed + added
    _edit(
        fx, "  - id: refactor\n    suite: coding\n", "  - id: refactor\n    suite: billing\n"
    )  # rerouted
    head = _run(project_dir)
    diff = diff_reports(Baseline(base, "b"), head).data
    items = {f["id"]: f for f in diff["fixtures"]["items"]}
    assert (
        items["order-status"]["status"] == "removed"
        and items["order-status"]["cost_per_month"]["head"] is None
    )
    assert (
        items["order-status-v2"]["status"] == "added"
        and items["order-status-v2"]["cost_per_month"]["base"] is None
    )
    refactor = items["refactor"]
    assert refactor["served_by"] == {"base": "large", "head": "small"}
    assert refactor["cost_per_month"]["delta"] < 0
    # Sorted by |delta $/month|: the large -> small move is by far the biggest.
    assert diff["fixtures"]["top_movers"][0] == "refactor"
    assert diff["suites"]["coding"]["status"] == "removed"
    assert diff["suites"]["billing"]["status"] == "added"
    assert diff["suites"]["billing"]["cost_per_month"]["base"] is None
    assert diff["routing"]["shares"]["large"]["delta"] == pytest.approx(-0.2)


def test_without_baseline_everything_is_head_only(project_dir: Path) -> None:
    head = _run(project_dir)
    diff = diff_reports(Baseline(None, "none", "costguard.yaml does not exist at main"), head)
    assert diff.has_baseline is False and diff.changed is False
    assert diff.data["base"] == {
        "available": False,
        "source": "none",
        "reason": "costguard.yaml does not exist at main",
    }
    assert diff.monthly_cost == {
        "base": None,
        "head": head.monthly_cost,
        "delta": None,
        "delta_pct": None,
    }
    assert (
        diff.data["fixtures"]["items"] == []
        and diff.data["tiers"]["small"]["status"] == "head_only"
    )


def test_quality_is_compared_where_present(project_dir: Path) -> None:
    base, head = _run(project_dir), _run(project_dir)
    base.data["quality"] = {"score": 0.918, "suites": {"support": {"score": 0.95}}}
    head.data["quality"] = {
        "score": 0.915,
        "suites": {"support": {"score": 0.90}, "coding": {"score": 0.7}},
    }
    q = diff_reports(Baseline(base, "b"), head).data["quality"]
    assert q["score"]["delta"] == pytest.approx(-0.003)
    assert q["suites"]["support"]["delta"] == pytest.approx(-0.05)
    assert q["suites"]["coding"] == {"base": None, "head": 0.7, "delta": 0.7, "delta_pct": None}
    assert diff_reports(Baseline(_run(project_dir), "b"), _run(project_dir)).data["quality"] is None


def test_diff_json_round_trip_and_bad_files(project_dir: Path, tmp_path: Path) -> None:
    report = _run(project_dir)
    diff = diff_reports(Baseline(report, "b"), report)
    path = diff.write(tmp_path / "out" / "diff.json")
    assert load_diff(path).data == json.loads(path.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "kind": "diff",\n')
    with pytest.raises(ConfigError, match=r"bad.json:3: not valid JSON"):
        load_diff(bad)
    report.write(tmp_path / "run.json")
    with pytest.raises(ConfigError, match="not a costguard DiffReport"):
        load_diff(tmp_path / "run.json")
    future = json.loads(path.read_text())
    future["schema_version"] = "2.0"
    (tmp_path / "future.json").write_text(json.dumps(future))
    with pytest.raises(ConfigError, match="schema_version 2.0 is not readable"):
        load_diff(tmp_path / "future.json")


def test_rows_compared_as_bytes_give_what_decoded_records_give(project_dir: Path) -> None:
    """`fixture_changes` skips rows that are byte for byte the same at the same position; for any
    edit of the head's records (dropped, moved, re-encoded, changed) it gives what comparing
    every decoded record by id gives."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from costguard.compare.fixtures import fixture_changes
    from costguard.report.rows import RecordRows, encode_row

    base = _run(project_dir)
    records = [dict(r) for r in base.records]
    n = len(records)

    def report(rows: list[dict], raw: list[bytes] | None = None, *, encoded: bool) -> RunReport:
        data = {k: v for k, v in base.data.items() if k != "records"}
        data["records"] = RecordRows(raw or [encode_row(r) for r in rows]) if encoded else rows
        return RunReport(data)

    edits = st.lists(
        st.tuples(
            st.sampled_from(["drop", "swap", "cost", "reorder-keys", "rename"]),
            st.integers(0, n - 1),
            st.integers(0, n - 1),
        ),
        max_size=6,
    )

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(edits)
    def check(ops: list[tuple[str, int, int]]) -> None:
        head = [dict(r) for r in records]
        raw: list[bytes | None] = [None] * len(head)
        for op, i, j in ops:
            if not head:
                break
            i, j = i % len(head), j % len(head)
            if op == "drop":
                del head[i], raw[i]
            elif op == "swap":
                head[i], head[j] = head[j], head[i]
                raw[i], raw[j] = raw[j], raw[i]
            elif op == "cost":
                head[i]["cost_per_month"] = head[i]["cost_per_month"] * 1.5 + 1.0
                raw[i] = None
            elif op == "reorder-keys":  # same record, other bytes
                raw[i] = encode_row(dict(reversed(list(head[i].items()))))
            else:
                head[i]["id"] = head[i]["id"] + "-renamed"
                raw[i] = None
        encoded = [r if r is not None else encode_row(h) for r, h in zip(raw, head, strict=True)]
        fast = fixture_changes(report(records, encoded=True), report(head, encoded, encoded=True))
        slow = fixture_changes(report(records, encoded=False), report(head, encoded=False))
        assert fast.model_dump() == slow.model_dump()

    check()
