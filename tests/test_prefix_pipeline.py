"""The prefix-cache simulators inside a run: one per tier instance, fed in arrival order, with
generated blocks from conversations, capacity declared or derived, and the savings priced.
(The simulator's own hand-computed cases are in test_prefix_cache.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from costguard import api
from costguard.engine.caches.prefix_fleet import conversation_replies
from costguard.engine.traffic import arrival_order
from costguard.errors import ConfigError
from costguard.model.config import load_stack
from tests.conftest import REPO, minilm_dir, replace_router, run_cli, write

SYSTEM = (
    "You are the support assistant of Acme Outdoor. Answer in two sentences, cite the policy "
    "section you used, never invent order details, and offer a human agent when unsure. "
) * 3


def _stack(tok: str, *, small: str = "", caches: str = "") -> str:
    return f"""\
name: prefix-test
tiers:
  - name: small
    model: test/small-8b
    tokenizer: {{hf: "{tok}", chat_template: chat.jinja}}
    pricing: {{input_per_mtok: 0.10, cached_input_per_mtok: 0.02, output_per_mtok: 0.40}}
{small}
  - name: large
    model: test/large-70b
    tokenizer: {{hf: "{tok}", chat_template: chat.jinja}}
    hardware: {{gpus: 4}}
    serve: {{tensor_parallel_size: 4}}
    pricing: {{gpu_hour_usd: 3.0, prefill_tokens_per_s: 20000, decode_tokens_per_s: 2000, utilization: 0.5}}
router: {{kind: rules, default_tier: small}}
suites:
  support: {{output_tokens_prior: 40}}
traffic: {{requests_per_month: 1000000, seed: 3}}
{caches}"""


def _project(tmp_path: Path, fixtures: str, **stack: str) -> Path:
    from tests.conftest import CHAT_TEMPLATE

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    (tmp_path / "costguard.yaml").write_text(_stack(minilm_dir(), **stack))
    write(tmp_path / "fixtures" / "support.yaml", fixtures)
    return tmp_path / "costguard.yaml"


def _ids(messages: list[dict], generation_prompt: bool = True) -> list[int]:
    """Token ids computed independently of costguard: the test template by hand, the tokenizer directly."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(minilm_dir()) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + (
        "<|assistant|>\n" if generation_prompt else ""
    )
    return tok.encode(text, add_special_tokens=False).ids


def _text_ids(text: str) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(minilm_dir()) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok.encode(text, add_special_tokens=False).ids


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


SHARED_PREFIX = f"""\
suite: support
defaults:
  sampling: {{temperature: 0.7}}
  expect: {{output_tokens: 30}}
fixtures:
  - id: q1
    messages: [{{role: system, content: "{SYSTEM}"}}, {{role: user, content: "Where is my tent?"}}]
  - id: q2
    messages: [{{role: system, content: "{SYSTEM}"}}, {{role: user, content: "Can I return boots?"}}]
  - id: q3
    messages: [{{role: system, content: "{SYSTEM}"}}, {{role: user, content: "Do you ship to Canada?"}}]
"""


def test_shared_system_prompt_hits_whole_blocks_and_is_priced_at_the_cached_rate(
    tmp_path: Path,
) -> None:
    cfg = _project(tmp_path, SHARED_PREFIX)
    project = api.load_project(cfg)
    report = api.run(project)
    by_id = {r["id"]: r for r in report.records}
    msgs = {fx.id: fx.messages for fx in project.fixtures}
    ids = {k: _ids(v) for k, v in msgs.items()}

    assert by_id["q1"]["cached_tokens"] == 0  # cold cache
    # q2 reuses the whole blocks q1 left that it shares: the common prefix, rounded down to 16.
    expected = min(_common(ids["q1"], ids["q2"]) // 16, (len(ids["q2"]) - 1) // 16) * 16
    assert expected >= 16 * 5
    q2 = by_id["q2"]
    assert q2["cached_tokens"] == expected and q2["calls"][0]["cached_source"] == "simulated"
    assert q2["input_tokens"] == len(ids["q2"])
    assert q2["cost_usd"] == pytest.approx(
        ((len(ids["q2"]) - expected) * 0.10 + expected * 0.02 + 30 * 0.40) / 1e6
    )
    # The saving is priced once, per tier, and summed per layer.
    prefix = report.data["cache"]["prefix"]
    cached_total = sum(r["monthly_requests"] * r["cached_tokens"] for r in report.records)
    assert prefix["cached_tokens_per_month"] == pytest.approx(cached_total)
    assert prefix["saved_per_month"] == pytest.approx(cached_total * (0.10 - 0.02) / 1e6)
    assert prefix["tiers"]["small"]["hit_rate_requests"] == pytest.approx(2 / 3)
    assert prefix["tiers"]["small"]["capacity_source"] == "unbounded"
    assert any("no declared or derived capacity" in w for w in report.data["warnings"])
    # The counterfactual has no caches.
    assert all(r["counterfactual"]["cached_tokens"] == 0 for r in report.records)


def test_round_robin_spreads_requests_over_replicas_each_with_its_own_cache(tmp_path: Path) -> None:
    cfg = _project(tmp_path, SHARED_PREFIX, small="    hardware: {replicas: 2}")
    report = api.run(api.load_project(cfg))
    by_id = {r["id"]: r for r in report.records}
    # q1 -> replica 0 (cold), q2 -> replica 1 (cold), q3 -> replica 0 (warm from q1).
    assert [by_id[f]["extra"]["prefix"]["instance"] for f in ("q1", "q2", "q3")] == [0, 1, 0]
    assert by_id["q2"]["cached_tokens"] == 0 and by_id["q3"]["cached_tokens"] > 0
    assert report.data["cache"]["prefix"]["tiers"]["small"]["instances"] == 2


CONVERSATION = """\
suite: support
defaults:
  sampling: {temperature: 0.7}
fixtures:
  - id: chat.t1
    messages:
      - {role: system, content: "You are Acme's support assistant."}
      - &u1 {role: user, content: "My parcel shows delivered but I never got it."}
    expect: {output_tokens: 60}
  - id: chat.t2
    messages:
      - {role: system, content: "You are Acme's support assistant."}
      - *u1
      - {role: assistant, content: &a1 "Sorry about that. Please check with your neighbours and your building's mail room first; parcels marked delivered often turn up within a day. If it has not appeared after 48 hours, reply here and we will open a carrier investigation and send a replacement."}
      - {role: user, content: "It has been three days now."}
    expect: {output_tokens: 40}
"""


def test_follow_up_turn_reuses_the_blocks_generated_by_the_previous_turn(tmp_path: Path) -> None:
    cfg = _project(tmp_path, CONVERSATION)
    project = api.load_project(cfg)
    assert conversation_replies(project.fixtures) == {0: project.fixtures[1].messages[2]["content"]}
    report = api.run(project)
    by_id = {r["id"]: r for r in report.records}
    t1, t2 = (_ids(fx.messages) for fx in project.fixtures)
    reply = _text_ids(project.fixtures[1].messages[2]["content"])
    # t1 computed and cached its prompt + reply (the stop token is never computed): whole blocks
    # of that sequence which t2's prompt shares, capped at N-1 of t2.
    generated = t1 + reply
    assert _common(generated, t2) == len(generated)  # the conversation really continues
    expected = min((len(t1) + len(reply)) // 16, (len(t2) - 1) // 16) * 16
    assert expected > len(t1)  # reaches into the generated blocks
    assert by_id["chat.t2"]["cached_tokens"] == expected
    assert by_id["chat.t1"]["extra"]["prefix"]["generated_blocks"] == "conversation"
    assert by_id["chat.t2"]["extra"]["prefix"]["generated_blocks"] == "count only"


def test_session_routing_keeps_a_conversation_on_one_replica(tmp_path: Path) -> None:
    # Two copies of the conversation so round robin sends each second turn to the other replica.
    second = (
        CONVERSATION.split("fixtures:\n", 1)[1]
        .replace("chat.t", "chat2.t")
        .replace("&u1", "&v1")
        .replace("*u1", "*v1")
        .replace("&a1", "&b1")
    )
    fixtures = CONVERSATION + second
    rr = api.run(
        api.load_project(_project(tmp_path / "rr", fixtures, small="    hardware: {replicas: 2}"))
    )
    sticky = api.run(
        api.load_project(
            _project(
                tmp_path / "sticky",
                fixtures,
                small="    hardware: {replicas: 2}",
                caches="caches:\n  prefix: {replica_routing: session}\n",
            )
        )
    )
    rr_t2 = {r["id"]: r for r in rr.records}["chat.t2"]
    sticky_by = {r["id"]: r for r in sticky.records}
    assert (
        sticky_by["chat.t1"]["extra"]["prefix"]["instance"]
        == sticky_by["chat.t2"]["extra"]["prefix"]["instance"]
    )
    assert sticky_by["chat.t2"]["cached_tokens"] > rr_t2["cached_tokens"]


def test_prefix_caching_off_per_tier_and_for_the_layer(tmp_path: Path) -> None:
    off_tier = api.run(
        api.load_project(
            _project(
                tmp_path / "a", SHARED_PREFIX, small="    serve: {enable_prefix_caching: false}"
            )
        )
    )
    assert all(
        r["cached_tokens"] == 0 and r["calls"][0]["cached_source"] == "none"
        for r in off_tier.records
    )
    assert off_tier.data["cache"]["prefix"]["tiers"]["small"]["simulated"] is False
    off = api.run(
        api.load_project(
            _project(tmp_path / "b", SHARED_PREFIX, caches="caches:\n  prefix: {enabled: false}\n")
        )
    )
    assert (
        off.data["cache"]["prefix"]["enabled"] is False
        and off.totals["cached_tokens_per_month"] == 0
    )


def test_declared_and_derived_capacity_are_labelled(tmp_path: Path) -> None:
    declared = _project(tmp_path / "a", SHARED_PREFIX, small="    kv_cache: {num_gpu_blocks: 4000}")
    block = api.run(api.load_project(declared)).data["cache"]["prefix"]["tiers"]["small"]
    assert (block["num_gpu_blocks"], block["capacity_source"], block["capacity_tokens"]) == (
        4000,
        "declared",
        3999 * 16,
    )
    derived = _project(
        tmp_path / "b",
        SHARED_PREFIX,
        small=(
            "    hardware: {gpu_memory_gb: 24}\n    serve: {gpu_memory_utilization: 0.9}\n"
            "    kv_cache: {derive: {weights_gb: 15, num_layers: 32, num_kv_heads: 8, head_dim: 128, overhead_gb: 2}}"
        ),
    )
    block = api.run(api.load_project(derived)).data["cache"]["prefix"]["tiers"]["small"]
    # (24 x 0.9 - 15 - 2) GiB / (2 x 32 layers x 8 heads x 128 x 2 bytes x 16 tokens) = 4.6 GiB / 2 MiB
    assert (block["num_gpu_blocks"], block["capacity_source"]) == (int(4.6 * 1024 / 2), "derived")


def test_small_pool_evicts_request_tails_first_so_the_shared_prompt_survives(
    tmp_path: Path,
) -> None:
    # A pool holding about one request: every request evicts blocks, but vLLM frees a request's
    # deepest blocks to the front of the LRU queue, so the unique tails go and the shared system
    # prompt (touched by every request) stays: reuse is the same as with a roomy pool.
    n = len(
        _ids(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Where is my tent?"},
            ]
        )
    )
    tiny = n // 16 + 4
    report = api.run(
        api.load_project(
            _project(tmp_path, SHARED_PREFIX, small=f"    kv_cache: {{num_gpu_blocks: {tiny}}}")
        )
    )
    block = report.data["cache"]["prefix"]["tiers"]["small"]
    assert block["evicted_blocks"] > 0
    roomy = api.run(api.load_project(_project(tmp_path / "roomy", SHARED_PREFIX)))
    assert (
        block["cached_tokens_per_month"]
        == roomy.data["cache"]["prefix"]["tiers"]["small"]["cached_tokens_per_month"]
        > 0
    )


@pytest.mark.parametrize(
    ("small", "message"),
    [
        (
            "    kv_cache: {num_gpu_blocks: 100, derive: {weights_gb: 1, num_layers: 1, num_kv_heads: 1, head_dim: 8}}",
            "not both",
        ),
        (
            "    kv_cache: {derive: {weights_gb: 1, num_layers: 1, num_kv_heads: 1, head_dim: 8}}",
            "gpu_memory_gb",
        ),
        (
            "    hardware: {gpu_memory_gb: 24}\n    kv_cache: {derive: {weights_gb: 40, num_layers: 32, num_kv_heads: 8, head_dim: 128}}",
            "no memory left for the KV cache",
        ),
    ],
)
def test_bad_capacity_is_one_located_line(tmp_path: Path, small: str, message: str) -> None:
    cfg = _project(tmp_path, SHARED_PREFIX, small=small)
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert (
        "tiers[0].kv_cache" in proc.stderr or "tiers.0" in proc.stderr or "tiers[0]" in proc.stderr
    )
    if "no memory" not in message:
        with pytest.raises(ConfigError):
            load_stack(cfg)


def test_token_ids_are_kept_compactly_and_match_the_counts(tmp_path: Path) -> None:
    project = api.load_project(_project(tmp_path, SHARED_PREFIX))
    tokens = api.count_prompt_tokens(project, keep_ids=["small"])
    ids = tokens.ids["small"]
    assert all(isinstance(a, np.ndarray) and a.dtype == np.uint32 for a in ids)
    assert [len(a) for a in ids] == tokens.counts["small"]
    assert [a.tolist() for a in ids] == [_ids(fx.messages) for fx in project.fixtures]
    # A second call reads the ids back from the on-disk cache, identical.
    again = api.count_prompt_tokens(project, keep_ids=["small"])
    assert [a.tolist() for a in again.ids["small"]] == [a.tolist() for a in ids]
    assert "large" not in tokens.ids


# -- the bundled example --------------------------------------------------------------------


def _example_copy(tmp_path: Path) -> Path:
    """The bundled example with its rules router: every RAG request on the one quantized instance."""
    for name in ("costguard.yaml", "fixtures", "tokenizers"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    replace_router(tmp_path / "costguard.yaml")
    return tmp_path


def _rag_run(root: Path) -> tuple[dict, list[dict]]:
    report = api.run(
        api.load_project(root / "costguard.yaml", [str(root / "fixtures" / "rag.yaml")])
    )
    return report.data, [r for r in report.records if r["suite"] == "rag"]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict]]:
    root = _example_copy(tmp_path_factory.mktemp("example"))
    data, records = _rag_run(root)
    return root, data, records


def test_bundled_rag_suite_reuses_its_shared_handbook_and_the_report_prices_it(example) -> None:
    _, data, records = example
    rag = data["cache"]["prefix"]["suites"]["rag"]
    assert rag["hit_rate_tokens"] > 0.7  # the ~2,000-token handbook is shared by every request
    assert rag["saved_per_month"] > 0 and data["tiers"]["quantized"]["cached_tokens_per_month"] > 0
    price = data["cache"]["prefix"]["tiers"]["quantized"]
    assert (price["capacity_source"], price["num_gpu_blocks"]) == ("declared", 6750)
    # Each call is priced with its cached tokens: GPU-time tiers skip the cached prefill.
    for r in records:
        call = r["calls"][0]
        if r["cache"]["outcome"] in ("miss", "bypass"):
            assert call["cached_source"] == "simulated"
            uncached = call["input_tokens"] - call["cached_tokens"]
            assert r["cost_usd"] == pytest.approx(
                1.80 / 3600 * (uncached / 3500 + call["output_tokens"] / 600) / 0.6
            )


def _move_line_to_top(template: Path, needle: str, replacement: str | None = None) -> None:
    lines = template.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if needle in line)
    line = lines.pop(index)
    lines.insert(0, replacement or line)
    template.write_text("\n".join(lines) + "\n")


def test_moving_customer_tier_to_the_top_splits_the_rag_prefix_three_ways(
    example, tmp_path: Path
) -> None:
    _, before, before_records = example
    root = _example_copy(tmp_path)
    _move_line_to_top(root / "fixtures" / "templates" / "rag_system.j2", "{{ customer_tier }}")
    after, after_records = _rag_run(root)

    # Before, only the first RAG request pays for the handbook (~2,000 tokens); after, the first
    # request of each customer tier (guest, trail, basecamp) does: vLLM then holds one handbook
    # copy per tier value. (What they still share is the chat template's header block.)
    def paying(records: list[dict]) -> list[str]:
        return [r["id"] for r in records if r["cached_tokens"] < 1000]

    first_of_tier: dict[str, str] = {}
    fixtures = {
        fx.id: fx
        for fx in api.load_project(
            root / "costguard.yaml", [str(root / "fixtures" / "rag.yaml")]
        ).fixtures
    }
    for r in sorted(after_records, key=lambda r: r["arrival_index"]):
        tier = next(
            line
            for line in fixtures[r["id"]].messages[0]["content"].splitlines()
            if "customer in this" in line
        )
        first_of_tier.setdefault(tier, r["id"])
    assert paying(before_records) == [min(before_records, key=lambda r: r["arrival_index"])["id"]]
    assert (
        sorted(paying(after_records)) == sorted(first_of_tier.values()) and len(first_of_tier) == 3
    )
    rate, rate_after = (
        d["cache"]["prefix"]["suites"]["rag"]["hit_rate_tokens"] for d in (before, after)
    )
    assert rate_after < rate
    assert after["totals"]["cost_per_month"] > before["totals"]["cost_per_month"]


def test_a_per_request_value_at_the_top_of_the_rag_template_collapses_prefix_reuse(
    example, tmp_path: Path
) -> None:
    _, before, _ = example
    root = _example_copy(tmp_path)
    # The customer's question is different in every request: above the handbook, nothing is shared.
    _move_line_to_top(
        root / "fixtures" / "templates" / "rag_system.j2",
        "{{ customer_tier }}",
        "The customer asked: {{ question }}",
    )
    after, records = _rag_run(root)
    assert before["cache"]["prefix"]["suites"]["rag"]["hit_rate_tokens"] > 0.7
    assert after["cache"]["prefix"]["suites"]["rag"]["hit_rate_tokens"] < 0.05
    assert (
        after["cache"]["prefix"]["suites"]["rag"]["saved_per_month"]
        < before["cache"]["prefix"]["suites"]["rag"]["saved_per_month"] / 10
    )


def test_arrival_order_keeps_conversations_in_turn_order_in_the_example() -> None:
    project = api.load_project(
        REPO / "costguard.yaml", [str(REPO / "fixtures" / "conversations.yaml")]
    )
    order = arrival_order(project.fixtures, project.config.traffic.seed)
    position = {project.fixtures[i].id: k for k, i in enumerate(order)}
    assert (
        position["conv-billing-1.t1"]
        < position["conv-billing-1.t2"]
        < position["conv-billing-1.t3"]
    )


def test_records_share_their_prefix_note_and_only_templated_ones_name_templates() -> None:
    """Records of one instance and kind share one `extra` dict; naming a fixture's templates
    gives its record a dict of its own, never the others'."""
    project = api.load_project(REPO / "costguard.yaml")
    templated = {fx.id for fx in project.fixtures if fx.templates}
    assert templated and len(templated) < len(project.fixtures)
    replayed = api.replay(project)
    shared = [r for r in replayed.records if "prefix" in r.extra and r.fixture_id not in templated]
    assert len({id(r.extra) for r in shared}) < len(shared)  # shared, not one each
    for record in replayed.records:
        assert ("templates" in record.extra) == (record.fixture_id in templated), record.fixture_id
