"""Every `vllm serve` command `stack up` generates parses with vLLM 0.33's own `make_arg_parser`
and means what costguard thinks; the flag and default facts in `model/vllm_facts.py` are vLLM's.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from costguard.model import vllm_facts as vf
from costguard.model.config import LoadedStack, load_stack
from costguard.serving.stack import CHECKPOINT_QUANTIZATION, ServeCommand, plan_stack
from tests.conftest import CHAT_TEMPLATE, STACK_YAML, minilm_dir
from tests.test_stack import TIER

REPO = Path(__file__).resolve().parents[2]

# Tier `serve:` blocks used by tests/test_stack.py, and one per branch of `serve_argv`.
SERVE_VARIANTS = [
    "{}",
    "{devices: [0]}",
    "{devices: [0], gpu_memory_utilization: 0.6}",
    "{tensor_parallel_size: 2, pipeline_parallel_size: 2}",
    "{api_key_env: TIER_A_KEY}",
    "{enable_prefix_caching: false, engine_args: [--enforce-eager, --max-num-seqs, '128']}",
    "{max_model_len: 8192, seed: 7, port: 8123, host: 0.0.0.0}",
    "{speculative: {method: draft_model, model: org/tiny, num_speculative_tokens: 4}}",
    "{speculative: {method: eagle3, model: org/eagle3-head, num_speculative_tokens: 3}}",
    "{speculative: {method: ngram, num_speculative_tokens: 5, prompt_lookup_max: 4}}",
    "{speculative: {method: mtp, num_speculative_tokens: 1, disable_lookahead_block_hashes: true}}",
]


def _variant_configs(tmp: Path) -> list[Path]:
    out = []
    for n, serve in enumerate(SERVE_VARIANTS):
        for quantization, block in (("", ""), ("fp8", "32"), ("awq", ""), ("gptq", "8")):
            d = tmp / f"v{n}-{quantization or 'none'}"
            d.mkdir()
            tier = TIER.format(name="a", model="org/model-a", serve=serve)
            if quantization:
                tier += f"    quantization: {quantization}\n"
            if block:
                tier += f"    kv_cache: {{block_size: {block}}}\n"
            (d / "costguard.yaml").write_text(
                "tiers:\n" + tier + "traffic: {requests_per_month: 1000}\n"
            )
            out.append(d / "costguard.yaml")
    shared = tmp / "shared"
    shared.mkdir()
    (shared / "costguard.yaml").write_text(
        "tiers:\n"
        + "".join(
            TIER.format(name=n, model=f"org/{n}", serve="{devices: [0]}") for n in ("x", "y", "z")
        )
        + "traffic: {requests_per_month: 1000}\n"
    )
    project = tmp / "project"
    project.mkdir()
    (project / "chat.jinja").write_text(CHAT_TEMPLATE)
    (project / "costguard.yaml").write_text(STACK_YAML.format(tok=minilm_dir()))
    return [*out, shared / "costguard.yaml", project / "costguard.yaml"]


def _bundled_configs() -> list[Path]:
    return [REPO / "costguard.yaml"]


def _expected(loaded: LoadedStack, command: ServeCommand) -> dict[str, Any]:
    """What costguard means by the command, as vLLM's parsed namespace should say it."""
    tier = loaded.config.tier(command.tier)
    serve = tier.serve
    memory = next(
        (float(v) for k, v in zip(command.argv, command.argv[1:], strict=False) if k == vf.FLAG_GPU_MEMORY_UTILIZATION),
        vf.DEFAULT_GPU_MEMORY_UTILIZATION,
    )  # fmt: skip
    quantization = (tier.quantization or "").lower() or None
    return {
        "model_tag": tier.model,
        "served_model_name": [tier.api_model_name],
        "host": serve.host,
        "port": command.port,
        "block_size": tier.kv_cache.block_size,
        "gpu_memory_utilization": memory,
        "tensor_parallel_size": serve.tensor_parallel_size,
        "pipeline_parallel_size": serve.pipeline_parallel_size,
        "quantization": None if quantization in CHECKPOINT_QUANTIZATION else quantization,
        "max_model_len": serve.max_model_len,
        "seed": serve.seed,
        "speculative_config": serve.speculative,
        "enable_prompt_tokens_details": True,
        "api_key": None,  # the key travels in VLLM_API_KEY, never on the command line
    }


def _prefix_caching_on(value: Any) -> bool:
    """`enable_prefix_caching` parses to None when not given: on in the V1 engine (CacheConfig)."""
    return value is None or value is True


def test_every_generated_vllm_serve_command_parses_and_means_what_costguard_thinks(
    vllm_oracle, tmp_path
):
    cases = []
    for path in [*_bundled_configs(), *_variant_configs(tmp_path)]:
        loaded = load_stack(path)
        for command in plan_stack(loaded):
            words = shlex.split(command.shell())
            argv = words[words.index("serve") + 1 :]  # what `vllm serve` hands its parser
            cases.append((path, loaded, command, argv))
    assert len(cases) >= 50
    bare, *answers = vllm_oracle.ask("parse", argvs=[["org/m"], *(argv for *_, argv in cases)])
    defaults = bare["args"]  # what vLLM uses for a flag costguard leaves out
    for (path, loaded, command, argv), answer in zip(cases, answers, strict=True):
        where = f"{path} tier {command.tier}: {shlex.join(argv)}"
        assert answer["ok"], f"vLLM rejects {where}: {answer['error']}"
        parsed = answer["args"]
        for key, want in _expected(loaded, command).items():
            if want is None:  # costguard leaves it to vLLM: the default, untouched
                want = defaults[key]
            assert parsed[key] == want, (
                f"{key}: vLLM parses {parsed[key]!r}, costguard means {want!r} ({where})"
            )
        tier = loaded.config.tier(command.tier)
        assert (
            _prefix_caching_on(parsed["enable_prefix_caching"]) == tier.serve.enable_prefix_caching
        ), where
        for arg in tier.serve.engine_args:
            if arg.startswith("--"):
                dest = arg[2:].replace("-", "_")
                assert dest in parsed, f"{arg} is not a vLLM flag ({where})"


def test_vllm_facts_are_vllms(vllm_oracle):
    facts = vllm_oracle.ask("facts")
    assert facts["version"] == vf.VLLM_VERSION
    assert facts["gpu_memory_utilization"] == {
        "cache_config": vf.DEFAULT_GPU_MEMORY_UTILIZATION,
        "serve_default": vf.DEFAULT_GPU_MEMORY_UTILIZATION,
    }
    flags = facts["flags"]
    for name, value in vars(vf).items():
        if name.startswith("FLAG_"):
            assert value in flags and not flags[value]["hidden"], f"{value} is not a visible flag"
    for alias, flag in vf.ALIASES.items():
        assert flags[alias]["dest"] == flags[flag]["dest"], alias
    assert flags[vf.FLAG_DISABLE_PREFIX_CACHING]["dest"] == "enable_prefix_caching"
    for removed in vf.REMOVED_FLAGS:
        assert removed not in flags
    assert set(facts["speculative_methods"]) == vf.SPECULATIVE_METHODS
    assert set(facts["mtp_methods"]) == vf.MTP_METHODS
    assert not vf.REMOVED_SPECULATIVE_METHODS & set(facts["speculative_methods"])
    for key, behaviour in facts["speculative_prefix_behaviour"].items():
        method, variant, caching = key.split("|")
        spec = {"method": method, "num_speculative_tokens": 3}
        if variant != "default":
            spec[variant] = True
        on = caching == "True"
        assert (
            vf.hash_lookahead_tokens(spec, prefix_caching=on) == behaviour["hash_lookahead_tokens"]
        ), key
        if on:  # without prefix caching nothing is dropped from a hit that never happens
            assert vf.drops_last_cached_block(spec) == behaviour["drop_last_block"], key


def test_legacy_and_removed_spellings(vllm_oracle):
    legacy, removed, alias, method = vllm_oracle.ask(
        "parse",
        argvs=[
            ["org/m", "--no-enable-prefix-caching"],
            ["org/m", "--speculative-model", "org/d"],
            ["org/m", "-sc", json.dumps({"method": "eagle", "model": "org/e"})],
            ["org/m", "--disable-prefix-caching"],
        ],
    )
    # The legacy spelling still parses (hidden), so costguard refuses it only as a managed flag.
    assert legacy["ok"] and legacy["args"]["enable_prefix_caching"] is False
    assert "--no-enable-prefix-caching" in vf.LEGACY_SPELLINGS
    assert not removed["ok"]
    assert alias["ok"] and alias["args"]["speculative_config"] == {
        "method": "eagle",
        "model": "org/e",
    }
    assert method["ok"] and method["args"]["enable_prefix_caching"] is False


@pytest.mark.parametrize("flag", sorted(vf.LEGACY_SPELLINGS))
def test_costguard_never_emits_a_legacy_spelling(flag, tmp_path):
    for path in [*_bundled_configs(), *_variant_configs(tmp_path)]:
        for command in plan_stack(load_stack(path)):
            assert flag not in command.argv
            assert not set(vf.REMOVED_FLAGS) & set(command.argv)
