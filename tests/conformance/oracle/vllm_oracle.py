"""Runs under the oracle interpreter (vLLM's own Python code, CPU torch): answers questions about
vLLM with vLLM itself. Never imported by costguard or by the product's test environment.

Reads JSON requests on stdin, one per line, and writes one JSON answer per line on stdout (so one
process, which imports vLLM and builds its parser once, answers a whole test session):

* ``{"op": "version"}`` -> ``{"version": vllm.__version__}``
* ``{"op": "parse", "argvs": [[...], ...]}`` -> the `vllm serve` parser's verdict per argv:
  ``{"ok": true, "args": {dest: value}}`` or ``{"ok": false, "error": "..."}``
* ``{"op": "facts"}`` -> facts read from vLLM's source objects (speculative methods, defaults,
  which speculative configs drop or look ahead, hidden flags)
* ``{"op": "kv", "runs": [run, ...]}`` -> per run, the cached tokens vLLM's V1 KVCacheManager
  gives each request, driven one request at a time the way the scheduler drives it.
* ``{"op": "chat", "requests": [{"body", "content_format"}, ...]}`` -> per chat request, what
  vLLM hands the chat template: ``{"conversation": [...], "tools": [...] | null}`` (its request
  validation, `parse_chat_message_content`, `_postprocess_messages`, `tool.model_dump()`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import sys
import time
from types import SimpleNamespace
from typing import Any, get_args

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


@functools.cache
def _parser() -> argparse.ArgumentParser:
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return repr(value)


def parse(argvs: list[list[str]]) -> list[dict[str, Any]]:
    parser = _parser()
    out = []
    for argv in argvs:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(argv)
        except SystemExit:
            out.append({"ok": False, "error": err.getvalue().strip().splitlines()[-1:]})
            continue
        except Exception as exc:  # vLLM's parser raises for some bad values
            out.append({"ok": False, "error": [f"{type(exc).__name__}: {exc}"]})
            continue
        out.append({"ok": True, "args": {k: _jsonable(v) for k, v in vars(ns).items()}})
    return out


def _flatten_literal(tp: Any) -> set[str]:
    names: set[str] = set()
    for arg in get_args(tp):
        if isinstance(arg, str):
            names.add(arg)
        else:
            names |= _flatten_literal(arg)
    return names


def _field_default(cls: type, name: str) -> Any:
    """A (pydantic) dataclass field's default."""
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    return getattr(default, "default", default)  # pydantic's FieldInfo carries it


def facts() -> dict[str, Any]:
    import vllm
    from vllm.config import CacheConfig, VllmConfig
    from vllm.config.speculative import MTPModelTypes, SpeculativeConfig, SpeculativeMethod

    parser = _parser()
    flags = {}
    for action in parser._actions:
        for option in action.option_strings:
            flags[option] = {
                "dest": action.dest,
                "hidden": action.help == argparse.SUPPRESS,
            }

    def spec(method: str, **extra: Any) -> SpeculativeConfig:
        obj = object.__new__(SpeculativeConfig)
        obj.method = method
        obj.disable_eagle_block_drop = extra.get("disable_eagle_block_drop", False)
        obj.disable_lookahead_block_hashes = extra.get("disable_lookahead_block_hashes", False)
        obj.draft_model_config = None
        obj.num_speculative_tokens = 3
        return obj

    def behaviour(method: str, prefix_caching: bool, **extra: Any) -> dict[str, Any]:
        cfg = spec(method, **extra)
        fake = SimpleNamespace(
            speculative_config=cfg,
            cache_config=SimpleNamespace(enable_prefix_caching=prefix_caching),
            kv_transfer_config=None,
            num_speculative_tokens=3,
        )
        fake.num_prefill_lookahead_tokens = VllmConfig.num_prefill_lookahead_tokens.fget(fake)
        lookahead = VllmConfig.num_hash_lookahead_tokens.fget(fake)
        # Scheduler.__init__: lookahead hashes clear the block drop.
        drop = cfg.use_eagle_block_drop() and not lookahead
        return {"hash_lookahead_tokens": lookahead, "drop_last_block": drop}

    methods = sorted(_flatten_literal(SpeculativeMethod))
    cases = {}
    for method in methods:
        # vLLM rewrites model-specific MTP names to "mtp" (SpeculativeConfig.__post_init__).
        canonical = "mtp" if method in _flatten_literal(MTPModelTypes) else method
        for extra_name, extra in (
            ("default", {}),
            ("disable_lookahead_block_hashes", {"disable_lookahead_block_hashes": True}),
            ("disable_eagle_block_drop", {"disable_eagle_block_drop": True}),
        ):
            for prefix_caching in (True, False):
                key = f"{method}|{extra_name}|{prefix_caching}"
                cases[key] = behaviour(canonical, prefix_caching, **extra)
    return {
        "version": vllm.__version__,
        "speculative_methods": methods,
        "mtp_methods": sorted(_flatten_literal(MTPModelTypes)),
        "gpu_memory_utilization": {
            "cache_config": _field_default(CacheConfig, "gpu_memory_utilization"),
            "serve_default": parser.get_default("gpu_memory_utilization"),
        },
        "flags": flags,
        "speculative_prefix_behaviour": cases,
    }


# ---- the KV cache manager --------------------------------------------------------------------


def _manager(run: dict[str, Any]):
    import torch
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec

    bs = run["block_size"]
    spec = FullAttentionSpec(block_size=bs, num_kv_heads=1, head_size=8, dtype=torch.float16)
    config = KVCacheConfig(
        num_blocks=run["num_gpu_blocks"],
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer.0"], spec)],
    )
    return KVCacheManager(
        kv_cache_config=config,
        max_model_len=run["max_model_len"],
        scheduler_block_size=bs,
        hash_block_size=bs,
        enable_caching=True,
        use_eagle=run.get("drop_last_block", False),
        num_hash_lookahead_tokens=run.get("hash_lookahead_tokens", 0),
        log_stats=True,
    )


def kv_run(run: dict[str, Any]) -> dict[str, Any]:
    """One pool, requests admitted one at a time: prefill, decode token by token, free.

    As `Scheduler.schedule` does for a waiting request: `get_computed_blocks` (the local prefix
    hit), `allocate_slots` for the rest of the prompt with the hit blocks and the drafter's
    lookahead slots, `record_prefix_cache_stats`; each decode step appends the sampled token
    (`Request.append_output_token_ids`, which extends the block hashes) and allocates the next
    slot; the request stops once its last token is sampled (never computed) and is freed.
    """
    from vllm import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.request import Request

    init_none_hash(sha256)
    started = time.perf_counter()
    manager = _manager(run)
    bs = run["block_size"]
    lookahead_slots = run.get("lookahead_slots", 0)
    hasher = get_request_block_hasher(bs, sha256, run.get("hash_lookahead_tokens", 0))
    hits = []
    for n, req in enumerate(run["requests"]):
        prompt, output = req["prompt"], req["output"]
        params = SamplingParams(max_tokens=max(len(output), 1))
        if req.get("prompt_logprobs") is not None:
            params = SamplingParams(
                max_tokens=max(len(output), 1), prompt_logprobs=req["prompt_logprobs"]
            )
        request = Request(
            request_id=f"r{n}",
            prompt_token_ids=list(prompt),
            sampling_params=params,
            pooling_params=None,
            block_hasher=hasher,
        )
        blocks, hit, _ = manager.get_computed_blocks(request)
        new = manager.allocate_slots(
            request,
            len(prompt) - hit,
            num_new_computed_tokens=hit,
            new_computed_blocks=blocks,
            num_lookahead_tokens=lookahead_slots,
        )
        if new is None:
            raise RuntimeError(f"request {n} does not fit the pool")
        manager.record_prefix_cache_stats(request, hit)
        request.num_computed_tokens = len(prompt)
        for step, token in enumerate(output):
            request.append_output_token_ids(token)
            if step == len(output) - 1:
                break  # the last sampled token stops the request before it is computed
            if manager.allocate_slots(request, 1, num_lookahead_tokens=lookahead_slots) is None:
                raise RuntimeError(f"request {n} ran out of blocks while decoding")
            request.num_computed_tokens += 1
        manager.free(request)
        hits.append(hit)
    stats = manager.make_prefix_cache_stats()
    return {
        "seconds": time.perf_counter() - started,
        "hits": hits,
        "queries": stats.queries,
        "stat_hits": stats.hits,
        "stat_requests": stats.requests,
    }


def chat(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.renderers.chat_utils.chat_message import (
        _postprocess_messages,
        parse_chat_message_content,
    )

    # Text-only requests: the multimodal tracker is never asked for media, only for a parser
    # whose model config rejects the prompt-embeds placeholder and that stored no placeholders.
    parser = SimpleNamespace(
        model_config=SimpleNamespace(enable_prompt_embeds=False),
        mm_placeholder_storage=lambda: {},
    )
    tracker = SimpleNamespace(create_parser=lambda mm_processor_kwargs=None: parser)
    out = []
    for item in requests:
        request = ChatCompletionRequest.model_validate({"model": "m", **item["body"]})
        conversation: list[Any] = []
        for message in request.messages:
            conversation.extend(
                parse_chat_message_content(
                    message, tracker, item["content_format"], interleave_strings=False
                )
            )
        _postprocess_messages(conversation)
        tools = [t.model_dump() for t in request.tools] if request.tools is not None else None
        out.append({"conversation": _jsonable(conversation), "tools": _jsonable(tools)})
    return out


def answer(request: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "version":
        import vllm

        answer: Any = {"version": vllm.__version__}
    elif op == "parse":
        answer = parse(request["argvs"])
    elif op == "facts":
        answer = facts()
    elif op == "kv":
        answer = [kv_run(run) for run in request["runs"]]
    elif op == "chat":
        answer = chat(request["requests"])
    else:
        raise SystemExit(f"unknown op {op!r}")
    return answer


def main() -> int:
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(answer(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
