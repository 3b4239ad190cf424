"""The prefix-cache simulator against vLLM 0.33's real V1 KVCacheManager, request for request.

The oracle drives the manager one request at a time the way `Scheduler.schedule` does:
`get_computed_blocks`, `allocate_slots` for the rest of the prompt (with the drafter's lookahead
slots), `record_prefix_cache_stats`, one `allocate_slots` per decode step as sampled tokens are
appended, then `free`. Every request's cached tokens, and vLLM's prefix-cache stats, must equal
the simulator's.
"""

from __future__ import annotations

from tests.conformance.kv_streams import Stream, streams


def test_simulator_matches_vllms_kv_cache_manager_request_for_request(vllm_oracle):
    matrix = streams()
    answers = vllm_oracle.ask("kv", runs=[s.payload() for s in matrix])
    kinds = set()
    for stream, vllm in zip(matrix, answers, strict=True):
        hits, sim = stream.simulate()
        mismatches = [
            (i, ours, theirs)
            for i, (ours, theirs) in enumerate(zip(hits, vllm["hits"], strict=True))
            if ours != theirs
        ]
        assert not mismatches, (
            f"{stream.name}: {len(mismatches)} of {len(hits)} requests differ "
            f"(request, costguard, vLLM): {mismatches[:5]}"
        )
        # The counters behind vllm:prefix_cache_queries_total / _hits_total.
        assert (sim.queries, sim.hits) == (vllm["queries"], vllm["stat_hits"]), stream.name
        assert sim.requests - sim.skipped_lookups == vllm["stat_requests"], stream.name
        kinds |= _kinds(stream, sim)
    # The matrix really exercises what it claims to.
    assert kinds == {"hits", "evictions", "lookahead", "drop", "prompt_logprobs", "block multiple"}


def _kinds(stream: Stream, sim) -> set[str]:
    found = set()
    if sim.hits:
        found.add("hits")
    if sim.evictions:
        found.add("evictions")
    if stream.hash_lookahead_tokens:
        found.add("lookahead")
    if stream.drop_last_block:
        found.add("drop")
    if sim.skipped_lookups:
        found.add("prompt_logprobs")
    if any(len(r["prompt"]) % stream.block_size == 0 for r in stream.requests):
        found.add("block multiple")
    return found
