"""The stack's KV prefix caches: one vLLM prefix-cache simulator per tier instance.

Each replica of a tier (`hardware.replicas`) is one vLLM engine with its own block pool, so it
gets its own `PrefixCacheSimulator`. How a tier's requests spread over its replicas is the load
balancer's choice (`caches.prefix.replica_routing`):

* ``round_robin`` (default, like vLLM production-stack's default router and a plain Kubernetes
  Service): the tier's requests go to its replicas in turn, in arrival order. A conversation's
  turns can land on different replicas and then cannot reuse each other's blocks.
* ``session``: sticky by the requested model, the system prompt and the first user message (a
  stand-in for a session id), so every turn of a conversation reaches the same replica.

An instance behaves like the tier's vLLM (`costguard.model.vllm_facts`): an EAGLE-style
speculative drafter changes block keys (or drops the last hit block), requests with
`prompt_logprobs` skip the lookup, and hybrid full + sliding-window models are refused with the
reason (their separate KV groups are not modelled).

Capacity per instance is declared (`kv_cache.num_gpu_blocks`), derived from the tier's GPU memory
(`kv_cache.derive`), or unbounded when neither is given (no eviction: an upper bound on reuse).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from costguard.errors import ConfigError
from costguard.model import vllm_facts
from costguard.model.config import StackConfig, TierConfig
from costguard.model.fixtures import Fixture, message_text

if TYPE_CHECKING:
    import numpy as np

    from costguard.engine.caches.prefix import PrefixCacheSimulator, PrefixLookup

VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = vllm_facts.DEFAULT_GPU_MEMORY_UTILIZATION


@dataclass(frozen=True)
class KvCapacity:
    """One instance's KV cache: block size, pool size and where the pool size came from."""

    block_size: int
    num_gpu_blocks: int | None  # None: unbounded
    source: str  # "declared" | "derived" | "unbounded"

    @property
    def tokens(self) -> int | None:
        """Tokens the pool holds (vLLM reserves one null block)."""
        return None if self.num_gpu_blocks is None else (self.num_gpu_blocks - 1) * self.block_size


def kv_capacity(tier: TierConfig) -> KvCapacity:
    """Resolve a tier's KV capacity; ValueError when a derivation leaves no room for the cache.

    Derivation follows vLLM's profiling (see `derive_num_gpu_blocks`) per GPU of the instance:
    weights and layers are split over pipeline stages, KV heads over tensor-parallel ranks.
    """
    kv = tier.kv_cache
    if kv.num_gpu_blocks is not None:
        return KvCapacity(kv.block_size, kv.num_gpu_blocks, "declared")
    if kv.derive is None:
        return KvCapacity(kv.block_size, None, "unbounded")
    from costguard.engine.caches.kv_memory import derive_num_gpu_blocks

    d = kv.derive
    pp = tier.serve.pipeline_parallel_size
    assert tier.hardware.gpu_memory_gb is not None  # TierConfig requires it with derive:
    blocks = derive_num_gpu_blocks(
        gpu_memory_gb=tier.hardware.gpu_memory_gb,
        gpu_memory_utilization=tier.serve.gpu_memory_utilization
        or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
        weights_gb=d.weights_gb / pp,
        num_layers=-(-d.num_layers // pp),
        num_kv_heads=d.num_kv_heads,
        head_dim=d.head_dim,
        kv_dtype_bytes=d.kv_dtype_bytes,
        block_size=kv.block_size,
        tensor_parallel_size=tier.serve.tensor_parallel_size,
        overhead_gb=d.overhead_gb,
        max_model_len=tier.serve.max_model_len,
    )
    return KvCapacity(kv.block_size, blocks, "derived")


# Requests simulated between two hand-backs of the token-id pages read (`release_pages`): a few
# tens of MB of ids in memory at a time.
RELEASE_PAGES_EVERY = 1 << 15


def simulated_tiers(config: StackConfig, where: Callable[..., str] | None = None) -> list[str]:
    """Tiers whose prefix caching is simulated: the layer is on and vLLM's APC is not turned off.

    Raises ConfigError for a tier whose model mixes full and sliding-window attention: the
    simulator does not model vLLM's separate KV groups, and a wrong hit rate is worse than none.
    """
    if not config.caches.prefix.enabled:
        return []
    names = []
    for i, tier in enumerate(config.tiers):
        if not tier.serve.enable_prefix_caching:
            continue
        if hybrid_attention(tier):
            raise ConfigError(
                f"tier {tier.name!r} ({tier.model}): {vllm_facts.HYBRID_ATTENTION_LIMITATION}; "
                "turn the simulation off (caches.prefix.enabled: false) or the tier's prefix "
                "caching (serve.enable_prefix_caching: false), or set kv_cache.attention: full if "
                "the model has no sliding-window layers",
                key=where("tiers", i, "kv_cache", "attention")
                if where
                else f"tiers[{i}].kv_cache.attention",
            )
        names.append(tier.name)
    return names


def hybrid_attention(tier: TierConfig) -> bool:
    """Whether the tier serves a hybrid full + sliding-window attention model: declared by
    `kv_cache.attention`, or (auto) a well-known hybrid family not served with
    `--disable-sliding-window` (which makes every layer full attention)."""
    declared = tier.kv_cache.attention
    if declared != "auto":
        return declared == "hybrid"
    if "--disable-sliding-window" in tier.serve.engine_args:
        return False
    model = tier.model.lower()
    return any(marker in model for marker in vllm_facts.HYBRID_ATTENTION_MODEL_MARKERS)


def speculative_prefix_behaviour(tier: TierConfig) -> dict[str, Any]:
    """How the tier's `--speculative-config` changes vLLM's prefix cache (simulator arguments)."""
    spec = tier.serve.speculative
    on = tier.serve.enable_prefix_caching
    return {
        "hash_lookahead_tokens": vllm_facts.hash_lookahead_tokens(spec, prefix_caching=on),
        "drop_last_block": vllm_facts.drops_last_cached_block(spec),
        "speculative_slots": vllm_facts.speculative_lookahead_slots(spec),
    }


def conversation_replies(fixtures: Sequence[Fixture]) -> dict[int, str]:
    """Assistant replies that later fixtures show following each fixture's messages.

    When a fixture's messages are [m1..mk] and another fixture's start with [m1..mk, assistant
    reply, ...], that reply is what the conversation records the model answering, so it is what
    the first request generated (and cached as KV blocks) for the follow-up to reuse. The first
    such continuation in fixture order wins.
    """

    def key(messages: Sequence[dict[str, Any]], model: str | None) -> str:
        payload = json.dumps(
            [model or "", [[m["role"], message_text(m), m.get("tool_calls")] for m in messages]],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    continuation: dict[str, str] = {}
    for fx in fixtures:
        if not fx.may_show_replies:  # (stored messages are not read for this)
            continue
        for k, message in enumerate(fx.messages):
            if k and message["role"] == "assistant" and message_text(message):
                continuation.setdefault(key(fx.messages[:k], fx.model), message_text(message))
    if not continuation:
        return {}
    replies = {}
    for i, fx in enumerate(fixtures):
        reply = continuation.get(key(fx.messages, fx.model))
        if reply is not None:
            replies[i] = reply
    return replies


def skips_cache_read(fixture: Fixture) -> bool:
    """vLLM skips the prefix-cache lookup for requests asking for prompt logprobs."""
    return fixture.sampling.prompt_logprobs is not None


def session_key(fixture: Fixture) -> int:
    """Stable across processes (not Python's salted hash): model, system prompt, first user message."""
    first_user = next((message_text(m) for m in fixture.messages if m["role"] == "user"), "")
    payload = json.dumps([fixture.model or "", fixture.system_text, first_user], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")


class PrefixCacheFleet:
    """Every simulated tier's instances, fed the stack's requests in arrival order."""

    def __init__(self, config: StackConfig, capacities: dict[str, KvCapacity]) -> None:
        from costguard.engine.caches.prefix import PrefixCacheSimulator

        self.routing = config.caches.prefix.replica_routing
        self.capacities = capacities
        self.instances: dict[str, list[PrefixCacheSimulator]] = {}
        for name in simulated_tiers(config):
            cap = capacities[name]
            replicas = config.tier(name).hardware.replicas
            speculative = speculative_prefix_behaviour(config.tier(name))
            self.instances[name] = [
                PrefixCacheSimulator(
                    block_size=cap.block_size, num_gpu_blocks=cap.num_gpu_blocks, **speculative
                )
                for _ in range(replicas)
            ]
        self._turn = dict.fromkeys(self.instances, 0)

    def simulates(self, tier: str) -> bool:
        return tier in self.instances

    def instance_for(self, tier: str, fixture: Fixture, *, advance: bool = True) -> int:
        """Which replica of `tier` serves this request (advancing the round-robin turn unless told not to)."""
        n = len(self.instances[tier])
        if n == 1:
            return 0
        if self.routing == "session":
            return session_key(fixture) % n
        turn = self._turn[tier]
        if advance:
            self._turn[tier] = turn + 1
        return turn % n

    def peek(self, tier: str, fixture: Fixture, prompt_ids: Sequence[int]) -> int:
        """Cached prompt tokens the request would reuse if it reached the tier now (nothing changes):
        what a result-cache hit would otherwise have paid for at the cached rate."""
        return self.instances[tier][self.instance_for(tier, fixture, advance=False)].peek(
            prompt_ids, skip_cache_read=skips_cache_read(fixture)
        )

    def admit(
        self,
        tier: str,
        fixture: Fixture,
        prompt_ids: Sequence[int],
        *,
        output_ids: Sequence[int] | np.ndarray | None = None,
        num_output_tokens: int = 0,
    ) -> tuple[int, PrefixLookup]:
        """Run one request on one of the tier's instances: (instance index, what the cache did).

        With `output_ids` (the generated tokens, known from the conversation) the generated
        blocks can be hit by a follow-up; with only `num_output_tokens` they take room but never hit.
        """
        instance = self.instance_for(tier, fixture)
        sim = self.instances[tier][instance]
        skip = skips_cache_read(fixture)
        if output_ids is not None:
            return instance, sim.admit(prompt_ids, output_ids, skip_cache_read=skip)
        return instance, sim.admit(
            prompt_ids, num_output_tokens=num_output_tokens, skip_cache_read=skip
        )

    def simulate(
        self,
        work: dict[str, list[int]],
        *,
        order: Sequence[int],
        planned: Sequence[Any],
        results: Sequence[Any],
        outcomes: dict[int, Any],
        replies: dict[str, dict[int, Any]],
    ) -> tuple[dict[int, tuple[int, int, str]], dict[str, dict[str, Any]]]:
        """Each tier's calls of `work` (tier -> arrivals, in arrival order), tier by tier (tiers
        share no instance): (arrival -> (cached prompt tokens, instance, generated blocks),
        the summary of those tiers). Instance -1: the lookup of a request a result cache
        answered (nothing changes). `planned`, `results`: the calls and their results by
        arrival; `outcomes`: result-cache outcomes by fixture index; `replies`: per tier, the
        token ids of the reply a later fixture of the conversation shows."""
        import numpy as np

        from costguard.text.tokenization.id_snapshots import release_pages

        done: dict[int, tuple[int, int, str]] = {}
        for tier, arrivals in work.items():
            tier_replies = replies.get(tier, {})
            for k, arrival in enumerate(arrivals, 1):
                i = order[arrival]
                call, result = planned[arrival], results[arrival]
                ids = call.prompt_ids
                if not k % RELEASE_PAGES_EVERY:  # the ids' pages read so far: handed back
                    release_pages(ids)
                if outcomes[i].outcome in ("exact", "semantic"):
                    done[arrival] = (self.peek(tier, call.fixture, ids), -1, "")
                    continue
                reply = tier_replies.get(i)
                if reply is not None:
                    # The reply's tokens, then the stop token: sampled last, never computed, so
                    # its id never enters a block (0 is a placeholder).
                    output = np.append(np.asarray(reply, np.uint32), 0)
                    instance, lookup = self.admit(tier, call.fixture, ids, output_ids=output)
                    kind = "conversation"
                else:
                    instance, lookup = self.admit(
                        tier, call.fixture, ids, num_output_tokens=result.output_tokens
                    )
                    kind = "count only"
                done[arrival] = (lookup.cached_tokens, instance, kind)
        summary = self.summary()
        return done, {t: summary[t] for t in work}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per simulated tier: capacity and its source, routing, and the simulation's own counters
        over the fixtures (one admission per fixture, not monthly figures)."""
        out = {}
        for name, sims in self.instances.items():
            cap = self.capacities[name]
            out[name] = {
                "instances": len(sims),
                "replica_routing": self.routing,
                "block_size": cap.block_size,
                "num_gpu_blocks": cap.num_gpu_blocks,
                "capacity_tokens": cap.tokens,
                "capacity_source": cap.source,
                "hash_lookahead_tokens": sims[0].hash_lookahead_tokens if sims else 0,
                "drop_last_block": sims[0].drop_last_block if sims else False,
                "speculative_slots": sims[0].speculative_slots if sims else 0,
                "admitted": sum(s.requests for s in sims),
                "skipped_lookups": sum(s.skipped_lookups for s in sims),
                "queried_tokens": sum(s.queries for s in sims),
                "hit_tokens": sum(s.hits for s in sims),
                "evicted_blocks": sum(s.evictions for s in sims),
                "oversized_requests": sum(s.oversized_requests for s in sims),
            }
        return out
