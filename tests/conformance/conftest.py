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
from pathlib import Path
from typing import Any

import pytest

ORACLE_SCRIPT = Path(__file__).parent / "oracle" / "vllm_oracle.py"
ENV_VAR = "COSTGUARD_VLLM_ORACLE"


class VllmOracle:
    """vLLM's own code, one subprocess per question."""

    def __init__(self, python: str) -> None:
        self.python = python

    def ask(self, op: str, **payload: Any) -> Any:
        env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_LOGGING_LEVEL": "ERROR"}
        done = subprocess.run(
            [self.python, str(ORACLE_SCRIPT)],
            input=json.dumps({"op": op, **payload}),
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        if done.returncode != 0:
            raise AssertionError(f"the vLLM oracle failed ({op}):\n{done.stderr[-4000:]}")
        return json.loads(done.stdout)


@pytest.fixture(scope="session")
def vllm_oracle() -> VllmOracle:
    python = os.environ.get(ENV_VAR)
    if not python:
        pytest.skip(
            f"vLLM oracle not built: run `.ci/conformance-oracle` and set {ENV_VAR} to the "
            "interpreter it prints (.ci/run does both)"
        )
    if not Path(python).exists():
        pytest.fail(f"{ENV_VAR}={python} does not exist: rebuild it with .ci/conformance-oracle")
    return VllmOracle(python)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.conformance)
