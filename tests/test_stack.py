"""`costguard stack`: exact `vllm serve` commands, and real processes started, watched and stopped.

Process tests run the real CLI in subprocesses with the stand-in `vllm` (tests/doubles/bin) first
on PATH: it serves the vLLM double, refuses connections while "loading", can crash with a CUDA
OOM traceback, and can spawn an "engine core" child in its process group.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import textwrap
import time
from pathlib import Path

import pytest

from costguard.errors import BackendError, ConfigError
from costguard.model.config import load_stack
from costguard.serving.stack import check_vllm_version, plan_stack, version_matches
from tests.conftest import REPO, run_cli
from tests.test_vllm_standin import group_pids

BIN = REPO / "tests" / "doubles" / "bin"


def standin_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_VLLM_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def vllm_project(project_dir: Path, extra: str = "") -> Path:
    """The conftest stack with each tier's `vllm serve` on a free port (for the stand-in)."""
    from tests.conftest import STACK_YAML, minilm_dir

    ports = free_ports(2)
    text = STACK_YAML.format(tok=minilm_dir())
    text = text.replace(
        "    pricing: {input_per_mtok: 0.10",
        f"    serve: {{port: {ports[0]}}}\n    pricing: {{input_per_mtok: 0.10",
        1,
    )
    text = text.replace(
        "serve: {tensor_parallel_size: 4}", f"serve: {{tensor_parallel_size: 4, port: {ports[1]}}}"
    )
    config = project_dir / "costguard.yaml"
    config.write_text(text + extra)
    return config


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


TIER = """\
  - name: {name}
    model: {model}
    tokenizer: {{hf: /nonexistent, approximate_fallback: true}}
    serve: {serve}
    pricing: {{input_per_mtok: 0.1, output_per_mtok: 0.4}}
"""


def stack_yaml(tmp_path: Path, tiers: list[tuple[str, str, str]], extra: str = "") -> Path:
    body = "tiers:\n" + "".join(TIER.format(name=n, model=m, serve=s) for n, m, s in tiers)
    path = tmp_path / "costguard.yaml"
    path.write_text(body + "traffic: {requests_per_month: 1000}\n" + extra)
    return path


def commands(path: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    """tier -> (environment, argv) from `plan_stack`."""
    return {c.tier: (c.env, c.argv) for c in plan_stack(load_stack(path))}


# ---- the commands ----------------------------------------------------------------------------


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_dry_run_of_the_bundled_example_prints_correct_vllm_commands():
    out = run_cli("stack", "up", "--dry-run", cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.splitlines()[0]
        == "# vLLM 0.33.0 (flags and defaults checked against vLLM 0.33.0)"
    )
    lines = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    config = load_stack(REPO / "costguard.yaml").config
    assert len(lines) == len(config.tiers)
    used_devices: list[int] = []
    for line, tier in zip(lines, config.tiers, strict=True):
        words = shlex.split(line)
        env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
        argv = words[len(env) :]
        # docs/live-backends.md: `vllm serve MODEL` with the model positional
        assert argv[:3] == ["vllm", "serve", tier.model]
        assert flag(argv, "--served-model-name") == tier.api_model_name
        assert flag(argv, "--port") == str(tier.serve.port)
        assert flag(argv, "--host") == tier.serve.host
        assert "--enable-prompt-tokens-details" in argv  # usage.prompt_tokens_details.cached_tokens
        assert "--no-enable-prefix-caching" not in argv  # legacy spelling, never emitted
        assert "--disable-prefix-caching" not in argv  # on by default in the V1 engine
        assert flag(argv, "--block-size") == str(tier.kv_cache.block_size)  # always pinned
        assert flag(argv, "--gpu-memory-utilization") == f"{tier.serve.gpu_memory_utilization:g}"
        assert flag(argv, "--max-model-len") == str(tier.serve.max_model_len)
        assert flag(argv, "--seed") == str(tier.serve.seed)
        tp = flag(argv, "--tensor-parallel-size") or flag(argv, "-tp") or "1"
        assert int(tp) == tier.serve.tensor_parallel_size
        # AWQ checkpoint: no --quantization, vLLM picks awq_marlin (passing awq forces the slow kernel)
        assert "--quantization" not in argv and "-q" not in argv
        devices = [int(d) for d in env["CUDA_VISIBLE_DEVICES"].split(",")]
        assert len(devices) == tier.serve.tensor_parallel_size * tier.serve.pipeline_parallel_size
        used_devices += devices
        assert (
            "--speculative-model" not in argv and "--num-speculative-tokens" not in argv
        )  # removed flags
    assert len(used_devices) == len(set(used_devices))  # no two tiers share a GPU in the example
    assert any(t.quantization == "awq" for t in config.tiers)  # the AWQ case is really exercised


def test_tiers_sharing_a_gpu_split_the_memory_fraction(tmp_path):
    path = stack_yaml(tmp_path, [
        ("a", "org/a", "{devices: [0]}"), ("b", "org/b", "{devices: [0]}"), ("c", "org/c", "{devices: [1]}"),
    ])  # fmt: skip
    cmds = commands(path)
    # what vLLM 0.33's default 0.92 becomes, split evenly
    assert flag(cmds["a"][1], "--gpu-memory-utilization") == "0.46"
    assert flag(cmds["b"][1], "--gpu-memory-utilization") == "0.46"
    assert "--gpu-memory-utilization" not in cmds["c"][1]  # alone: vLLM's default
    assert cmds["a"][0]["CUDA_VISIBLE_DEVICES"] == cmds["b"][0]["CUDA_VISIBLE_DEVICES"] == "0"

    three = stack_yaml(tmp_path, [(n, f"org/{n}", "{devices: [0]}") for n in "xyz"])
    assert {flag(argv, "--gpu-memory-utilization") for _, argv in commands(three).values()} == {
        "0.3"
    }  # 0.92 / 3 = 0.3066..., rounded down


def test_shared_gpu_fractions_are_checked_and_the_rest_is_split(tmp_path):
    mixed = stack_yaml(tmp_path, [
        ("a", "org/a", "{devices: [0], gpu_memory_utilization: 0.6}"), ("b", "org/b", "{devices: [0]}"),
    ])  # fmt: skip
    cmds = commands(mixed)
    assert flag(cmds["a"][1], "--gpu-memory-utilization") == "0.6"
    assert flag(cmds["b"][1], "--gpu-memory-utilization") == "0.32"  # what is left of 0.92
    both = stack_yaml(tmp_path, [
        ("a", "org/a", "{devices: [0], gpu_memory_utilization: 0.9}"),
        ("b", "org/b", "{devices: [0], gpu_memory_utilization: 0.9}"),
    ])  # fmt: skip
    with pytest.raises(ConfigError, match=r"share GPU 0 .* adding up to 1\.80"):
        plan_stack(load_stack(both))
    full = stack_yaml(tmp_path, [
        ("a", "org/a", "{devices: [0], gpu_memory_utilization: 0.92}"), ("b", "org/b", "{devices: [0]}"),
    ])  # fmt: skip
    with pytest.raises(
        ConfigError, match="tiers\\[1\\].serve.gpu_memory_utilization: tier 'b' shares a GPU"
    ):
        plan_stack(load_stack(full))


def test_devices_assigned_in_order_and_checked_against_launch_gpus(tmp_path):
    path = stack_yaml(tmp_path, [
        ("a", "org/a", "{}"), ("big", "org/big", "{tensor_parallel_size: 2, pipeline_parallel_size: 2}"),
        ("pinned", "org/p", "{devices: [1]}"),
    ])  # fmt: skip
    cmds = commands(path)
    assert cmds["a"][0]["CUDA_VISIBLE_DEVICES"] == "0"
    assert cmds["big"][0]["CUDA_VISIBLE_DEVICES"] == "2,3,4,5"  # 1 is claimed by `pinned`
    assert flag(cmds["big"][1], "--pipeline-parallel-size") == "2"
    small = stack_yaml(tmp_path, [("a", "org/a", "{}"), ("b", "org/b", "{tensor_parallel_size: 2}")],
                       "launch: {gpus: 2}\n")  # fmt: skip
    with pytest.raises(ConfigError, match="would use GPU 2 but launch.gpus is 2"):
        plan_stack(load_stack(small))
    bad = stack_yaml(tmp_path, [("a", "org/a", "{devices: [0], tensor_parallel_size: 2}")])
    with pytest.raises(ConfigError, match="devices lists 1 GPU"):
        load_stack(bad)


def test_quantization_speculative_prefix_caching_and_engine_args(tmp_path):
    path = tmp_path / "costguard.yaml"
    path.write_text(
        textwrap.dedent("""\
        tiers:
          - name: gptq
            model: org/m-GPTQ
            quantization: gptq
            tokenizer: {hf: /x, approximate_fallback: true}
            serve: {enable_prefix_caching: false, engine_args: [--enforce-eager, --max-num-seqs, "128"]}
            pricing: {input_per_mtok: 0.1, output_per_mtok: 0.4}
          - name: fp8
            model: org/m
            quantization: fp8
            tokenizer: {hf: /x, approximate_fallback: true}
            serve:
              speculative: {method: draft_model, model: org/tiny, num_speculative_tokens: 4}
            pricing: {input_per_mtok: 0.1, output_per_mtok: 0.4}
        traffic: {requests_per_month: 1000}
    """)
    )
    cmds = commands(path)
    gptq, fp8 = cmds["gptq"][1], cmds["fp8"][1]
    assert "--quantization" not in gptq  # checkpoint-declared: vLLM picks gptq_marlin
    assert "--disable-prefix-caching" in gptq and "--no-enable-prefix-caching" not in gptq
    assert gptq[-3:] == ["--enforce-eager", "--max-num-seqs", "128"]
    assert flag(fp8, "--quantization") == "fp8"  # on-the-fly quantization needs the flag
    assert json.loads(flag(fp8, "--speculative-config")) == {
        "method": "draft_model", "model": "org/tiny", "num_speculative_tokens": 4,
    }  # fmt: skip
    path.write_text(path.read_text().replace("--enforce-eager", "--port=9000"))
    with pytest.raises(ConfigError, match="engine_args sets --port.*serve.port"):
        plan_stack(load_stack(path))


def test_api_key_goes_through_the_environment_never_the_command_line(tmp_path):
    path = stack_yaml(tmp_path, [("a", "org/a", "{api_key_env: TIER_A_KEY}")])
    (command,) = plan_stack(load_stack(path))
    assert "--api-key" not in command.argv
    assert 'VLLM_API_KEY="$TIER_A_KEY"' in command.shell()


def test_vllm_version_pin(tmp_path, monkeypatch):
    assert version_matches("0.33.0", "0.33") and version_matches("0.33.0+cu128", "0.33.0")
    assert not version_matches("0.32.2", "0.33") and not version_matches("0.33.1", "0.33.0")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_VERSION", "0.10.2")
    config = load_stack(stack_yaml(tmp_path, [("a", "org/a", "{}")])).config
    with pytest.raises(
        BackendError, match=r"vLLM 0\.10\.2 is installed but .* pins launch.vllm_version 0\.33\.0"
    ):
        check_vllm_version(config)
    monkeypatch.setenv("FAKE_VLLM_VERSION", "0.33.0")
    assert check_vllm_version(config) == "0.33.0"
    missing = config.model_copy(
        update={"launch": config.launch.model_copy(update={"executable": "no-such-vllm"})}
    )
    with pytest.raises(BackendError, match="'no-such-vllm' not found on PATH"):
        check_vllm_version(missing)


# ---- processes ---------------------------------------------------------------------------------


@pytest.fixture
def stack_dir(tmp_path):
    """A two-tier stack on free ports; whatever a test leaves running is killed at the end."""
    ports = free_ports(2)
    stack_yaml(tmp_path, [
        ("small", "test/small", f"{{port: {ports[0]}}}"), ("large", "test/large", f"{{port: {ports[1]}}}"),
    ])  # fmt: skip
    yield tmp_path
    stack_dir_cleanup(tmp_path)


def stack_dir_cleanup(root: Path) -> None:
    """Kill the process groups a stack started under `root` left behind (if any)."""
    state = root / ".costguard" / "cache" / "stack" / "state.json"
    if state.exists():
        for tier in json.loads(state.read_text())["tiers"]:
            try:
                os.killpg(tier["pgid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def engine_child_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"EngineCore_DP0 process with pid (\d+)", log.read_text())]


def test_up_ready_down_leaves_no_process_behind(stack_dir):
    env = standin_env(FAKE_VLLM_STARTUP_S="1", FAKE_VLLM_SPAWN_CHILD="1")
    up = run_cli("stack", "up", cwd=stack_dir, env=env)
    assert up.returncode == 0, up.stderr
    assert "small ready" in up.stderr and "large ready" in up.stderr
    state = json.loads((stack_dir / ".costguard/cache/stack/state.json").read_text())
    groups = [t["pgid"] for t in state["tiers"]]
    children = [pid for t in state["tiers"] for pid in engine_child_pids(Path(t["log"]))]
    assert len(children) == 2 and all(
        len(group_pids(g)) == 2 for g in groups
    )  # server + engine child

    status = run_cli("stack", "status", cwd=stack_dir, env=env)
    assert status.returncode == 0 and status.stdout.count("\tready\t") == 2
    logs = run_cli("stack", "logs", "large", "-n", "5", cwd=stack_dir, env=env)
    assert "Application startup complete" in logs.stdout
    copied = run_cli("stack", "logs", "--out", "artifact", cwd=stack_dir, env=env)
    assert copied.returncode == 0 and sorted(
        p.name for p in (stack_dir / "artifact").iterdir()
    ) == ["large.log", "small.log"]

    # `down` runs in another process than `up`: it finds everything through the state file.
    down = run_cli(
        "stack", "down", cwd=stack_dir / ".costguard", env=env
    )  # any cwd: the path is absolute
    assert down.returncode == 2  # no costguard.yaml there ...
    down = run_cli(
        "stack",
        "down",
        "-c",
        str(stack_dir / "costguard.yaml"),
        cwd=stack_dir / ".costguard",
        env=env,
    )
    assert down.returncode == 0, down.stderr
    assert all(group_pids(g) == [] for g in groups)
    assert not any(pid_alive(pid) for pid in children)  # the engine children went with their groups
    assert not (stack_dir / ".costguard/cache/stack/state.json").exists()
    after = run_cli("stack", "status", cwd=stack_dir, env=env)
    assert after.returncode == 1 and "no stack is running" in after.stderr


def test_a_tier_crashing_at_start_up_stops_the_others_and_shows_its_log_tail(stack_dir):
    env = standin_env(
        FAKE_VLLM_STARTUP_S="2", FAKE_VLLM_CRASH_MODEL="test/large", FAKE_VLLM_SPAWN_CHILD="1"
    )
    up = run_cli("stack", "up", cwd=stack_dir, env=env)
    assert up.returncode == 2
    err = up.stderr
    assert "torch.OutOfMemoryError: CUDA out of memory" in err  # the crashed tier's log tail
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("costguard: error: tier 'large': vllm serve exited with code 1")
    )
    assert "stopped small" in err
    logs = stack_dir / ".costguard/cache/stack"
    children = engine_child_pids(logs / "small.log") + engine_child_pids(logs / "large.log")
    assert len(children) == 2 and not any(pid_alive(pid) for pid in children)
    assert not (logs / "state.json").exists()
    leader_pids = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", err)]
    assert len(leader_pids) == 2 and all(group_pids(p) == [] for p in leader_pids)


def test_a_tier_not_healthy_in_time_is_a_failed_start(stack_dir):
    env = standin_env(FAKE_VLLM_STARTUP_S="30")
    started = time.monotonic()
    up = run_cli("stack", "up", "--timeout", "1.5", cwd=stack_dir, env=env)
    assert up.returncode == 2 and time.monotonic() - started < 25
    assert "not healthy after 1.5 s (last /health: refused)" in up.stderr
    leader_pids = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", up.stderr)]
    assert leader_pids and all(group_pids(p) == [] for p in leader_pids)


def test_a_taken_port_is_refused_before_anything_starts(stack_dir):
    config = load_stack(stack_dir / "costguard.yaml").config
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", config.tiers[1].serve.port))
        sock.listen()
        up = run_cli("stack", "up", cwd=stack_dir, env=standin_env())
    assert up.returncode == 2
    assert f"port {config.tiers[1].serve.port} is already in use" in up.stderr
    assert "started" not in up.stderr


def test_version_mismatch_starts_nothing(stack_dir):
    up = run_cli("stack", "up", cwd=stack_dir, env=standin_env(FAKE_VLLM_VERSION="0.9.2"))
    assert up.returncode == 2
    assert "vLLM 0.9.2 is installed but costguard.yaml pins launch.vllm_version 0.33.0" in up.stderr
    assert "started" not in up.stderr


def test_a_non_default_kv_block_size_is_passed_to_vllm(project_dir):
    """The simulator's block size and the server's must agree."""
    from costguard.model.config import load_stack
    from costguard.serving.stack import plan_stack

    cfg = project_dir / "costguard.yaml"
    cfg.write_text(
        cfg.read_text().replace(
            "    model: test/small-8b\n",
            "    model: test/small-8b\n    kv_cache: {block_size: 32}\n",
        )
    )
    commands = {c.tier: c.argv for c in plan_stack(load_stack(cfg))}
    small = commands["small"]
    assert small[small.index("--block-size") + 1] == "32"
    # the default is pinned too: left out, the attention backend may pick a larger block
    assert flag(commands["large"], "--block-size") == "16"
