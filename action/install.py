"""Install costguard for the Action (and the pinned vLLM for backend vllm), or check the runner's.

    install.py plan      # pip's cache directory and a cache key, for actions/cache before installing
    install.py install   # pip install (input install: true), then check what is importable

costguard comes from the Action's own checkout ($GITHUB_ACTION_PATH), so the code that runs is
the version the workflow pinned with `uses: ...@ref`. For backends offline and endpoint the CPU
build of PyTorch is installed first: otherwise pip resolves sentence-transformers' torch to the
CUDA build and downloads several GB a CPU runner cannot use. For backend vllm, vLLM goes first
and brings its own CUDA torch.

Runs before costguard is importable: standard library only.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from step import fail

ACTION_PATH = Path(os.environ.get("GITHUB_ACTION_PATH") or Path(__file__).resolve().parent.parent)


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value not in ("true", "false"):
        fail(
            f"input {name.removeprefix('INPUT_').lower().replace('_', '-')} must be true or false, got {value!r}"
        )
    return value == "true"


def _set_outputs(values: dict[str, str]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.writelines(f"{name}={value}\n" for name, value in values.items())


def pip_commands(backend: str, vllm_version: str, torch_index_url: str) -> list[list[str]]:
    """The pip invocations, in order (arguments after `python -m pip`)."""
    commands = []
    if backend == "vllm":
        if not vllm_version.strip():
            fail("input vllm-version is empty: backend vllm needs the vLLM version to install")
        commands.append(["install", f"vllm=={vllm_version.strip()}"])
    elif torch_index_url.strip():
        commands.append(["install", "torch", "--index-url", torch_index_url.strip()])
    commands.append(["install", str(ACTION_PATH)])
    return commands


def plan() -> None:
    """pip-cache-dir and pip-cache-key outputs (empty when nothing will be installed)."""
    if not _flag("INPUT_INSTALL"):
        _set_outputs({"pip-cache-dir": "", "pip-cache-key": ""})
        return
    backend = os.environ.get("INPUT_BACKEND", "offline")
    commands = pip_commands(
        backend,
        os.environ.get("INPUT_VLLM_VERSION", ""),
        os.environ.get("INPUT_TORCH_INDEX_URL", ""),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True
    )
    cache_dir = proc.stdout.strip() if proc.returncode == 0 else ""
    digest = hashlib.sha256(repr(commands).encode())
    pyproject = ACTION_PATH / "pyproject.toml"
    if pyproject.is_file():
        digest.update(pyproject.read_bytes())
    python = ".".join(platform.python_version_tuple()[:2])
    runner_os = os.environ.get("RUNNER_OS", platform.system())
    key = f"costguard-pip-{runner_os}-py{python}-{'gpu' if backend == 'vllm' else 'cpu'}-{digest.hexdigest()[:16]}"
    _set_outputs({"pip-cache-dir": cache_dir, "pip-cache-key": key})


def _version_of(module: str) -> str | None:
    proc = subprocess.run(
        [sys.executable, "-c", f"import importlib.metadata as m; print(m.version({module!r}))"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def install() -> None:
    backend = os.environ.get("INPUT_BACKEND", "offline")
    vllm_version = os.environ.get("INPUT_VLLM_VERSION", "")
    if _flag("INPUT_INSTALL"):
        for args in pip_commands(
            backend, vllm_version, os.environ.get("INPUT_TORCH_INDEX_URL", "")
        ):
            print(f"costguard: $ python -m pip {' '.join(args)}", flush=True)
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
            )
            if proc.returncode != 0:
                fail(f"pip {' '.join(args)} failed (exit {proc.returncode}); see the log above")
    check = subprocess.run(
        [sys.executable, "-m", "costguard", "--version"], capture_output=True, text=True
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no output"])[-1]
        fail(
            f"costguard is not installed for {sys.executable} ({last}); set install: true, or "
            "install costguard on the runner (or point python-version at the Python that has it)"
        )
    print(f"costguard: using {check.stdout.strip()} ({sys.executable})")
    if backend == "vllm":
        found = _version_of("vllm")
        if found is None:
            fail(
                f"backend vllm needs vLLM: set install: true, or pip install vllm=={vllm_version} on the runner"
            )
        elif vllm_version and found != vllm_version:
            print(
                f"::warning title=costguard::the runner has vLLM {found}, the Action pins {vllm_version} "
                "(input vllm-version); measured figures may differ between versions"
            )


def main(argv: list[str]) -> None:
    if argv == ["plan"]:
        plan()
    elif argv == ["install"]:
        install()
    else:
        sys.exit("usage: install.py plan|install")


if __name__ == "__main__":
    main(sys.argv[1:])
