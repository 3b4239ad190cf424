"""Offline simulator of vLLM's automatic prefix caching (APC), one per tier instance.

It answers "how many prompt tokens would vLLM have served from its KV cache?" for a sequence of
requests, so a PR that breaks prefix reuse (a per-request value moved above a long shared system
prompt, a reordered few-shot block) shows up as lost cached tokens.

The accounting follows vLLM's V1 KV cache manager (checked against vLLM 0.33.0, the release in
``costguard.model.vllm_facts``, and proven request for request against its real ``KVCacheManager``
by the conformance tier in ``tests/conformance/``):

* ``vllm/v1/core/kv_cache_utils.py`` ``hash_block_tokens``: a block's key chains the parent
  block's key with the block's token ids (+ extra keys: LoRA on every block, ``cache_salt`` on the
  first one).  Only full blocks have a key.
* ``FullAttentionManager.find_longest_cache_hit``: walk the blocks from the start, stop at the
  first miss, look at no more than ``max_cache_hit_length // block_size`` blocks.
* ``KVCacheManager.get_computed_blocks``: ``max_cache_hit_length = request.num_tokens - 1``: a
  fully cached prompt still recomputes its last block (the hit is block aligned).
* ``BlockPool.touch``: a hit block that sits in the free queue is taken out of it (so allocating
  the rest of the request can never evict it).
* ``BlockPool.get_new_blocks``: new blocks are popped from the front of ``FreeKVCacheBlockQueue``;
  popping a cached block evicts it (``_maybe_evict_cached_block``).
* ``KVCacheManager.allocate_slots``: full blocks are cached up to
  ``min(num_computed + num_new, request.num_tokens)``, prompt blocks and generated blocks alike.
  The last sampled token is never fed back through the model (the request stops first), so a
  request with P prompt and O >= 1 output tokens computes, holds and can cache
  ``P + O - 1`` tokens: ``(P + O - 1) // block_size`` full blocks.
* ``SingleTypeKVCacheManager.free`` / ``BlockPool.free_blocks``: a finished request's blocks are
  freed in reverse order; blocks without a key go to the FRONT of the free queue (reused first,
  they hold nothing), keyed blocks are appended to the back deepest-first, so the queue is an LRU
  in which a request's tail blocks are evicted before its head.  (Releases older than this change,
  proposed in vLLM PR #33710 in early 2026, append every freed block; it matters only once the
  pool is full.)
* ``BlockPool.__init__``: block 0 is the reserved null block, so ``num_gpu_blocks - 1`` blocks
  hold KV data (``vllm:cache_config_info`` reports ``num_gpu_blocks`` including it).
* ``BlockHashToBlockMap``: identical blocks are not de-duplicated.  Recomputing the last block of
  a fully cached prompt, or regenerating the same output, stores a second copy under the same
  key; a hit takes the oldest surviving copy.  Copies are modelled, so eviction matches exactly.
* ``PrefixCacheStats.record``: ``queries += prompt tokens``, ``hits += matched tokens`` per request
  (the ``vllm:prefix_cache_queries_total`` / ``vllm:prefix_cache_hits_total`` counters).

Where vLLM departs from that plain rule (each pinned by a test in ``tests/test_prefix_cache.py``
and by the conformance tier):

* EAGLE-style speculative decoding (EAGLE, EAGLE3, MTP): the drafter's KV at a block's last
  position depends on the next token.  By default (``VllmConfig.num_hash_lookahead_tokens``) each
  block's key also covers the token after it (``get_request_block_hasher``), so a block is only
  hit when that token matches too: ``hash_lookahead_tokens=1``.  With
  ``disable_lookahead_block_hashes`` the last matched block of every hit is dropped instead
  (``FullAttentionManager.find_longest_cache_hit``, ``drop_eagle_block``): ``drop_last_block``.
* A speculative drafter makes the scheduler reserve ``num_lookahead_tokens`` slots past the
  computed tokens (``allocate_slots``): a request holds ``ceil((P + O - 1 + slots) / block_size)``
  blocks at its peak.  Draft tokens in flight at the last step (which depend on acceptance) are
  not modelled.
* Requests with ``prompt_logprobs`` skip reading the cache (``skip_reading_prefix_cache``) and
  are left out of the stats (``record_prefix_cache_stats``); their blocks are still written.

Simplifications (deliberate, documented):

* Requests run one at a time, from arrival to completion, in the order given.  In vLLM, running
  requests hold their blocks (those cannot be evicted, leaving less room for cached free blocks)
  and overlapping requests interleave their allocations.  Here all blocks are free between
  requests and capacity matters only through the eviction of freed blocks; with many requests
  in flight and a pool near full, vLLM evicts more than this model does.
* No preemption: vLLM frees a preempted request's blocks and re-prefills it later (hitting what
  survived); here a request is never interrupted.  No chunked-prefill timing or KV connectors.
* Hybrid full + sliding-window models (gpt-oss, Gemma 2/3) and Mamba hybrids are not modelled:
  vLLM keeps one KV group per attention type with its own block accounting.  The stack refuses
  to simulate such tiers (``vllm_facts.HYBRID_ATTENTION_LIMITATION``).
* A request needing more blocks than the whole pool (vLLM refuses to start when ``max_model_len``
  does not fit, and never schedules such a request) is simulated as if its sequence were cut to
  the pool: the first ``num_gpu_blocks - 1`` blocks are held and cached, the rest is not stored.
  ``oversized_requests`` counts these.

Keys: see ``costguard.engine.caches.prefix_keys``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice, takewhile

import numpy as np

from costguard.engine.caches.kv_memory import derive_num_gpu_blocks  # noqa: F401 (re-exported)
from costguard.engine.caches.prefix_keys import as_extra_key, as_u32, chain_keys

_consume: Callable[[Iterable[object]], None] = deque[object](
    maxlen=0
).extend  # run an iterator of side effects at C speed


@dataclass(frozen=True)
class PrefixLookup:
    """What admitting one request did to one instance's prefix cache."""

    prompt_tokens: int
    cached_tokens: int  # served from cache: a multiple of block_size, <= prompt_tokens - 1
    # (0 for a request that skipped reading the cache)
    new_blocks: int  # blocks taken from the free queue for the rest of prompt + output
    evicted_blocks: int  # cached blocks those allocations evicted

    @property
    def computed_prompt_tokens(self) -> int:
        """Prompt tokens that went through prefill (what prefix caching did not save)."""
        return self.prompt_tokens - self.cached_tokens


class PrefixCacheSimulator:
    """vLLM's automatic prefix cache for one engine instance, fed requests one at a time.

    ``num_gpu_blocks`` is the engine's pool size as vLLM reports it (including the null block);
    ``None`` means unlimited capacity (nothing is ever evicted).  ``extra_key`` isolates a cache
    namespace the way a LoRA adapter or ``cache_salt`` does: requests with different extra keys
    never share blocks (str and its UTF-8 bytes are the same key).

    ``hash_lookahead_tokens`` and ``drop_last_block`` model an EAGLE-style speculative drafter
    (see the module docstring; ``vllm_facts.hash_lookahead_tokens`` / ``drops_last_cached_block``
    say which a tier's ``--speculative-config`` implies); ``speculative_slots`` are the KV slots
    a drafter reserves past the computed tokens (``vllm_facts.speculative_lookahead_slots``).

    Memory is bounded by the pool: only blocks that are still cached are tracked.
    """

    def __init__(
        self,
        *,
        block_size: int = 16,
        num_gpu_blocks: int | None = None,
        extra_key: bytes | str | None = None,
        hash_lookahead_tokens: int = 0,
        drop_last_block: bool = False,
        speculative_slots: int = 0,
    ) -> None:
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        if num_gpu_blocks is not None and (
            not isinstance(num_gpu_blocks, int) or num_gpu_blocks < 1
        ):
            raise ValueError(
                f"num_gpu_blocks must be a positive integer or None, got {num_gpu_blocks!r}"
            )
        if not isinstance(hash_lookahead_tokens, int) or hash_lookahead_tokens < 0:
            raise ValueError(
                f"hash_lookahead_tokens must be a non-negative integer, got {hash_lookahead_tokens!r}"
            )
        if not isinstance(speculative_slots, int) or speculative_slots < 0:
            raise ValueError(
                f"speculative_slots must be a non-negative integer, got {speculative_slots!r}"
            )
        if hash_lookahead_tokens and drop_last_block:
            raise ValueError("vLLM drops the last block only without lookahead hashes, not both")
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.hash_lookahead_tokens = hash_lookahead_tokens
        self.drop_last_block = bool(drop_last_block)
        self.speculative_slots = speculative_slots
        self.extra_key = as_extra_key(extra_key)
        self._block_dtype = np.dtype(f"V{4 * block_size}")
        self._root = hash(("costguard.prefix-cache.root", self.extra_key))
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Empty the cache (like vLLM's ``reset_prefix_cache``) and zero every counter."""
        self.reset_counters()
        # Unlimited capacity: the set of cached keys.  Nothing is evicted, so copies do not matter.
        self._cached: set[int] = set()
        # Limited capacity, between requests every block is free:
        #   _fresh  blocks that hold no key (the front of vLLM's free queue),
        #   _queue  block id -> key of cached blocks in eviction order (front evicted first).
        #           An OrderedDict: a plain dict pops its front in time proportional to the
        #           deleted slots before it, 2.4x slower with a 200k-block pool.
        #   _first  key -> block id of its oldest surviving copy (the one a hit takes),
        #   _copies key -> ids of younger copies, oldest first (rare: see module docstring).
        # Blocks of unknown content (output given only as a count) get unique ("unknown", id) keys.
        self._fresh: int = self.usable_blocks or 0  # key-less blocks never used yet
        self._queue: OrderedDict[int, Hashable] = OrderedDict()
        self._first: dict[Hashable, int] = {}
        self._copies: dict[Hashable, list[int]] = {}
        self._next_block_id = 0

    def reset_counters(self) -> None:
        """Zero the counters but keep the cached blocks (e.g. after a warm-up pass)."""
        self.requests = 0
        self.skipped_lookups = 0  # requests that skipped reading the cache (prompt_logprobs)
        self.queries = 0  # prompt tokens looked up (vllm:prefix_cache_queries_total)
        self.hits = 0  # prompt tokens served from cache (vllm:prefix_cache_hits_total)
        self.evictions = 0  # cached blocks evicted to make room
        self.oversized_requests = 0  # requests that needed more blocks than the pool has

    @property
    def hit_rate(self) -> float:
        """Token hit rate, ``hits / queries`` (0.0 before any request), as vLLM logs it."""
        return self.hits / self.queries if self.queries else 0.0

    @property
    def usable_blocks(self) -> int | None:
        """Blocks that can hold KV data: ``num_gpu_blocks`` minus vLLM's null block."""
        return None if self.num_gpu_blocks is None else self.num_gpu_blocks - 1

    @property
    def cached_blocks(self) -> int:
        """Blocks currently cached: with a pool, every copy (each takes a block); unlimited,
        distinct blocks (copies never change a hit there, so they are not tracked)."""
        if self.num_gpu_blocks is None:
            return len(self._cached)
        return len(self._queue)

    # ------------------------------------------------------------------ requests

    def admit(
        self,
        prompt_ids: Sequence[int] | np.ndarray,
        output_ids: Sequence[int] | np.ndarray = (),
        *,
        num_output_tokens: int | None = None,
        extra_key: bytes | str | None = None,
        skip_cache_read: bool = False,
    ) -> PrefixLookup:
        """Run one request from arrival to completion and return what the cache did.

        ``output_ids`` are the generated tokens; their full blocks become cached, so a follow-up
        turn that contains them can hit.  When only the number of generated tokens is known, pass
        ``num_output_tokens`` instead: those blocks still take room (and evict), but can never hit.
        ``extra_key`` (a LoRA adapter name, a ``cache_salt``) is added to the simulator's own:
        requests with different extra keys share the pool but never each other's blocks.
        ``skip_cache_read`` (a request with ``prompt_logprobs``): nothing is read from the cache
        and the request is left out of ``queries``/``hits``, but its blocks are still cached.
        """
        prompt = as_u32(prompt_ids, "prompt_ids")
        n_prompt = len(prompt)
        if n_prompt == 0:
            raise ValueError("prompt_ids is empty (vLLM rejects empty prompts)")
        output = as_u32(output_ids, "output_ids")
        if num_output_tokens is None:
            n_output = len(output)
        elif len(output):
            raise ValueError("pass output_ids or num_output_tokens, not both")
        elif not isinstance(num_output_tokens, int) or num_output_tokens < 0:
            raise ValueError(
                f"num_output_tokens must be a non-negative integer, got {num_output_tokens!r}"
            )
        else:
            n_output = num_output_tokens

        bs = self.block_size
        ahead = self.hash_lookahead_tokens
        # Tokens whose KV is computed and held: the prompt plus every output token except the
        # last sampled one, which the model never reads back (the request stops first).
        n_computed = n_prompt + max(n_output - 1, 0)
        # A speculative drafter also reserves its lookahead slots (`num_lookahead_tokens`).
        n_held = -(-(n_computed + self.speculative_slots) // bs)
        # Full blocks that get cached: a key also covers `ahead` tokens after its block, so it
        # exists once those tokens do. The last block caching happens at the last step that
        # allocates slots, when the computed tokens are all the tokens the request has (the last
        # sampled token arrives after it), so keys reach `n_computed - ahead` tokens.
        n_full = max(n_computed - ahead, 0) // bs
        max_hit = 0 if skip_cache_read else min((n_prompt - 1) // bs, (n_prompt - ahead) // bs)

        # Keys of the full blocks whose tokens (and lookahead tokens) are known.
        if len(output) and n_full * bs + ahead > n_prompt:
            seq = np.concatenate((prompt, output[: n_full * bs + ahead - n_prompt]))
        else:
            seq = prompt
        n_known = min(n_full, max(len(seq) - ahead, 0) // bs)
        keys = self._chain(seq, n_known, extra_key)

        if self.num_gpu_blocks is None:
            cached_blocks, new_blocks, evicted = self._admit_unlimited(keys, max_hit, n_held)
        else:
            cached_blocks, new_blocks, evicted = self._admit_pool(keys, max_hit, n_full, n_held)

        cached_tokens = cached_blocks * bs
        self.requests += 1
        if skip_cache_read:
            self.skipped_lookups += 1
        else:
            self.queries += n_prompt
            self.hits += cached_tokens
        self.evictions += evicted
        return PrefixLookup(n_prompt, cached_tokens, new_blocks, evicted)

    def peek(
        self,
        prompt_ids: Sequence[int] | np.ndarray,
        *,
        extra_key: bytes | str | None = None,
        skip_cache_read: bool = False,
    ) -> int:
        """Prompt tokens a request would find cached right now, changing nothing.

        For a request that never reaches the engine (answered by a result cache): what serving
        it would have reused.  Neither counters, LRU order nor cached blocks change.
        """
        prompt = as_u32(prompt_ids, "prompt_ids")
        if len(prompt) == 0:
            raise ValueError("prompt_ids is empty (vLLM rejects empty prompts)")
        if skip_cache_read:
            return 0
        bs, ahead = self.block_size, self.hash_lookahead_tokens
        max_hit = min((len(prompt) - 1) // bs, (len(prompt) - ahead) // bs)
        keys = self._chain(prompt, max_hit, extra_key)
        table = self._cached if self.num_gpu_blocks is None else self._first
        hit = len(list(takewhile(table.__contains__, keys)))
        if self.drop_last_block and hit:
            hit -= 1
        return hit * bs

    def admit_many(
        self,
        prompts: Iterable[Sequence[int] | np.ndarray],
        outputs: Iterable[Sequence[int] | np.ndarray] | None = None,
    ) -> list[PrefixLookup]:
        """Admit requests in order (``outputs`` pairs up with ``prompts`` when given)."""
        admit = self.admit
        if outputs is None:
            return [admit(p) for p in prompts]
        return [admit(p, o) for p, o in zip(prompts, outputs, strict=True)]

    # ------------------------------------------------------------------ internals

    def _chain(self, seq: np.ndarray, n_blocks: int, extra_key: bytes | str | None) -> list[int]:
        """Chained keys of the first `n_blocks` full blocks of `seq` (each block with the
        `hash_lookahead_tokens` tokens after it, which `seq` must hold)."""
        return chain_keys(
            seq,
            n_blocks,
            block_size=self.block_size,
            block_dtype=self._block_dtype,
            ahead=self.hash_lookahead_tokens,
            root=self._root,
            extra_key=extra_key,
        )

    def _admit_unlimited(self, keys: list[int], max_hit: int, n_held: int) -> tuple[int, int, int]:
        cached = self._cached
        hit = len(list(takewhile(cached.__contains__, keys[:max_hit])))
        if self.drop_last_block and hit:
            hit -= 1
        cached.update(keys[hit:])
        return hit, n_held - hit, 0

    def _admit_pool(
        self, keys: list[int], max_hit: int, n_full: int, n_held: int
    ) -> tuple[int, int, int]:
        assert self.num_gpu_blocks is not None  # the pool path runs only with a capacity
        usable = self.num_gpu_blocks - 1
        if n_held > usable:  # cut the sequence to the pool (see module docstring)
            self.oversized_requests += 1
            n_held = usable
            n_full = min(n_full, usable)
            keys = keys[:n_full]
            max_hit = min(max_hit, usable)
        queue, first, copies = self._queue, self._first, self._copies

        # Lookup: longest run of cached keys from the first block (less the last one when an
        # EAGLE drafter without lookahead hashes needs it recomputed).
        hit = len(list(takewhile(first.__contains__, keys[:max_hit])))
        if self.drop_last_block and hit:
            hit -= 1
        hit_keys = keys[:hit]
        hit_ids = list(map(first.__getitem__, hit_keys))

        # The request holds its hit blocks plus new ones: key-less blocks first, then blocks
        # evicted from the front of the free queue.
        new_blocks = n_held - hit
        from_fresh = min(self._fresh, new_blocks)
        evicted = new_blocks - from_fresh
        # Of the new blocks, the full ones get keys (prompt remainder and generated tokens); the
        # partial tail block goes back key-less.
        self._fresh += n_held - n_full - from_fresh
        start = self._next_block_id
        self._next_block_id = start + n_full - hit
        new_ids = range(start, start + n_full - hit)
        new_keys: list[Hashable] = list(keys[hit:n_full])
        if len(new_keys) < len(new_ids):
            # Output known only by its length: blocks that hold room but can never hit.
            new_keys += [("unknown", i) for i in new_ids[len(new_keys) :]]
        if first.keys().isdisjoint(new_keys):
            first.update(zip(new_keys, new_ids, strict=True))
        else:
            for key, block_id in zip(new_keys, new_ids, strict=True):
                if key in first:
                    copies.setdefault(key, []).append(block_id)
                else:
                    first[key] = block_id

        # Freeing in reverse order puts the request's keyed blocks at the back of the queue,
        # deepest first, hit blocks (touched: taken out of the queue) last.  Doing that before
        # the evictions is equivalent and cheaper: the evictions come from the front, from
        # blocks this request does not hold (there are enough, as n_held <= usable).
        queue.update(zip(reversed(new_ids), reversed(new_keys), strict=True))
        _consume(map(queue.move_to_end, reversed(hit_ids)))
        if evicted:
            victim_ids = list(islice(queue, evicted))
            victim_keys = list(map(queue.pop, victim_ids))
            if not copies:
                _consume(map(first.__delitem__, victim_keys))
            else:
                for block_id, key in zip(victim_ids, victim_keys, strict=True):
                    self._forget(block_id, key)
        return hit, new_blocks, evicted

    def _forget(self, block_id: int, key: Hashable) -> None:
        """Forget an evicted block; a younger copy of the same key becomes the one hits use."""
        copies = self._copies
        younger = copies.get(key)
        if self._first[key] == block_id:
            if younger:
                self._first[key] = younger.pop(0)
                if not younger:
                    del copies[key]
            else:
                del self._first[key]
        else:
            assert younger is not None, "evicted a copy the key table does not know"
            younger.remove(block_id)
            if not younger:
                del copies[key]
