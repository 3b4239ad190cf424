"""Where vLLM 0.33's prefix cache departs from the plain rule, and what costguard does about it.

Every expected number is worked out by hand from vLLM 0.33.0's own algorithm (the function named
beside it, in vllm/v1/core/ and vllm/config/), never read off the simulator. The conformance tier
(tests/conformance/) checks the same cases against vLLM's real KVCacheManager.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from costguard.engine.caches.prefix import PrefixCacheSimulator
from costguard.engine.caches.prefix_fleet import (
    PrefixCacheFleet,
    hybrid_attention,
    simulated_tiers,
    speculative_prefix_behaviour,
)
from costguard.errors import ConfigError
from costguard.model import vllm_facts
from costguard.model.config import load_stack
from costguard.model.fixtures import Expect, Fixture, Sampling
from tests.conftest import run_cli

BS = 4
A = list(range(1, 13))  # 12 prompt tokens: three full blocks of 4


# ---- EAGLE / EAGLE3 / MTP speculative decoding -----------------------------------------------


def test_eagle_lookahead_hashes_need_the_token_after_a_block_to_match():
    """vLLM 0.33 default for EAGLE-style drafters: VllmConfig.num_hash_lookahead_tokens = 1, so
    get_request_block_hasher keys block k on tokens [4k, 4k+4) AND token 4k+4."""
    sim = PrefixCacheSimulator(block_size=BS, hash_lookahead_tokens=1)
    # A: 12 prompt + 2 output tokens ([100, stop]). The last allocate_slots (cache_blocks) runs
    # when 13 tokens exist (the stop token is sampled after it and never computed); a block's
    # hash needs its lookahead token: (k+1)*4 + 1 <= 13 -> blocks 0, 1, 2 cached (block 2 keyed
    # with 100).
    assert sim.admit(A, [100, 0]).cached_tokens == 0
    # B shares A's first 8 tokens, then differs at position 8. Plain rule: max hit
    # (12 - 1) // 4 = 2 blocks, both match -> 8. With lookahead, block 1's key covers token 8,
    # which B has as 50 where A had 9: only block 0 hits -> 4.
    b = A[:8] + [50, 51, 52, 53]
    assert sim.admit(b).cached_tokens == 4
    # C continues A's conversation: A's prompt, A's reply 100, then 3 more tokens (16 in all).
    # Lookup walks min((16-1)//4, (16-1)//4) = 3 hashes; block 2's lookahead token is 100, as in
    # A -> all three hit: 12.
    assert sim.admit(A + [100, 7, 7, 7]).cached_tokens == 12
    # Without a drafter, B would have hit 8 (the plain rule).
    plain = PrefixCacheSimulator(block_size=BS)
    plain.admit(A, [100, 0])
    assert plain.admit(b).cached_tokens == 8


def test_eagle_lookahead_leaves_the_block_completed_last_uncached():
    """The block completed by the last computed token has its lookahead token only once the final
    token is sampled, after the last allocate_slots: vLLM never caches it (and frees it key-less,
    to the front of the free queue)."""
    sim = PrefixCacheSimulator(block_size=BS, hash_lookahead_tokens=1)
    # 6 prompt + 3 output tokens: computed 6 + 2 = 8 tokens, two full blocks; hashes at the last
    # cache_blocks need (k+1)*4 + 1 <= 8 -> only block 0.
    sim.admit([1, 2, 3, 4, 5, 6], [7, 8, 9])
    assert sim.admit([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).cached_tokens == 4  # plain rule: 8
    plain = PrefixCacheSimulator(block_size=BS)
    plain.admit([1, 2, 3, 4, 5, 6], [7, 8, 9])
    assert plain.admit([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).cached_tokens == 8


def test_eagle_without_lookahead_hashes_drops_the_last_matched_block():
    """`disable_lookahead_block_hashes: true`: num_hash_lookahead_tokens = 0, use_eagle_block_drop
    stays on, and FullAttentionManager.find_longest_cache_hit drops one block from every hit."""
    for pool in (None, 64):
        sim = PrefixCacheSimulator(block_size=BS, num_gpu_blocks=pool, drop_last_block=True)
        sim.admit(A, [100, 0])  # caches 3 blocks (13 computed tokens)
        # Resend of A: walk (12-1)//4 = 2 blocks, both hit -> 8, minus one block -> 4.
        assert sim.admit(A).cached_tokens == 4
        # B (differs at token 8): 2 blocks hit -> 8 -> 4.
        assert sim.admit(A[:8] + [50, 51, 52, 53]).cached_tokens == 4
        # C (A + reply + 3): walk 15//4 = 3 blocks, all hit -> 12 -> 8.
        assert sim.admit(A + [100, 7, 7, 7]).cached_tokens == 8
        # A 5-token prompt sharing one block: 1 block hit -> 0 (nothing left after the drop).
        assert sim.admit([1, 2, 3, 4, 99]).cached_tokens == 0
        assert sim.hits == 16 and sim.queries == 12 + 12 + 12 + 16 + 5


def test_which_speculative_configs_change_the_prefix_cache():
    """SpeculativeConfig.needs_eagle_block_drop: eagle, eagle3 and MTP (model-specific *_mtp names
    become mtp); not draft_model, ngram, suffix, dflash, dspark. disable_eagle_block_drop turns it
    off; num_hash_lookahead_tokens needs prefix caching on."""
    lookahead = vllm_facts.hash_lookahead_tokens
    for method in ("eagle", "eagle3", "mtp", "deepseek_mtp", "qwen3_next_mtp"):
        spec = {"method": method, "num_speculative_tokens": 3}
        assert lookahead(spec, prefix_caching=True) == 1
        assert not vllm_facts.drops_last_cached_block(spec)
        no_lookahead = {**spec, "disable_lookahead_block_hashes": True}
        assert lookahead(no_lookahead, prefix_caching=True) == 0
        assert vllm_facts.drops_last_cached_block(no_lookahead)
        off = {**spec, "disable_eagle_block_drop": True}
        assert lookahead(off, prefix_caching=True) == 0
        assert not vllm_facts.drops_last_cached_block(off)
        assert lookahead(spec, prefix_caching=False) == 0
    for method in ("draft_model", "ngram", "suffix", "dflash", "dspark", None):
        spec = {"method": method, "model": "org/draft"}
        assert lookahead(spec, prefix_caching=True) == 0
        assert not vllm_facts.drops_last_cached_block(spec)
    assert lookahead(None, prefix_caching=True) == 0


def test_speculative_methods_vllm_removed_are_config_errors(tmp_path: Path):
    path = tmp_path / "costguard.yaml"
    body = """\
        tiers:
          - name: a
            model: org/a
            tokenizer: {{hf: /x, approximate_fallback: true}}
            serve: {{speculative: {{method: {method}, model: org/d, num_speculative_tokens: 2}}}}
            pricing: {{input_per_mtok: 0.1, output_per_mtok: 0.4}}
        traffic: {{requests_per_month: 1000}}
    """
    for method in ("medusa", "mlp_speculator"):
        path.write_text(textwrap.dedent(body.format(method=method)))
        with pytest.raises(ConfigError, match=f"speculative method '{method}' was removed"):
            load_stack(path)
    path.write_text(textwrap.dedent(body.format(method="eagle4")))
    with pytest.raises(ConfigError, match="unknown speculative method 'eagle4'"):
        load_stack(path)
    path.write_text(textwrap.dedent(body.format(method="eagle3")))
    tier = load_stack(path).config.tiers[0]
    assert speculative_prefix_behaviour(tier) == {
        "hash_lookahead_tokens": 1,
        "drop_last_block": False,
        "speculative_slots": 2,
    }


# ---- prompt_logprobs ---------------------------------------------------------------------------


def test_prompt_logprobs_requests_skip_the_lookup_and_the_stats_but_still_write():
    """SamplingParams: skip_reading_prefix_cache = prompt_logprobs is not None.
    KVCacheManager.get_computed_blocks returns no hit for such a request, record_prefix_cache_stats
    leaves it out, and allocate_slots still caches its full blocks (cache_blocks)."""
    sim = PrefixCacheSimulator(block_size=BS)
    sim.admit(A, [100, 0])
    skipped = sim.admit(A + [100, 7, 7, 7], skip_cache_read=True)
    assert skipped.cached_tokens == 0 and skipped.computed_prompt_tokens == 16
    assert (sim.queries, sim.hits, sim.requests, sim.skipped_lookups) == (12, 0, 2, 1)
    assert sim.peek(A + [5], skip_cache_read=True) == 0
    # Its blocks were written: 16 prompt + 1 output -> 16 computed -> 4 full blocks; block 3
    # ([100, 7, 7, 7]) is new, so a later request reading it hits all 4 blocks (max (20-1)//4 = 4).
    assert sim.admit(A + [100, 7, 7, 7, 8, 8, 8, 8]).cached_tokens == 16
    assert (sim.queries, sim.hits) == (12 + 20, 16)


def test_the_fleet_skips_the_lookup_for_fixtures_with_prompt_logprobs(tmp_path: Path):
    config = load_stack(_stack_file(tmp_path, "test/small-8b")).config
    fleet = PrefixCacheFleet(config, {"small": _capacity()})

    def fixture(prompt_logprobs: int | None) -> Fixture:
        return Fixture(
            id="f", suite="s", weight=1.0, messages=[{"role": "user", "content": "hi"}],
            sampling=Sampling(prompt_logprobs=prompt_logprobs), expect=Expect(), file="f.yaml",
            line=1,
        )  # fmt: skip

    fleet.admit("small", fixture(None), A, num_output_tokens=2)
    assert fleet.peek("small", fixture(0), A) == 0  # would skip the lookup
    _, lookup = fleet.admit("small", fixture(0), A, num_output_tokens=2)
    assert lookup.cached_tokens == 0
    summary = fleet.summary()["small"]
    assert summary["skipped_lookups"] == 1 and summary["queried_tokens"] == 12


# ---- hybrid full + sliding-window attention ----------------------------------------------------


def _stack_file(tmp_path: Path, model: str, tier_extra: str = "") -> Path:
    path = tmp_path / "costguard.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        tiers:
          - name: small
            model: {model}
            tokenizer: {{hf: /x, approximate_fallback: true}}
            pricing: {{input_per_mtok: 0.1, output_per_mtok: 0.4}}
        {tier_extra}
        traffic: {{requests_per_month: 1000}}
        caches: {{prefix: {{enabled: true}}}}
        """)
    )
    return path


def _capacity():
    from costguard.engine.caches.prefix_fleet import KvCapacity

    return KvCapacity(BS, None, "unbounded")


@pytest.mark.parametrize(
    "model", ["openai/gpt-oss-20b", "google/gemma-3-27b-it", "google/gemma-2-9b-it"]
)
def test_hybrid_sliding_window_models_are_refused_with_the_reason(tmp_path: Path, model: str):
    loaded = load_stack(_stack_file(tmp_path, model))
    with pytest.raises(ConfigError) as err:
        simulated_tiers(loaded.config, loaded.where)
    message = str(err.value)
    assert "hybrid full + sliding-window attention" in message
    assert "kv_cache.attention" in message and "caches.prefix.enabled: false" in message


def test_hybrid_detection_can_be_overridden_and_declared(tmp_path: Path):
    declared_full = _stack_file(
        tmp_path, "google/gemma-3-27b-it", "    kv_cache: {attention: full}"
    )
    assert simulated_tiers(load_stack(declared_full).config) == ["small"]
    no_window = _stack_file(
        tmp_path, "openai/gpt-oss-20b", "    serve: {engine_args: [--disable-sliding-window]}"
    )
    assert not hybrid_attention(load_stack(no_window).config.tiers[0])
    declared_hybrid = _stack_file(tmp_path, "org/custom", "    kv_cache: {attention: hybrid}")
    with pytest.raises(ConfigError, match="sliding-window"):
        simulated_tiers(load_stack(declared_hybrid).config)
    apc_off = _stack_file(
        tmp_path, "openai/gpt-oss-20b", "    serve: {enable_prefix_caching: false}"
    )
    assert simulated_tiers(load_stack(apc_off).config) == []


def test_a_run_with_a_hybrid_tier_fails_with_one_located_line(tmp_path: Path):
    _stack_file(tmp_path, "openai/gpt-oss-20b")
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "f.yaml").write_text(
        "suite: s\nfixtures:\n  - id: a\n    messages: [{role: user, content: hi}]\n"
    )
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "costguard.yaml" in proc.stderr and "tiers[0].kv_cache.attention" in proc.stderr
    assert "sliding-window" in proc.stderr
