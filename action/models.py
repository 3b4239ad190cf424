"""What the Action caches between runs, and the hub tokenizers it fetches before projecting.

    models.py plan               # cache keys and paths (step outputs) from the stack config
    models.py fetch-tokenizers   # download the tokenizer files of `hf: org/model` tokenizers

Model weights and tokenizers live in the Hugging Face cache, keyed by the stack's model ids: a
changed model means a new cache entry, an unchanged stack restores the same one. The offline
and endpoint backends read tokenizers only, so only backend vllm (which downloads weights when
`costguard stack up` starts the servers) keys the weights in. The token-count cache is content
addressed, so every run restores the newest one and saves its own.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

from step import guarded


def _session(config: str):  # -> costguard.api.Costguard
    from costguard.api import Costguard

    return Costguard(config)


def plan(config: str, backend: str, tag: str) -> dict[str, str]:
    session = _session(config)
    stack = session.stack_config()
    ids = session.hub_ids(backend)
    runner_os = os.environ.get("RUNNER_OS", platform.system())
    paths = [str(session.hf_hub_cache_dir())]
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        paths.append(str(Path(os.path.expanduser(os.environ["TIKTOKEN_CACHE_DIR"])).resolve()))
    models_key = ""
    if ids:
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        models_key = f"costguard-hf-{runner_os}-{digest}"
    token_cache = Path(stack.config.cache_dir)
    if not token_cache.is_absolute():
        token_cache = stack.root / token_cache
    restore = f"costguard-tokens-{runner_os}-{tag}-"
    run = f"{os.environ.get('GITHUB_RUN_ID', 'local')}-{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    if ids:
        print("costguard: models and tokenizers from the Hugging Face hub: " + ", ".join(ids))
    return {
        "models-key": models_key,
        "models-paths": "\n".join(paths),
        "tokens-path": str(token_cache.resolve()),
        "tokens-key": restore + run,
        "tokens-restore-key": restore,
    }


def fetch_tokenizers(config: str) -> None:
    _session(config).fetch_hub_tokenizers(lambda message: print(message, flush=True))


def main(argv: list[str]) -> None:
    from costguard.integrations.actions import write_outputs

    config = os.environ.get("INPUT_CONFIG") or "costguard.yaml"
    if argv == ["plan"]:
        backend = os.environ.get("INPUT_BACKEND") or "offline"
        write_outputs(plan(config, backend, os.environ.get("INPUT_TAG") or "default"))
    elif argv == ["fetch-tokenizers"]:
        fetch_tokenizers(config)
    else:
        sys.exit("usage: models.py plan|fetch-tokenizers")


if __name__ == "__main__":
    guarded(lambda: main(sys.argv[1:]))
