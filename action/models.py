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
from typing import TYPE_CHECKING

from step import guarded

if TYPE_CHECKING:
    from costguard.model.config import LoadedStack


def _stack(config: str) -> LoadedStack:
    from costguard.model.config import load_stack

    return load_stack(config)


def hub_ids(stack: LoadedStack, backend: str) -> list[str]:
    """The Hugging Face repos this run reads: hub tokenizers, plus model weights for backend vllm."""
    from costguard.text.tokenization import hub_tokenizer_id

    ids = set()
    for tier in stack.config.tiers:
        tokenizer = hub_tokenizer_id(tier.tokenizer, stack.root)
        if tokenizer:
            ids.add(f"tokenizer:{tokenizer}")
        if backend == "vllm":
            ids.add(f"model:{tier.model}")
            draft = (tier.serve.speculative or {}).get("model")
            if isinstance(draft, str):
                ids.add(f"model:{draft}")
    return sorted(ids)


def plan(config: str, backend: str, tag: str) -> dict[str, str]:
    from costguard.text.tokenization import hf_hub_cache_dir

    stack = _stack(config)
    ids = hub_ids(stack, backend)
    runner_os = os.environ.get("RUNNER_OS", platform.system())
    paths = [str(hf_hub_cache_dir())]
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
    from costguard.text.tokenization import (
        fetch_hub_tokenizer,
        hub_tokenizer_cached,
        hub_tokenizer_id,
    )

    stack = _stack(config)
    done: set[str] = set()
    for i, tier in enumerate(stack.config.tiers):
        model_id = hub_tokenizer_id(tier.tokenizer, stack.root)
        if model_id is None or model_id in done:
            continue
        done.add(model_id)
        if hub_tokenizer_cached(model_id):
            print(f"costguard: tokenizer {model_id} already in the Hugging Face cache")
            continue
        snapshot = fetch_hub_tokenizer(model_id, where=stack.where("tiers", i, "tokenizer", "hf"))
        print(f"costguard: fetched the tokenizer of {model_id} into {snapshot}")


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
