"""The APC simulator against hand-computed cases and a slow transliteration of vLLM's manager.

Block size 16 unless a test says otherwise.  ``blk(c)`` is a 16-token block whose every token is
``c``, so a prompt reads as its block structure: ``blk(1) + blk(2) + [9]`` is 33 tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costguard.engine.caches.prefix import PrefixCacheSimulator, PrefixLookup, derive_num_gpu_blocks

BS = 16


def blk(c: int, n: int = BS) -> list[int]:
    return [c] * n


# ------------------------------------------------------------------ block boundaries and the cap


def test_only_full_blocks_are_cached_31_token_prompt_hits_16():
    sim = PrefixCacheSimulator()
    prompt = list(range(31))
    first = sim.admit(prompt)
    assert first == PrefixLookup(prompt_tokens=31, cached_tokens=0, new_blocks=2, evicted_blocks=0)
    assert sim.cached_blocks == 1  # tokens 16..30 are a partial block: never cached
    assert sim.admit(prompt).cached_tokens == 16


def test_hit_is_capped_at_n_minus_1_rounded_down_to_blocks():
    sim = PrefixCacheSimulator()
    p32 = list(range(32))
    sim.admit(p32)
    assert sim.cached_blocks == 2
    # both blocks are cached, but 31 // 16 = 1 block may hit
    assert sim.admit(p32).cached_tokens == 16

    sim = PrefixCacheSimulator()
    p33 = list(range(33))
    sim.admit(p33)
    assert sim.admit(p33).cached_tokens == 32


def test_fully_cached_prompt_recomputes_its_last_block_every_time():
    sim = PrefixCacheSimulator()
    prompt = blk(1) + blk(2) + blk(3)  # 48 tokens, every block full
    assert sim.admit(prompt).cached_tokens == 0
    for _ in range(3):
        lookup = sim.admit(prompt)
        assert lookup.cached_tokens == 32
        assert lookup.new_blocks == 1
        assert lookup.computed_prompt_tokens == 16


def test_divergence_mid_block_hits_only_the_whole_blocks_before_it():
    sim = PrefixCacheSimulator()
    shared = list(range(100, 120))  # 20 tokens: block 0 and 4 tokens of block 1
    sim.admit(shared + [1] * 20)
    assert sim.admit(shared + [2] * 20).cached_tokens == 16


def test_lookup_stops_at_first_miss_even_if_later_blocks_match():
    sim = PrefixCacheSimulator()
    sim.admit(blk(1) + blk(2) + blk(3) + [9])
    assert sim.admit(blk(1) + blk(7) + blk(3) + [9]).cached_tokens == 16


# ------------------------------------------------------------------ chained keys


def test_same_block_content_at_another_position_does_not_hit():
    sim = PrefixCacheSimulator()
    sim.admit(blk(5) + [0])  # caches blk(5) at position 0 only
    # content-only keys would hit all four blocks; chained keys hit position 0 only
    assert sim.admit(blk(5) * 4 + [0]).cached_tokens == 16


def test_same_block_content_after_a_different_parent_does_not_hit():
    sim = PrefixCacheSimulator()
    sim.admit(blk(1) + blk(5) + [0])  # caches 1 -> 5
    sim.admit(blk(2) + [0])  # caches 2
    # block 0 (=2) hits; block 1 (=5) is cached, but only after parent 1
    assert sim.admit(blk(2) + blk(5) + [0]).cached_tokens == 16
    assert sim.admit(blk(1) + blk(5) + [0]).cached_tokens == 32


def test_extra_key_isolates_namespaces_that_share_a_pool():
    prompt = blk(1) + blk(2) + [0]
    sim = PrefixCacheSimulator()
    sim.admit(prompt, extra_key="lora-a")
    assert sim.admit(prompt, extra_key="lora-b").cached_tokens == 0
    assert sim.admit(prompt).cached_tokens == 0  # no extra key is its own namespace
    assert sim.admit(prompt, extra_key="lora-a").cached_tokens == 32
    assert sim.admit(prompt, extra_key=b"lora-a").cached_tokens == 32  # str == its UTF-8 bytes

    salted = PrefixCacheSimulator(extra_key="salt")
    plain = PrefixCacheSimulator()
    salted.admit(prompt)
    plain.admit(prompt)
    assert salted.admit(prompt).cached_tokens == plain.admit(prompt).cached_tokens == 32
    assert salted._root != plain._root


# ------------------------------------------------------------------ generated tokens


def test_multi_turn_follow_up_hits_the_blocks_covering_prompt_and_output():
    sim = PrefixCacheSimulator()
    prompt1 = list(range(1000, 1040))  # 40 tokens
    output1 = list(range(2000, 2025))  # 25 tokens: 40 + 25 - 1 = 64 computed -> 4 full blocks
    sim.admit(prompt1, output1)
    assert sim.cached_blocks == 4
    turn2 = prompt1 + output1 + list(range(3000, 3010))  # 75 tokens
    lookup = sim.admit(turn2)
    assert lookup.cached_tokens == 64  # (40 + 25) // 16 blocks
    assert lookup.new_blocks == 1  # ceil(75 / 16) = 5 held, 4 hit


def test_last_sampled_token_is_never_computed_so_never_cached():
    sim = PrefixCacheSimulator()
    prompt1 = list(range(1000, 1040))
    output1 = list(range(2000, 2024))  # 40 + 24 = 64, but only 63 tokens go through the model
    first = sim.admit(prompt1, output1)
    assert first.new_blocks == 4  # ceil(63 / 16)
    assert sim.cached_blocks == 3
    assert sim.admit(prompt1 + output1 + [7] * 10).cached_tokens == 48


def test_output_known_only_by_count_takes_room_but_never_hits():
    sim = PrefixCacheSimulator(num_gpu_blocks=5)  # 4 usable blocks
    first = sim.admit(blk(1) + [0], num_output_tokens=40)  # 17 + 39 = 56 -> 4 held, 3 cached
    assert first.new_blocks == 4
    assert sim.cached_blocks == 3
    # 2 new blocks: 1 fresh (the freed partial block) + 1 eviction, the deepest unknown block
    second = sim.admit(blk(2) + [0])
    assert second.evicted_blocks == 1
    assert sim.admit(blk(1) + blk(3) + [0]).cached_tokens == 16
    with pytest.raises(ValueError):
        sim.admit(blk(1), [1, 2], num_output_tokens=2)


# ------------------------------------------------------------------ capacity and eviction


def test_eviction_frees_the_deepest_blocks_first_then_least_recently_used():
    # 5 GPU blocks = null block + 4 usable.  Hand trace (free queue front -> back, F = key-less):
    sim = PrefixCacheSimulator(num_gpu_blocks=5)
    assert sim.usable_blocks == 4
    # R1: A0 A1 + 1 token: holds 3 (2 cached + partial).  queue [A1, A0], F=2
    assert sim.admit(blk(1) + blk(2) + [0]).evicted_blocks == 0
    # R2: B0 + 1: holds 2 from F.  queue [A1, A0, B0], F=1
    assert sim.admit(blk(3) + [0]).evicted_blocks == 0
    # R3: C0 + 1: holds 2: 1 from F, 1 evicted from the front = A1, the tail of R1's chain.
    #     queue [A0, B0, C0], F=1
    r3 = sim.admit(blk(4) + [0])
    assert r3.evicted_blocks == 1
    # R4: A0 A1 + 1: A0 survived (deepest-first freeing), A1 did not -> hit 16, not 0 or 32.
    #     touches A0; needs 2 new: 1 from F, evicts B0 (LRU front).  queue [C0, A1', A0], F=1
    r4 = sim.admit(blk(1) + blk(2) + [0])
    assert (r4.cached_tokens, r4.new_blocks, r4.evicted_blocks) == (16, 2, 1)
    # R5: C0 survives (B0, older, was evicted instead)
    assert sim.admit(blk(4) + [0]).cached_tokens == 16
    # R6: B0 is gone
    assert sim.admit(blk(3) + [0]).cached_tokens == 0
    assert sim.evictions == 3  # R3, R4 and R6 (2 blocks needed, F=1) evicted one block each


def test_identical_block_copies_are_kept_and_a_surviving_copy_still_hits():
    # vLLM does not de-duplicate: recomputing the capped last block stores a second copy.
    sim = PrefixCacheSimulator(num_gpu_blocks=4)  # 3 usable
    prompt = blk(1) + blk(2)  # 32 tokens
    sim.admit(prompt)  # queue [A1, A0], F=1
    assert sim.admit(prompt).cached_tokens == 16  # hits A0, recomputes A1 as copy A1'
    assert sim.cached_blocks == 3  # queue [A1, A1', A0], F=0
    # X0 (16 tokens, 1 block) evicts the front: the OLD copy A1; A1' keeps the key alive
    assert sim.admit(blk(9)).evicted_blocks == 1
    assert sim.admit(prompt + [0]).cached_tokens == 32


def test_request_larger_than_the_pool_caches_what_fits():
    sim = PrefixCacheSimulator(num_gpu_blocks=3)  # 2 usable
    prompt = list(range(100))  # 7 blocks
    first = sim.admit(prompt)
    assert first.new_blocks == 2
    assert sim.oversized_requests == 1
    assert sim.cached_blocks == 2
    assert sim.admit(prompt).cached_tokens == 32


def test_memory_is_bounded_by_the_pool():
    rng = np.random.default_rng(0)
    sim = PrefixCacheSimulator(num_gpu_blocks=50)
    for _ in range(300):
        sim.admit(rng.integers(0, 1000, int(rng.integers(1, 200)), dtype=np.uint32))
    assert sim.cached_blocks <= 49
    assert len(sim._first) + sum(map(len, sim._copies.values())) == sim.cached_blocks


def test_unlimited_capacity_never_evicts():
    sim = PrefixCacheSimulator(num_gpu_blocks=None)
    for i in range(50):
        assert sim.admit(blk(i) * 3 + [0]).evicted_blocks == 0
    assert sim.cached_blocks == 150
    assert all(sim.admit(blk(i) * 3 + [0]).cached_tokens == 48 for i in range(50))


# ------------------------------------------------------------------ counters, inputs, reset


def test_counters_follow_vllm_definition():
    sim = PrefixCacheSimulator()
    lookups = [sim.admit(p) for p in (list(range(40)), list(range(40)), list(range(33)), [5] * 3)]
    assert sim.requests == 4
    assert sim.queries == 40 + 40 + 33 + 3
    assert sim.hits == sum(lk.cached_tokens for lk in lookups) == 0 + 32 + 32 + 0
    assert sim.hit_rate == pytest.approx(64 / 116)
    sim.reset_counters()
    assert (sim.requests, sim.queries, sim.hits, sim.hit_rate) == (0, 0, 0, 0.0)
    assert sim.admit(list(range(40))).cached_tokens == 32  # cache kept
    sim.reset()
    assert sim.cached_blocks == 0
    assert sim.admit(list(range(40))).cached_tokens == 0


def test_accepts_lists_tuples_and_numpy_arrays_of_any_integer_dtype():
    prompt = list(range(40))
    for variant in (tuple(prompt), np.array(prompt, dtype=np.int64), np.array(prompt, np.uint16)):
        sim = PrefixCacheSimulator()
        sim.admit(prompt)
        assert sim.admit(variant).cached_tokens == 32


@pytest.mark.parametrize(
    "bad, error",
    [([], ValueError), ([-1, 2], ValueError), ([2**32], ValueError), (np.array([1.5]), TypeError)],
)
def test_rejects_invalid_prompts(bad, error):
    with pytest.raises(error):
        PrefixCacheSimulator().admit(bad)


def test_rejects_invalid_configuration():
    with pytest.raises(ValueError):
        PrefixCacheSimulator(block_size=0)
    with pytest.raises(ValueError):
        PrefixCacheSimulator(num_gpu_blocks=0)
    with pytest.raises(TypeError):
        PrefixCacheSimulator(extra_key=3)  # type: ignore[arg-type]


def test_admit_many_equals_admitting_one_by_one():
    prompts = [blk(1) + [i] for i in range(5)] + [blk(1) + blk(2) + [0]] * 2
    outputs = [[7] * 20] * len(prompts)
    a, b = PrefixCacheSimulator(num_gpu_blocks=6), PrefixCacheSimulator(num_gpu_blocks=6)
    assert a.admit_many(prompts, outputs) == [
        b.admit(p, o) for p, o in zip(prompts, outputs, strict=True)
    ]
    assert PrefixCacheSimulator().admit_many(prompts)[-1].cached_tokens == 32


# ------------------------------------------------------------------ against a slow reference


class ReferenceAPC:
    """A slow, literal model of vLLM's V1 KV cache manager, for one request at a time.

    Block objects with ref counts, a Python list as FreeKVCacheBlockQueue (block 0 is the null
    block), keys = the whole token prefix (collision-free), prefill then one decode step per
    generated token, caching full blocks after every step, freeing in reverse order with key-less
    blocks to the front.
    """

    def __init__(self, block_size: int, num_gpu_blocks: int) -> None:
        self.bs = block_size
        self.blocks = [{"id": i, "ref": 0, "key": None} for i in range(num_gpu_blocks)]
        self.free = self.blocks[1:]
        self.cached: dict = {}  # key -> list of blocks holding it, oldest first

    def admit(self, prompt, output, extra=None) -> tuple[int, int, int, int]:
        bs, tokens, n_prompt = self.bs, list(prompt) + list(output), len(prompt)

        def key(i):
            return (extra, tuple(tokens[: (i + 1) * bs]))

        hits = []
        for i in range((n_prompt - 1) // bs):
            copies = self.cached.get(key(i))
            if not copies:
                break
            hits.append(copies[0])
        for b in hits:
            if b["ref"] == 0:
                self.free.remove(b)
            b["ref"] += 1

        req, evicted, n_cached = list(hits), 0, len(hits)
        usable = len(self.blocks) - 1
        total = min(n_prompt + max(len(output) - 1, 0), usable * bs)

        def step(done):
            nonlocal evicted, n_cached
            for _ in range(-(-done // bs) - len(req)):
                b = self.free.pop(0)
                if b["key"] is not None:
                    self.cached[b["key"]].remove(b)
                    if not self.cached[b["key"]]:
                        del self.cached[b["key"]]
                    b["key"] = None
                    evicted += 1
                b["ref"] += 1
                req.append(b)
            for i in range(n_cached, done // bs):
                req[i]["key"] = key(i)
                self.cached.setdefault(key(i), []).append(req[i])
            n_cached = max(n_cached, done // bs)

        done = min(n_prompt, total)
        step(done)
        while done < total:
            done += 1
            step(done)

        fresh, keyed = [], []
        for b in reversed(req):
            b["ref"] -= 1
            if b["ref"] == 0:
                (fresh if b["key"] is None else keyed).append(b)
        self.free[:0] = fresh
        self.free.extend(keyed)
        return n_prompt, len(hits) * bs, len(req) - len(hits), evicted


@st.composite
def workloads(draw):
    block_size = draw(st.integers(1, 4))
    capacity = draw(st.one_of(st.none(), st.integers(1, 14)))
    vocab = draw(st.integers(1, 3))
    tokens = st.integers(0, vocab - 1)
    bases = draw(st.lists(st.lists(tokens, min_size=1, max_size=14), min_size=1, max_size=3))
    requests, previous = [], None
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["base", "random", "follow-up"]))
        if kind == "follow-up" and previous is not None:
            prompt = previous[0] + previous[1] + draw(st.lists(tokens, min_size=1, max_size=4))
        elif kind == "base":
            base = draw(st.sampled_from(bases))
            prompt = base[: draw(st.integers(1, len(base)))] + draw(st.lists(tokens, max_size=5))
        else:
            prompt = draw(st.lists(tokens, min_size=1, max_size=20))
        output = draw(st.lists(tokens, max_size=8))
        extra = draw(st.sampled_from([None, None, None, "lora"]))
        requests.append((prompt, output, extra))
        previous = (prompt, output)
    return block_size, capacity, requests


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_matches_slow_reference_model_of_vllm(workload):
    block_size, capacity, requests = workload
    sim = PrefixCacheSimulator(block_size=block_size, num_gpu_blocks=capacity)
    # "unlimited" for the reference: a pool larger than everything the workload can hold
    ref_blocks = capacity or 1 + sum(len(p) + len(o) for p, o, _ in requests)
    ref = ReferenceAPC(block_size, ref_blocks)
    for prompt, output, extra in requests:
        got = sim.admit(prompt, output, extra_key=extra)
        expected = ref.admit(prompt, output, extra)
        assert (
            got.prompt_tokens,
            got.cached_tokens,
            got.new_blocks,
            got.evicted_blocks,
        ) == expected
        assert got.cached_tokens % block_size == 0 and got.cached_tokens <= len(prompt) - 1
    if capacity is None:  # unlimited: distinct blocks (copies cannot change a hit)
        assert sim.cached_blocks == len(ref.cached)
    else:
        assert sim.cached_blocks == sum(len(v) for v in ref.cached.values())
    assert sim.queries == sum(len(p) for p, _, _ in requests)


# ------------------------------------------------------------------ pool size from memory


def test_derive_num_gpu_blocks_single_gpu_by_hand():
    # Llama-3.1-8B shape: 32 layers, 8 KV heads, head_dim 128, fp16 -> 2 MiB per 16-token block.
    # 80 GiB x 0.9 = 72 GiB - 16 GiB weights - 2 GiB overhead = 54 GiB = 27,648 blocks.
    assert (
        derive_num_gpu_blocks(
            gpu_memory_gb=80,
            gpu_memory_utilization=0.9,
            weights_gb=16,
            num_layers=32,
            num_kv_heads=8,
            head_dim=128,
        )
        == 27_648
    )


def test_derive_num_gpu_blocks_tensor_parallel_by_hand():
    # 70B shape on TP=4: 2 KV heads per rank -> 2*80*2*128*2*16 B = 1.25 MiB per block;
    # 72 GiB - 140/4 GiB weights - 2 GiB = 35 GiB = 28,672 blocks per rank.
    shape = dict(gpu_memory_gb=80, gpu_memory_utilization=0.9, num_layers=80, head_dim=128)
    assert (
        derive_num_gpu_blocks(**shape, weights_gb=140, num_kv_heads=8, tensor_parallel_size=4)
        == 28_672
    )
    # fewer KV heads than ranks: replicated, one head per rank (half the bytes of two heads)
    assert derive_num_gpu_blocks(
        **shape, weights_gb=160, num_kv_heads=8, tensor_parallel_size=16
    ) == int((72 - 10 - 2) * 2**30 // (2 * 80 * 1 * 128 * 2 * 16))
    # fp8 KV cache halves the block, doubling the count
    assert (
        derive_num_gpu_blocks(
            **shape, weights_gb=140, num_kv_heads=8, tensor_parallel_size=4, kv_dtype_bytes=1
        )
        == 2 * 28_672
    )


def test_derive_num_gpu_blocks_errors_are_clear():
    shape = dict(num_layers=32, num_kv_heads=8, head_dim=128)
    with pytest.raises(ValueError, match="no memory left for the KV cache"):
        derive_num_gpu_blocks(gpu_memory_gb=24, gpu_memory_utilization=0.9, weights_gb=30, **shape)
    with pytest.raises(ValueError, match="max_model_len=131072 needs 8192 KV blocks"):
        derive_num_gpu_blocks(
            gpu_memory_gb=24,
            gpu_memory_utilization=0.9,
            weights_gb=15,
            max_model_len=131_072,
            **shape,
        )
    with pytest.raises(ValueError, match="not divisible"):
        derive_num_gpu_blocks(
            gpu_memory_gb=80,
            gpu_memory_utilization=0.9,
            weights_gb=15,
            tensor_parallel_size=3,
            **shape,
        )
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        derive_num_gpu_blocks(gpu_memory_gb=80, gpu_memory_utilization=1.5, weights_gb=15, **shape)
