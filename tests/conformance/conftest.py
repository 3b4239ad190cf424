"""The conformance tier: costguard's vLLM knowledge checked against vLLM's own code.

vLLM 0.33.0's Python files run here on CPU in a separate virtualenv (the oracle: never a
dependency of costguard); `.ci/conformance-oracle` builds it and prints its interpreter, which
`COSTGUARD_VLLM_ORACLE` names. The tests talk to it through `oracle/vllm_oracle.py` in a
subprocess, so costguard and vLLM never share an interpreter. Without the oracle every test here
is skipped, saying how to build it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ORACLE_SCRIPT = Path(__file__).parent / "oracle" / "vllm_oracle.py"
ENV_VAR = "COSTGUARD_VLLM_ORACLE"


class VllmOracle:
    """vLLM's own code in one subprocess for the session (vLLM is imported once)."""

    def __init__(self, python: str) -> None:
        env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_LOGGING_LEVEL": "ERROR"}
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [python, str(ORACLE_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )

    def ask(self, op: str, **payload: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **payload}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise AssertionError(f"the vLLM oracle failed ({op}):\n{self.stderr.read()[-4000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="session")
def vllm_oracle() -> Iterator[VllmOracle]:
    python = os.environ.get(ENV_VAR)
    if not python:
        pytest.skip(
            f"vLLM oracle not built: run `.ci/conformance-oracle` and set {ENV_VAR} to the "
            "interpreter it prints (.ci/run does both)"
        )
    if not Path(python).exists():
        pytest.fail(f"{ENV_VAR}={python} does not exist: rebuild it with .ci/conformance-oracle")
    oracle = VllmOracle(python)
    yield oracle
    oracle.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.conformance)
