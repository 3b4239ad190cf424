"""`costguard verify` against the vLLM double on 127.0.0.1 (its /tokenize and chat routes render
tools the way vLLM does), with a real Hugging Face tokenizer built in the test whose chat
template and pre-tokenizer reproduce the double's rendering and token rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, write
from tests.doubles.fake_vllm import FakeVLLM

# The double's chat layout (see FakeTokenizer.render_chat) as a jinja chat template.
TEMPLATE = (
    "{% if tools is not none %}<|tools|>\n{{ tools|tojson }}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
    "{% for c in m.get('tool_calls') or [] %}<|tool_call|>\n"
    '{{ {"name": c.function.name, "arguments": c.function.arguments}|tojson }}\n'
    "{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# The same without the tools block: a template that drops tool schemas from the count.
TEMPLATE_WITHOUT_TOOLS = TEMPLATE.split("{% endif %}", 1)[1]

STACK = """\
name: verify-stack
tiers:
  - name: small
    model: test/small-8b
    tokenizer: {{hf: tok, chat_template: {template}}}
    endpoint: {{base_url: "{url}/v1"}}
    pricing: {{input_per_mtok: 0.10, output_per_mtok: 0.40}}
suites:
  agents: {{output_tokens_prior: 50}}
traffic: {{requests_per_month: 1000}}
"""

FIXTURES = """\
suite: agents
fixtures:
  - id: plain
    messages: [{role: user, content: "Where is my order 12345?"}]
  - id: parts
    messages:
      - role: user
        content: [{type: text, text: "Summarise:"}, {type: text, text: "boots, laces snapped"}]
  - id: tool-schema
    tools:
      - {type: function, function: {name: ping}}
      - type: function
        function:
          name: lookup_order
          description: Find an order by id.
          parameters: {type: object, properties: {order_id: {type: string}}, required: [order_id]}
    messages: [{role: user, content: "Where is CW-123456?"}]
  - id: tool-call-and-result
    tools:
      - type: function
        function:
          name: lookup_order
          parameters: {type: object, properties: {order_id: {type: string}}}
    tool_choice: auto
    messages:
      - {role: user, content: "Where is CW-123456?"}
      - role: assistant
        tool_calls:
          - {id: c1, type: function, function: {name: lookup_order, arguments: '{"order_id": "CW-123456"}'}}
      - {role: tool, tool_call_id: c1, content: '{"status": "shipped"}'}
"""


def build_tokenizer(directory: Path) -> None:
    """A word-level HF tokenizer: one token per `\\w+` run or other non-space character, as the
    double counts."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    directory.mkdir()
    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated"),
        ]
    )
    tok.save(str(directory / "tokenizer.json"))


@pytest.fixture
def server():
    handle = FakeVLLM("test/small-8b").start_in_thread()
    yield handle
    handle.stop()


def make_project(root: Path, url: str, template: str = TEMPLATE) -> Path:
    build_tokenizer(root / "tok")
    (root / "chat.jinja").write_text(template)
    (root / "costguard.yaml").write_text(STACK.format(url=url, template="chat.jinja"))
    write(root / "fixtures" / "agents.yaml", FIXTURES)
    return root


def test_verify_matches_the_servers_tokenizer_on_every_fixture(tmp_path: Path, server) -> None:
    project = make_project(tmp_path, server.base_url)
    proc = run_cli("verify", "--via", "both", "--out", "v.json", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((project / "v.json").read_text())
    assert data["passed"] and data["exact_match_rate"] == 1.0
    assert data["checks"] == 8 and data["tiers"]["small"]["via"] == ["completion", "tokenize"]
    tools_row = next(r for r in data["rows"] if r["fixture"] == "tool-schema")
    plain_row = next(r for r in data["rows"] if r["fixture"] == "plain")
    assert tools_row["server"] > 3 * plain_row["server"]  # the schemas were counted
    assert {r["offline_source"] for r in data["rows"]} == {"exact"}
    # The double does not report prompt_tokens_details by default: said, not read as 0.
    assert data["tiers"]["small"]["cached_tokens_reported"] is False
    assert any("does not report usage.prompt_tokens_details" in w for w in data["warnings"])
    assert "all 8 prompt token counts equal the server's" in proc.stdout
    # The requests carried the fixtures' tools and tool_choice, as a live run sends them.
    sent = [r for r in server.server.requests if r.get("tools")]
    assert sent and all(r["max_tokens"] == 1 for r in sent)
    assert any(r.get("tool_choice") == "auto" for r in sent)


def test_verify_fails_and_names_the_worst_offenders_on_a_mismatch(tmp_path: Path, server) -> None:
    project = make_project(tmp_path, server.base_url, TEMPLATE_WITHOUT_TOOLS)
    proc = run_cli("verify", "--out", "v.json", cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads((project / "v.json").read_text())
    tier = data["tiers"]["small"]
    assert tier["matched"] == 2 and tier["exact_match_rate"] == 0.5
    assert {r["fixture"] for r in tier["worst"]} == {"tool-schema", "tool-call-and-result"}
    assert all(r["delta"] < 0 for r in tier["worst"])
    assert "Worst offenders on small:" in proc.stdout
    assert "2 of 4 counts differ from the server's" in proc.stdout


def test_verify_bad_input_and_unreachable_server_exit_2(tmp_path: Path, server) -> None:
    project = make_project(tmp_path, server.base_url)
    proc = run_cli("verify", "--url", "small=ftp://x", cwd=project)
    assert proc.returncode == 2 and "expected URL or TIER=URL" in proc.stderr
    proc = run_cli("verify", "--url", "nosuch=http://127.0.0.1:1", cwd=project)
    assert proc.returncode == 2 and "unknown tier(s) nosuch" in proc.stderr
    proc = run_cli("verify", "--url", "http://127.0.0.1:9", "--out", "v.json", cwd=project)
    assert proc.returncode == 2 and proc.stderr.startswith("costguard: error: tier small:")
    assert "Traceback" not in proc.stderr and not (project / "v.json").exists()


def test_verify_finds_the_stack_that_stack_up_started(tmp_path: Path) -> None:
    """No endpoints configured: verify checks the servers `costguard stack up` launched (the
    stand-in `vllm` executable). Their tokenizer is not the chars/4 fallback these tiers count
    with, so the counts differ and the report says why."""
    from tests.test_stack import free_ports, stack_dir_cleanup, stack_yaml, standin_env

    ports = free_ports(2)
    stack_yaml(tmp_path, [
        ("small", "test/small", f"{{port: {ports[0]}}}"), ("large", "test/large", f"{{port: {ports[1]}}}"),
    ])  # fmt: skip
    write(
        tmp_path / "fixtures" / "f.yaml",
        "fixtures:\n  - {id: a, messages: [{role: user, content: hi there}]}\n",
    )
    env = standin_env(FAKE_VLLM_STARTUP_S="0")
    try:
        before = run_cli("verify", cwd=tmp_path, env=env)
        assert before.returncode == 2 and "costguard stack up" in before.stderr
        up = run_cli("stack", "up", cwd=tmp_path, env=env)
        assert up.returncode == 0, up.stderr
        proc = run_cli("verify", "--out", "v.json", cwd=tmp_path, env=env)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        data = json.loads((tmp_path / "v.json").read_text())
        assert {name: t["server"] for name, t in data["tiers"].items()} == {
            "small": f"http://127.0.0.1:{ports[0]}",
            "large": f"http://127.0.0.1:{ports[1]}",
        }
        assert {r["offline_source"] for r in data["rows"]} == {"approximate"}
        assert any("not the model's own" in w for w in data["warnings"])
    finally:
        run_cli("stack", "down", cwd=tmp_path, env=env)
        stack_dir_cleanup(tmp_path)
