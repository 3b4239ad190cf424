"""Work on a second core: `Forked` (a function computed in a forked child) and the result-cache
pass that a run starts there, which must give exactly what the pass gives in this process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from costguard import api
from costguard.engine.forked import Forked, fork_usable
from costguard.engine.result_caches import ResultCaches, start_pass
from costguard.report.run_report import RunReport

REPO = Path(__file__).resolve().parent.parent

needs_fork = pytest.mark.skipif(not fork_usable(), reason="needs fork and two cores")


@needs_fork
def test_the_childs_result_comes_back() -> None:
    value = {"order": list(range(1000)), "text": "ü" * 10}
    forked = Forked(lambda: value)
    assert forked.result() == value and forked.forked


def test_an_error_in_the_child_is_raised_here_as_without_a_fork() -> None:
    with pytest.raises(ZeroDivisionError):
        Forked(lambda: 1 / 0).result()


@needs_fork
def test_a_child_that_dies_is_replaced_by_computing_here() -> None:
    parent = os.getpid()

    def work() -> int:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return 42

    forked = Forked(work)
    assert forked.result() == 42 and not forked.forked


def test_a_result_that_does_not_pickle_is_computed_here() -> None:
    forked = Forked(lambda: lambda: 7)
    assert forked.result()() == 7 and not forked.forked


@needs_fork
def test_close_stops_and_reaps_the_child() -> None:
    forked = Forked(lambda: time.sleep(60))
    pid = forked._pid
    assert pid is not None
    started = time.perf_counter()
    forked.close()
    assert time.perf_counter() - started < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left behind


def test_one_worker_means_no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTGUARD_WORKERS", "1")
    forked = Forked(lambda: os.getpid())
    assert forked.result() == os.getpid() and not forked.forked


@needs_fork
def test_the_result_cache_pass_in_a_child_is_the_pass_here() -> None:
    """The bundled example has PII bypasses, exact hits within and beyond the TTL and semantic
    candidates: the forked pass gives the same order, times and outcomes."""
    project = api.load_project(REPO / "costguard.yaml")
    here = ResultCaches(project.config).run(project.fixtures)
    pending = start_pass(project.config, project.fixtures, fork_min=1)
    there = pending.result()
    assert pending.forked
    assert here.pii and here.semantic_candidates
    assert any(o.outcome == "exact" for o in here.outcomes.values())
    assert there == here


@needs_fork
def test_a_run_on_two_cores_reports_what_a_run_on_one_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The result-cache pass, the prefix caches of some tiers and the encoding of the report's
    rows (into a temporary file both processes share) in forked processes: the same report, row
    for row, byte for byte."""
    from costguard.engine import pipeline, result_caches
    from costguard.report import assemble

    project = api.load_project(REPO / "costguard.yaml")
    monkeypatch.setenv("COSTGUARD_WORKERS", "1")
    alone = api.run(project)
    monkeypatch.delenv("COSTGUARD_WORKERS")
    started: list[Forked] = []

    class Spy(Forked):  # type: ignore[type-arg]
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            started.append(self)

    # (the pass the first run kept would be read, not prepared)
    monkeypatch.setattr(result_caches.PreparedStore, "load", lambda *a: None)
    for module, least in (
        (result_caches, "FORK_MIN_FIXTURES"),
        (pipeline, "PREFIX_FORK_MIN"),
        (assemble, "FORK_MIN_RECORDS"),
    ):
        monkeypatch.setattr(module, least, 1)
        monkeypatch.setattr(module, "Forked", Spy)
    forked = api.run(project)
    assert [s.forked for s in started] == [True, True, True]
    assert len(forked.data["cache"]["prefix"]["tiers"]) >= 2  # (tiers to split)

    def rows(report: RunReport) -> list[str]:
        return [line for line in report.to_json().splitlines() if line.startswith('    {"id":')]

    def comparable(data: dict) -> dict:
        skip = ("created_at", "timing", "stages", "records")
        return {k: v for k, v in data.items() if k not in skip}

    assert len(rows(forked)) == len(project.fixtures)
    assert rows(forked) == rows(alone)
    assert comparable(forked.data) == comparable(alone.data)


def test_prefix_tiers_split_into_two_groups_of_about_the_same_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from costguard.engine import pipeline

    monkeypatch.setattr(pipeline, "PREFIX_FORK_MIN", 10)
    monkeypatch.setattr(pipeline, "fork_usable", lambda: True)
    assert pipeline.prefix_split({"a": 50, "b": 40, "c": 30}) == (["a"], ["b", "c"])
    assert pipeline.prefix_split({"a": 5, "b": 40}) == (["b"], ["a"])
    assert pipeline.prefix_split({"a": 50}) == (["a"], [])  # one tier: nothing to split
    assert pipeline.prefix_split({"a": 3, "b": 4}) == (["b", "a"], [])  # too little to fork
    monkeypatch.setattr(pipeline, "fork_usable", lambda: False)
    assert pipeline.prefix_split({"a": 50, "b": 40}) == (["a", "b"], [])
