"""Seeded request streams for comparing the prefix-cache simulator with vLLM's KVCacheManager.

Each stream is a list of requests (prompt ids, output ids, prompt_logprobs or None) shaped like
real traffic: shared system prompts, multi-turn conversations whose follow-ups contain the
previous reply, prompts of exact block multiples, and resends. Shared by the conformance tests
and `benchmarks/vllm_conformance.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Stream:
    name: str
    block_size: int
    num_gpu_blocks: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    hash_lookahead_tokens: int = 0
    drop_last_block: bool = False
    speculative_slots: int = 0

    def payload(self) -> dict[str, Any]:
        """The run as the oracle takes it."""
        longest = max(len(r["prompt"]) + len(r["output"]) for r in self.requests)
        return {
            "block_size": self.block_size,
            "num_gpu_blocks": self.num_gpu_blocks,
            "max_model_len": longest + self.speculative_slots + 1,
            "hash_lookahead_tokens": self.hash_lookahead_tokens,
            "drop_last_block": self.drop_last_block,
            "lookahead_slots": self.speculative_slots,
            "requests": self.requests,
        }

    def simulate(self) -> tuple[list[int], Any]:
        """Per-request cached tokens from costguard's simulator, and the simulator."""
        from costguard.engine.caches.prefix import PrefixCacheSimulator

        sim = PrefixCacheSimulator(
            block_size=self.block_size,
            num_gpu_blocks=self.num_gpu_blocks,
            hash_lookahead_tokens=self.hash_lookahead_tokens,
            drop_last_block=self.drop_last_block,
            speculative_slots=self.speculative_slots,
        )
        hits = [
            sim.admit(
                r["prompt"], r["output"], skip_cache_read=r.get("prompt_logprobs") is not None
            ).cached_tokens
            for r in self.requests
        ]
        return hits, sim


def generate(
    seed: int,
    n: int,
    *,
    block_size: int = 16,
    systems: int = 6,
    system_len: tuple[int, int] = (30, 400),
    user_len: tuple[int, int] = (3, 120),
    output_len: tuple[int, int] = (1, 60),
    follow_up: float = 0.35,
    resend: float = 0.08,
    block_multiple: float = 0.15,
    prompt_logprobs: float = 0.0,
    vocab: int = 50_000,
) -> list[dict[str, Any]]:
    """`n` requests: new conversations on one of `systems` shared system prompts, follow-ups of
    earlier conversations (previous prompt + its reply + a new user turn), exact resends, and
    prompts trimmed to a multiple of the block size."""
    rng = np.random.default_rng(seed)

    def tokens(lo_hi: tuple[int, int]) -> list[int]:
        return rng.integers(1, vocab, int(rng.integers(lo_hi[0], lo_hi[1] + 1))).tolist()

    prefixes = [tokens(system_len) for _ in range(systems)]
    history: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for _ in range(n):
        roll = rng.random()
        if history and roll < resend:
            prompt = list(history[int(rng.integers(len(history)))]["prompt"])
        elif history and roll < resend + follow_up:
            prev = history[int(rng.integers(max(0, len(history) - 50), len(history)))]
            # The reply without its stop token, then the next user turn.
            prompt = prev["prompt"] + prev["output"][:-1] + tokens(user_len)
        else:
            prompt = prefixes[int(rng.integers(systems))] + tokens(user_len)
        if rng.random() < block_multiple and len(prompt) > block_size:
            prompt = prompt[: len(prompt) // block_size * block_size]
        output = tokens(output_len)
        request: dict[str, Any] = {"prompt": prompt, "output": output}
        if rng.random() < prompt_logprobs:
            request["prompt_logprobs"] = int(rng.integers(0, 3))
        out.append(request)
        history.append(request)
    return out


def blocks_needed(requests: list[dict[str, Any]], block_size: int, slots: int = 0) -> int:
    """The most blocks one request holds (a pool smaller than this cannot run the stream)."""
    return max(
        -(-(len(r["prompt"]) + max(len(r["output"]) - 1, 0) + slots) // block_size)
        for r in requests
    )


def streams(n: int = 400) -> list[Stream]:
    """The conformance matrix: block sizes, roomy and eviction-forcing pools, speculative
    decoding (EAGLE lookahead hashes; EAGLE with the dropped last block) and prompt_logprobs."""
    out = []
    for seed, bs in ((1, 16), (2, 4), (3, 32)):
        reqs = generate(seed, n, block_size=bs)
        peak = blocks_needed(reqs, bs, 4)
        total = sum(blocks_needed([r], bs, 4) for r in reqs)
        for pool_name, pool in (("roomy", total + 2), ("tight", peak + 1 + peak // 2)):
            out.append(Stream(f"shared-multiturn bs{bs} {pool_name}", bs, pool, reqs))
            out.append(
                Stream(
                    f"eagle lookahead bs{bs} {pool_name}",
                    bs,
                    pool,
                    reqs,
                    hash_lookahead_tokens=1,
                    speculative_slots=3,
                )  # fmt: skip
            )
            out.append(
                Stream(
                    f"eagle drop-last-block bs{bs} {pool_name}",
                    bs,
                    pool,
                    reqs,
                    drop_last_block=True,
                    speculative_slots=3,
                )  # fmt: skip
            )
        logprobs = generate(seed + 10, n, block_size=bs, prompt_logprobs=0.15)
        peak = blocks_needed(logprobs, bs)
        out.append(Stream(f"prompt_logprobs bs{bs} tight", bs, peak + 1 + peak // 3, logprobs))
        out.append(Stream(f"prompt_logprobs bs{bs} roomy", bs, 1 << 20, logprobs))
    many_systems = generate(7, n, block_size=16, systems=40, follow_up=0.5)
    peak = blocks_needed(many_systems, 16)
    out.append(Stream("many prefixes bs16 very tight", 16, peak + 2, many_systems))
    return out
