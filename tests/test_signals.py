"""SIGTERM and SIGHUP are handled like SIGINT: an interrupted live run writes its incomplete
report, and `run --backend vllm` / `stack up` leave no process of the groups they started
(counted with the stand-in `vllm` executable, engine children included)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_stack import group_pids, pid_alive, standin_env, vllm_project

STATE = Path(".costguard") / "cache" / "stack" / "state.json"


def _start(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "costguard", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _groups_and_children(project_dir: Path) -> tuple[list[int], list[int]]:
    state = json.loads((project_dir / STATE).read_text())
    groups = [t["pgid"] for t in state["tiers"]]
    children = [
        int(p)
        for t in state["tiers"]
        for p in re.findall(r"EngineCore_DP0 process with pid (\d+)", Path(t["log"]).read_text())
    ]
    return groups, children


def _orphans(groups: list[int], children: list[int]) -> list[int]:
    return [p for g in groups for p in group_pids(g)] + [p for p in children if pid_alive(p)]


@pytest.fixture
def cleanup():
    groups: list[int] = []
    yield groups
    for g in groups:  # whatever a failing test left behind
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _completed(project_dir: Path) -> float:
    """Requests the stand-in servers have completed (their /metrics)."""
    import urllib.request

    total = 0.0
    state = json.loads((project_dir / STATE).read_text())
    for tier in state["tiers"]:
        try:
            with urllib.request.urlopen(tier["base_url"] + "/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("vllm:request_success_total"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _all_ready(project_dir: Path) -> bool:
    try:
        state = json.loads((project_dir / STATE).read_text())
    except (OSError, ValueError):
        return False
    logs = [Path(t["log"]) for t in state["tiers"]]
    return len(logs) == 2 and all(
        p.exists() and "Application startup complete" in p.read_text() for p in logs
    )


@pytest.mark.parametrize("sequence", [("SIGTERM",), ("SIGHUP",), ("SIGINT", "SIGTERM")])
def test_signals_mid_run_backend_vllm_leave_no_orphans_and_an_incomplete_report(
    project_dir: Path, cleanup: list[int], sequence: tuple[str, ...]
):
    vllm_project(project_dir, "replay: {concurrency: 1}\n")
    env = standin_env(FAKE_VLLM_STARTUP_S="0.3", FAKE_VLLM_SPAWN_CHILD="1", FAKE_VLLM_TPOT_S="0.05")
    proc = _start(project_dir, "run", "--backend", "vllm", "-o", "cut.json", "-q", env=env)
    try:
        _wait_for(lambda: _all_ready(project_dir))
        groups, children = _groups_and_children(project_dir)
        cleanup.extend(groups)
        assert len(children) == 2 and _orphans(groups, children)
        _wait_for(lambda: _completed(project_dir) >= 1)  # the replay is under way
        for name in sequence:  # GitHub's cancel: SIGINT, then SIGTERM (then SIGKILL)
            proc.send_signal(getattr(signal, name))
            time.sleep(0.3)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _orphans(groups, children) == []
    assert not (project_dir / STATE).exists()
    assert (project_dir / "cut.json").exists(), err
    report = json.loads((project_dir / "cut.json").read_text())
    assert report["complete"] is False
    first = sequence[0]
    assert report["incomplete_reason"] == (
        "interrupted (Ctrl-C)" if first == "SIGINT" else f"interrupted ({first})"
    )


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_signals_during_stack_up_stop_every_group_started(
    project_dir: Path, cleanup: list[int], name: str
):
    vllm_project(project_dir, "replay: {concurrency: 1}\n")
    env = standin_env(FAKE_VLLM_STARTUP_S="30", FAKE_VLLM_SPAWN_CHILD="1")
    proc = _start(project_dir, "stack", "up", env=env)
    try:

        def both_started() -> bool:
            try:
                state = json.loads((project_dir / STATE).read_text())
            except (OSError, ValueError):
                return False
            return len(state["tiers"]) == 2 and all(
                "EngineCore_DP0" in Path(t["log"]).read_text() for t in state["tiers"]
            )

        _wait_for(both_started)
        groups, children = _groups_and_children(project_dir)
        cleanup.extend(groups)
        assert _orphans(groups, children)
        started = time.monotonic()
        proc.send_signal(getattr(signal, name))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopped small" in err and "stopped large" in err
    assert time.monotonic() - started < 25
    assert _orphans(groups, children) == []
    assert not (project_dir / STATE).exists()
