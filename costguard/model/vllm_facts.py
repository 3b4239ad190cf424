"""What costguard relies on about vLLM, in one place, with the release it was checked against.

Every flag spelling, default and engine behaviour that the stack planner (`serving/stack.py`),
the prefix-cache simulator (`engine/caches/`) and the config validation depend on lives here, so
moving to a new vLLM release is one reviewed diff of this module, and the conformance tier
(`tests/conformance/`) proves the facts against that release's own code: its `vllm serve`
argument parser and its V1 `KVCacheManager`, imported from the wheel on a CPU machine.

It sits in the lowest layer that needs it (`model`, for `launch.vllm_version` and the
speculative-config validation) so every layer above can import it.
"""

from __future__ import annotations

from typing import Any

VLLM_VERSION = "0.33.0"
"""The vLLM release whose flags, defaults, routes, usage fields, metric names and prefix-cache
behaviour costguard follows; `launch.vllm_version`'s default and the Action's `vllm-version`."""

# ---- `vllm serve` defaults (vllm/config/cache.py, vllm/engine/arg_utils.py) --------------------

DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
"""`CacheConfig.gpu_memory_utilization`'s default: per instance, shared out when tiers share a GPU."""

SIMULATED_BLOCK_SIZE = 16
"""costguard's default KV block size. vLLM's `--block-size` defaults to None: the attention
backend then picks one, possibly larger than 16, so `stack up` always passes `--block-size`."""

# ---- `vllm serve` flag spellings ----------------------------------------------------------------

FLAG_PORT = "--port"
FLAG_HOST = "--host"
FLAG_SERVED_MODEL_NAME = "--served-model-name"
FLAG_GPU_MEMORY_UTILIZATION = "--gpu-memory-utilization"
FLAG_TENSOR_PARALLEL_SIZE = "--tensor-parallel-size"
FLAG_PIPELINE_PARALLEL_SIZE = "--pipeline-parallel-size"
FLAG_QUANTIZATION = "--quantization"
FLAG_MAX_MODEL_LEN = "--max-model-len"
FLAG_SEED = "--seed"
FLAG_SPECULATIVE_CONFIG = "--speculative-config"
FLAG_BLOCK_SIZE = "--block-size"
FLAG_ENABLE_PREFIX_CACHING = "--enable-prefix-caching"
FLAG_DISABLE_PREFIX_CACHING = "--disable-prefix-caching"
"""Turns automatic prefix caching off (it is on by default in the V1 engine)."""
FLAG_PROMPT_TOKENS_DETAILS = "--enable-prompt-tokens-details"
"""Needed for `usage.prompt_tokens_details.cached_tokens`."""
FLAG_API_KEY = "--api-key"
FLAG_MODEL = "--model"

ALIASES = {
    "-tp": FLAG_TENSOR_PARALLEL_SIZE,
    "-pp": FLAG_PIPELINE_PARALLEL_SIZE,
    "-q": FLAG_QUANTIZATION,
    "-sc": FLAG_SPECULATIVE_CONFIG,
}
"""Short spellings `vllm serve` accepts for flags costguard manages."""

LEGACY_SPELLINGS = {
    "--no-enable-prefix-caching": FLAG_DISABLE_PREFIX_CACHING,
}
"""Hidden legacy spellings that still parse: costguard never emits them."""

REMOVED_FLAGS = {
    "--speculative-model": f"{FLAG_SPECULATIVE_CONFIG} '{{\"model\": ...}}'",
    "--num-speculative-tokens": f"{FLAG_SPECULATIVE_CONFIG} '{{\"num_speculative_tokens\": N}}'",
}
"""Flags older releases had and this one rejects, with what replaced them."""

# ---- quantization --------------------------------------------------------------------------------

CHECKPOINT_QUANTIZATION = {"awq": "awq_marlin", "gptq": "gptq_marlin"}
"""Methods declared by the checkpoint itself: vLLM reads them from the model's config and picks
the fast Marlin kernel; naming them on the command line forces the slow one."""

# ---- speculative decoding (vllm/config/speculative.py) ------------------------------------------

MTP_METHODS = frozenset({
    "mtp", "deepseek_mtp", "dots3_note_mtp", "mimo_mtp", "mimo_v2_mtp", "glm4_moe_mtp",
    "glm4_moe_lite_mtp", "glm_ocr_mtp", "ernie_mtp", "nemotron_h_mtp", "exaone_moe_mtp",
    "exaone4_5_mtp", "qwen3_next_mtp", "qwen4_exp_mtp", "qwen3_5_mtp", "longcat_flash_mtp",
    "bailing_hybrid_v3_mtp", "minimax_m3_mtp", "bailing_hybrid_mtp", "kimi_k3_mtp",
    "pangu_ultra_moe_mtp", "step3p5_mtp", "step5_mtp", "hy_v3_mtp", "hy_v4_mtp", "gemma4_mtp",
    "inkling_mtp", "glm5_next_mtp",
})  # fmt: skip
"""`MTPModelTypes`: model-specific names are deprecated spellings that vLLM rewrites to `mtp`."""

SPECULATIVE_METHODS = frozenset({
    "ngram", "draft_model", "suffix", "custom_class", "eagle", "eagle3", "extract_hidden_states",
    "dflash", "ngram_gpu", "dspark",
}) | MTP_METHODS  # fmt: skip
"""`SpeculativeMethod`: every `method` `--speculative-config` accepts."""

REMOVED_SPECULATIVE_METHODS = frozenset({"medusa", "mlp_speculator"})

EAGLE_STYLE_METHODS = frozenset({"eagle", "eagle3"}) | MTP_METHODS
"""`SpeculativeConfig.needs_eagle_block_drop`: drafters whose KV at a position depends on the next
token (EAGLE, EAGLE3, MTP; not DFlash/DSpark, which read the target's hidden state alone)."""


def speculative_method_problem(speculative: dict[str, Any]) -> str | None:
    """Why vLLM would reject this `--speculative-config`'s method, or None when it accepts it."""
    method = speculative.get("method")
    if method is None:
        return None  # vLLM infers draft_model (or ngram) from `model`
    if not isinstance(method, str):
        return f"method must be a string, got {method!r}"
    if method in REMOVED_SPECULATIVE_METHODS:
        return (
            f"speculative method {method!r} was removed from vLLM (checked against {VLLM_VERSION}); "
            f"use one of {', '.join(sorted(SPECULATIVE_METHODS - MTP_METHODS | {'mtp'}))}"
        )
    if method not in SPECULATIVE_METHODS:
        return (
            f"unknown speculative method {method!r} (vLLM {VLLM_VERSION} accepts "
            f"{', '.join(sorted(SPECULATIVE_METHODS - MTP_METHODS | {'mtp'}))} and model-specific MTP names)"
        )
    return None


def hash_lookahead_tokens(speculative: dict[str, Any] | None, *, prefix_caching: bool) -> int:
    """Tokens after each block that vLLM's block hash also covers (`VllmConfig.num_hash_lookahead_tokens`).

    With an EAGLE-style drafter vLLM 0.33 keys each block on its tokens AND the next token (the
    drafter's KV at the block's last position reads it), so a block is only hit when the token
    after it matches too. Multi-module MTP (several next-n layers and num_speculative_tokens > 1)
    reads further ahead; its depth is in the draft model's config, which costguard does not read,
    so MTP is modelled as single-module.
    """
    if not prefix_caching or not drops_or_looks_ahead(speculative):
        return 0
    assert speculative is not None
    if speculative.get("disable_lookahead_block_hashes"):
        return 0
    return 1


def drops_last_cached_block(speculative: dict[str, Any] | None) -> bool:
    """Whether vLLM drops the last matched block of every prefix hit (`use_eagle_block_drop`).

    Only when an EAGLE-style drafter runs with `disable_lookahead_block_hashes: true` (the
    pre-lookahead behaviour): the default keys blocks with a lookahead token instead.
    """
    if not drops_or_looks_ahead(speculative):
        return False
    assert speculative is not None
    return bool(speculative.get("disable_lookahead_block_hashes"))


def drops_or_looks_ahead(speculative: dict[str, Any] | None) -> bool:
    """An EAGLE-style drafter whose trailing-block handling is on (`use_eagle_block_drop` before
    lookahead hashes are considered)."""
    if not speculative:
        return False
    if speculative.get("method") not in EAGLE_STYLE_METHODS:
        return False
    return not speculative.get("disable_eagle_block_drop", False)


def speculative_lookahead_slots(speculative: dict[str, Any] | None) -> int:
    """KV slots the scheduler reserves past the computed tokens (`VllmConfig.num_lookahead_tokens`):
    num_speculative_tokens for EAGLE-family and draft-model drafters, one more for DFlash, none
    for n-gram and suffix drafters."""
    if not speculative:
        return 0
    method = speculative.get("method")
    if method is None and speculative.get("model") not in (None, "ngram", "[ngram]"):
        method = "draft_model"  # vLLM's inference from `model`
    k = speculative.get("num_speculative_tokens") or 0
    if not isinstance(k, int) or k < 0:
        return 0
    if method == "dflash":
        return k + 1
    if method in EAGLE_STYLE_METHODS or method in ("dspark", "draft_model"):
        return k
    return 0


# ---- prefix caching ------------------------------------------------------------------------------

SKIPS_PREFIX_CACHE_READ = ("prompt_logprobs", "prompt_logprob_token_ids")
"""Sampling parameters that make vLLM skip reading the prefix cache for a request
(`SamplingParams.skip_reading_prefix_cache`); such a request is not counted in
`vllm:prefix_cache_queries_total` / `_hits_total` either. Its blocks are still written."""

HYBRID_ATTENTION_MODEL_MARKERS = ("gpt-oss", "gemma-2", "gemma-3", "gemma2", "gemma3")
"""Model-id fragments of well-known hybrid full + sliding-window attention families."""

HYBRID_ATTENTION_LIMITATION = (
    "the prefix-cache simulator does not model hybrid full + sliding-window attention "
    "(gpt-oss, Gemma 2/3 style): vLLM keeps the sliding-window layers in their own KV cache "
    "group, which keeps only the window's blocks and shares the pool with the full-attention "
    "group, so simulated hit rates would be several points too high at tight pools"
)
