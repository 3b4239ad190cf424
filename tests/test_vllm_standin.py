"""The stand-in `vllm` executable: found on PATH, starts, becomes healthy, crashes, tears down."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

BIN = Path(__file__).resolve().parent / "doubles" / "bin"


def env_with_standin(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_VLLM_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 10.0) -> list:
    """Poll /health like a process manager; returns the statuses seen (refused as None)."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the stand-in exited early"
        try:
            status = requests.get(f"{url}/health", timeout=1).status_code
        except requests.ConnectionError:
            status = None
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not healthy after {timeout} s: {seen}")


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def started():
    procs: list[subprocess.Popen] = []

    def start(*args: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["vllm", *args],
            env=env_with_standin(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a process manager would do
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:  # never leave anything behind, even when a test fails
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_version_comes_from_path():
    out = subprocess.run(
        ["vllm", "--version"], env=env_with_standin(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0.33.0"
    out = subprocess.run(
        ["vllm", "--version"],
        env=env_with_standin(FAKE_VLLM_VERSION="0.10.2"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "0.10.2"


def test_serve_refuses_then_becomes_healthy_and_logs_argv(started, tmp_path):
    port = free_port()
    argv_log = tmp_path / "argv.jsonl"
    args = [
        "serve", "Qwen/Qwen2.5-7B-Instruct", "--port", str(port), "--host", "127.0.0.1",
        "--served-model-name", "small", "--api-key", "k1", "--gpu-memory-utilization", "0.45",
        "-tp", "2", "--enforce-eager", "--speculative-config", '{"method": "ngram"}',
        "--enable-prompt-tokens-details",
    ]  # fmt: skip
    proc = started(*args, FAKE_VLLM_STARTUP_S="0.5", FAKE_VLLM_ARGV_LOG=str(argv_log))
    url = f"http://127.0.0.1:{port}"
    seen = wait_healthy(url, proc)
    assert seen[0] is None and seen[-1] == 200  # refused while "loading", then healthy
    assert [json.loads(line) for line in argv_log.read_text().splitlines()] == [args]

    models = requests.get(f"{url}/v1/models", headers={"Authorization": "Bearer k1"}).json()
    assert [m["id"] for m in models["data"]] == ["small"]
    assert requests.get(f"{url}/v1/models").status_code == 401
    reply = requests.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": "Bearer k1"},
        json={"model": "small", "messages": [{"role": "user", "content": "word " * 40}]},
    )
    assert reply.status_code == 200

    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"Starting vLLM API server on http://127.0.0.1:{port}" in out
    assert "k1" not in out + err  # the API key is not logged


def test_crash_knob_exits_1_with_cuda_oom_on_stderr(started):
    port = free_port()
    proc = started(
        "serve", "org/huge-70b", "--port", str(port), FAKE_VLLM_CRASH_MODEL="org/huge-70b"
    )
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert "torch.OutOfMemoryError: CUDA out of memory" in err
    assert "Engine core initialization failed" in err.strip().splitlines()[-1]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)


def test_sigterm_to_the_process_group_leaves_no_process(started):
    port = free_port()
    proc = started(
        "serve", "m", "--port", str(port), "--host", "127.0.0.1", FAKE_VLLM_SPAWN_CHILD="1"
    )
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    assert len(group_pids(proc.pid)) == 2  # the server and its "engine core" child

    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)
    deadline = time.monotonic() + 5
    while group_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_pids(proc.pid) == []
    assert proc.returncode == 0


def test_sigterm_to_the_parent_alone_orphans_the_child(started):
    port = free_port()
    proc = started(
        "serve", "m", "--port", str(port), "--host", "127.0.0.1", FAKE_VLLM_SPAWN_CHILD="1"
    )
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    # Read line by line: the orphan still holds the pipe open, so read() would block.
    match = None
    while match is None:
        line = proc.stdout.readline()
        assert line, "no engine core pid logged"
        match = re.search(r"EngineCore_DP0 process with pid (\d+)", line)
    child_pid = int(match.group(1))
    assert group_pids(proc.pid) == [child_pid]  # what a naive teardown leaves behind
    os.killpg(proc.pid, signal.SIGKILL)
