"""A real third-party OpenAI-compatible server: `transformers serve` (pip transformers[serving]).

The test builds a tiny randomly initialised 2-layer Llama and a byte-level BPE tokenizer trained
in a second with `tokenizers`, carrying Meta's Llama 3.1 chat template (tools, tool calls,
ipython results), saves them to a local directory and serves it on 127.0.0.1, offline, on CPU.
`costguard run --backend endpoint` and `costguard verify` then run against it: the offline
prompt token counts must equal the server's `usage.prompt_tokens` on every request.

transformers serve renders chat the way transformers' `apply_chat_template` does, which is where
vLLM's rendering comes from; it differs from vLLM where vLLM adds its own normalisation (it
passes tools as given, without vLLM's null `description`/`parameters`; it joins content parts
with a space; it rejects malformed tool-call arguments), so the fixtures here stay on the ground
both share: complete tool schemas, single-string contents.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_cli, write
from tests.test_tokenizer_oracle import LLAMA31_CHAT_TEMPLATE

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
pytest.importorskip("uvicorn", reason="transformers serve needs transformers[serving]")

SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
]
CORPUS = [
    "Where is my order? The weather in Oslo is cold today.",
    "Refunds take five working days; returns are free within 60 days.",
    '{"name": "lookup_order", "parameters": {"order_id": "CW-123456"}}',
    "Cutting Knowledge Date: December 2023. Today Date: 26 Jul 2024.",
    "Zürich, 東京, Привет, ¿Qué tal? ❄️",
]


def build_model(directory: Path) -> None:
    """A 2-layer Llama with random weights and a BPE tokenizer trained here, saved like a hub
    checkpoint (config.json, model.safetensors, tokenizer.json, chat template)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )
    hf.chat_template = LLAMA31_CHAT_TEMPLATE
    hf.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(model directory, base URL) of a running `transformers serve`, stopped afterwards."""
    root = tmp_path_factory.mktemp("transformers-serve")
    model = root / "tiny-llama"
    build_model(model)
    port = _free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
    }
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}):\n" + _tail(root))
            if time.monotonic() > deadline:
                pytest.fail("transformers serve was not healthy within 240 s:\n" + _tail(root))
            time.sleep(0.5)
        yield model, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def _tail(root: Path) -> str:
    return (root / "serve.log").read_text(errors="replace")[-3000:]


STACK = """\
name: tiny-stack
tiers:
  - name: small
    model: {model}
    tokenizer: {{hf: "{model}"}}
    endpoint: {{base_url: "{url}/v1"}}
    pricing: {{input_per_mtok: 0.10, output_per_mtok: 0.40}}
router: {{kind: rules, default_tier: small, rules: []}}
suites:
  agents: {{output_tokens_prior: 20}}
traffic: {{requests_per_month: 1000}}
replay: {{concurrency: 1}}
"""

FIXTURES = """\
suite: agents
defaults:
  sampling: {temperature: 0, max_tokens: 2}
fixtures:
  - id: plain
    messages: [{role: user, content: "Where is my order?"}]
  - id: multi-turn-unicode
    messages:
      - {role: system, content: "Réponds en français. 🙂"}
      - {role: user, content: "Wie ist das Wetter in Zürich? 東京"}
      - {role: assistant, content: "Kalt, ❄️."}
      - {role: user, content: "Привет! Returns?"}
  - id: tool-call-and-result
    tools:
      - type: function
        function:
          name: lookup_order
          description: Find an order by its id.
          parameters:
            type: object
            properties: {order_id: {type: string, description: "e.g. CW-123456"}}
            required: [order_id]
      - type: function
        function:
          name: get_weather
          description: Current weather for a city.
          parameters: {type: object, properties: {city: {type: string}}, required: [city]}
    tool_choice: auto
    messages:
      - {role: system, content: "You are Cairnway's support assistant."}
      - {role: user, content: "Where is order CW-123456?"}
      - role: assistant
        tool_calls:
          - {id: c1, type: function, function: {name: lookup_order, arguments: '{"order_id": "CW-123456"}'}}
      - {role: tool, tool_call_id: c1, content: '{"status": "shipped", "eta": "2026-12-07"}'}
"""


@pytest.fixture(scope="module")
def project(served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, url = served
    root = tmp_path_factory.mktemp("project")
    (root / "costguard.yaml").write_text(STACK.format(model=model, url=url))
    write(root / "fixtures" / "agents.yaml", FIXTURES)
    return root


def test_endpoint_run_usage_equals_the_offline_counts_on_every_request(project: Path) -> None:
    offline = run_cli("run", "-o", "offline.json", cwd=project, timeout=300)
    assert offline.returncode == 0, offline.stderr
    live = run_cli("run", "--backend", "endpoint", "-o", "live.json", cwd=project, timeout=300)
    assert live.returncode == 0, live.stdout + live.stderr

    def calls(name: str) -> dict[str, dict]:
        report = json.loads((project / name).read_text())
        return {r["id"]: r["calls"][0] for r in report["records"]}

    counted, served = calls("offline.json"), calls("live.json")
    assert set(counted) == set(served) == {"plain", "multi-turn-unicode", "tool-call-and-result"}
    for fixture, call in counted.items():
        assert call["input_source"] == "exact"
        assert served[fixture]["input_source"] == "measured"
        assert served[fixture]["input_tokens"] == call["input_tokens"], fixture
    # The tool schemas are most of that prompt, and they were counted on both sides.
    assert counted["tool-call-and-result"]["input_tokens"] > 5 * counted["plain"]["input_tokens"]
    # transformers serve reports no prompt_tokens_details: unknown, not 0 cached.
    report = json.loads((project / "live.json").read_text())
    assert {c["cached_source"] for c in served.values()} == {"unreported"}
    assert any(
        w.startswith("cached prompt tokens unknown on 3 call(s)") for w in report["warnings"]
    )


def test_verify_against_transformers_serve_matches_every_fixture(project: Path) -> None:
    proc = run_cli("verify", "--out", "verify.json", cwd=project, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((project / "verify.json").read_text())
    assert data["passed"] and data["exact_match_rate"] == 1.0 and data["checks"] == 3
    tier = data["tiers"]["small"]
    # No /tokenize outside vLLM: verify fell back to one-token completions and said so.
    assert tier["via"] == ["completion"] and tier["cached_tokens_reported"] is False
    assert any("has no /tokenize route" in w for w in data["warnings"])
    assert any("does not report usage.prompt_tokens_details" in w for w in data["warnings"])
