"""Fail fast, and say why, when backend vllm runs on a runner without a working NVIDIA GPU.

Runs before anything is installed (vLLM is several GB), so it uses the standard library only.
"""

from __future__ import annotations

import shutil
import subprocess

from step import fail

QUERY = ["--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"]
NO_GPU_HINT = (
    "use a GPU runner (a self-hosted runner with NVIDIA drivers, or a GitHub-hosted GPU runner), "
    "or backend: offline for the CPU-only projection"
)


def main() -> None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        fail(f"backend vllm needs an NVIDIA GPU, but nvidia-smi is not on PATH; {NO_GPU_HINT}")
    try:
        proc = subprocess.run([exe, *QUERY], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        fail("nvidia-smi did not answer within 60 s: the NVIDIA driver is hung on this runner")
    if proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        fail(
            f"nvidia-smi failed (exit {proc.returncode}: {why}): the NVIDIA driver is not working on this runner"
        )
    gpus = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if not gpus:
        fail(f"nvidia-smi lists no GPU; {NO_GPU_HINT}")
    print(f"costguard: {len(gpus)} GPU(s) on this runner:")
    for gpu in gpus:
        print(f"  {gpu}")


if __name__ == "__main__":
    main()
