"""The exact `vllm serve` command of each tier: GPUs, memory share, ports, managed flags, and the
installed vLLM version checked against the pinned one."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from costguard.errors import BackendError, ConfigError
from costguard.model import vllm_facts as vf
from costguard.model.config import LoadedStack, StackConfig, TierConfig

DEFAULT_GPU_MEMORY_UTILIZATION = (
    vf.DEFAULT_GPU_MEMORY_UTILIZATION
)  # shared out when tiers share a GPU


# Quantization methods declared by the checkpoint itself: vLLM reads them from the model's
# config and picks the fast Marlin kernels; naming them on the command line forces the slow ones.
CHECKPOINT_QUANTIZATION = {"awq": "awq_marlin", "gptq": "gptq_marlin"}


# Flags costguard sets from the config; passing them again in engine_args would contradict it.
_MANAGED = {
    vf.FLAG_PORT: "serve.port",
    vf.FLAG_HOST: "serve.host",
    vf.FLAG_SERVED_MODEL_NAME: "served_model_name",
    vf.FLAG_GPU_MEMORY_UTILIZATION: "serve.gpu_memory_utilization",
    vf.FLAG_TENSOR_PARALLEL_SIZE: "serve.tensor_parallel_size",
    vf.FLAG_PIPELINE_PARALLEL_SIZE: "serve.pipeline_parallel_size",
    vf.FLAG_MAX_MODEL_LEN: "serve.max_model_len",
    vf.FLAG_SEED: "serve.seed",
    vf.FLAG_QUANTIZATION: "quantization",
    vf.FLAG_SPECULATIVE_CONFIG: "serve.speculative",
    vf.FLAG_ENABLE_PREFIX_CACHING: "serve.enable_prefix_caching",
    vf.FLAG_DISABLE_PREFIX_CACHING: "serve.enable_prefix_caching",
    vf.FLAG_API_KEY: "serve.api_key_env",
    vf.FLAG_MODEL: "model",
    vf.FLAG_BLOCK_SIZE: "kv_cache.block_size",
}


MANAGED_FLAGS = {
    **_MANAGED,
    **{alias: _MANAGED[flag] for alias, flag in vf.ALIASES.items()},
    **{legacy: _MANAGED[flag] for legacy, flag in vf.LEGACY_SPELLINGS.items()},
}


@dataclass(frozen=True)
class ServeCommand:
    """One tier's `vllm serve` invocation: argv, the environment it adds, and where it listens."""

    tier: str
    argv: list[str]
    env: dict[str, str]  # added to the inherited environment (never holds a secret's value)
    host: str
    port: int
    served_model_name: str
    devices: list[int]
    api_key_env: str | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def shell(self) -> str:
        """The command as one shell line (the API key shown as a reference, never its value)."""
        env = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        if self.api_key_env:
            env.append(f'VLLM_API_KEY="${self.api_key_env}"')
        return " ".join([*env, shlex.join(self.argv)])


def assign_devices(
    config: StackConfig, where: Callable[..., str] | None = None
) -> dict[str, list[int]]:
    """GPU indices per tier: `serve.devices` where given, else the next free ones in tier order.

    Each tier needs tensor_parallel_size x pipeline_parallel_size GPUs. Tiers share a GPU only
    when their `serve.devices` say so.
    """
    claimed = {d for t in config.tiers if t.serve.devices for d in t.serve.devices}
    out: dict[str, list[int]] = {}
    next_free = 0
    for tier in config.tiers:
        if tier.serve.devices is not None:
            out[tier.name] = list(tier.serve.devices)
            continue
        needed = tier.serve.tensor_parallel_size * tier.serve.pipeline_parallel_size
        devices = []
        while len(devices) < needed:
            if next_free not in claimed:
                devices.append(next_free)
            next_free += 1
        out[tier.name] = devices
    limit = config.launch.gpus
    if limit is not None:
        for i, tier in enumerate(config.tiers):
            beyond = [d for d in out[tier.name] if d >= limit]
            if beyond:
                raise ConfigError(
                    f"tier {tier.name!r} would use GPU {beyond[0]} but launch.gpus is {limit}; give tiers "
                    "serve.devices (tiers may share a GPU: their memory is then split)",
                    key=where("tiers", i, "serve", "devices")
                    if where
                    else f"tiers[{i}].serve.devices",
                )
    return out


def memory_utilization(
    config: StackConfig, devices: dict[str, list[int]], where: Callable[..., str] | None = None
) -> dict[str, float | None]:
    """Per-instance `--gpu-memory-utilization`: as configured, or what is left of vLLM's default
    (0.92) split evenly between the tiers that share a GPU (two tiers: 0.45 each). None: a tier alone
    on its GPUs, vLLM's default.

    The fraction is per instance, so tiers sharing a GPU must add up to at most 1.
    """
    sharing: dict[int, list[TierConfig]] = {}
    for tier in config.tiers:
        for d in devices[tier.name]:
            sharing.setdefault(d, []).append(tier)

    def locate(tier: TierConfig) -> str:
        i = next(i for i, t in enumerate(config.tiers) if t.name == tier.name)
        loc = ("tiers", i, "serve", "gpu_memory_utilization")
        return where(*loc) if where else f"tiers[{i}].serve.gpu_memory_utilization"

    out: dict[str, float | None] = {}
    for tier in config.tiers:
        if tier.serve.gpu_memory_utilization is not None:
            out[tier.name] = tier.serve.gpu_memory_utilization
            continue
        shares = []
        for d in devices[tier.name]:
            others = sharing[d]
            if len(others) == 1:
                continue
            taken = sum(t.serve.gpu_memory_utilization or 0.0 for t in others)
            unset = sum(t.serve.gpu_memory_utilization is None for t in others)
            shares.append((DEFAULT_GPU_MEMORY_UTILIZATION - taken) / unset)
        if not shares:
            out[tier.name] = None
            continue
        share = int(min(shares) * 100 + 1e-9) / 100
        if share <= 0:
            raise ConfigError(
                f"tier {tier.name!r} shares a GPU whose memory the other tiers' gpu_memory_utilization "
                "already takes: set its gpu_memory_utilization, or leave all of them unset to split "
                f"{DEFAULT_GPU_MEMORY_UTILIZATION} evenly",
                key=locate(tier),
            )
        out[tier.name] = share
    for device, tiers in sorted(sharing.items()):
        total = sum(out[t.name] or DEFAULT_GPU_MEMORY_UTILIZATION for t in tiers)
        if len(tiers) > 1 and total > 1.0 + 1e-9:
            raise ConfigError(
                f"tiers {', '.join(t.name for t in tiers)} share GPU {device} with gpu_memory_utilization adding "
                f"up to {total:.2f} (> 1; the fraction is per instance): lower them, or leave them unset to "
                f"split {DEFAULT_GPU_MEMORY_UTILIZATION} evenly",
                key=locate(tiers[0]),
            )
    return out


def assign_ports(config: StackConfig) -> dict[str, int]:
    """`serve.port`, or 8000 + the tier's position (+1) when unset, skipping ports already taken."""
    taken = {t.serve.port for t in config.tiers if t.serve.port is not None}
    out: dict[str, int] = {}
    candidate = 8001
    for tier in config.tiers:
        if tier.serve.port is not None:
            out[tier.name] = tier.serve.port
            continue
        while candidate in taken:
            candidate += 1
        out[tier.name] = candidate
        taken.add(candidate)
    return out


def serve_argv(
    tier: TierConfig, executable: str, *, port: int, gpu_memory_utilization: float | None
) -> list[str]:
    """`vllm serve MODEL ...` for one tier (DESIGN §4; spellings from `vllm_facts`)."""
    serve = tier.serve
    argv = [executable, "serve", tier.model, vf.FLAG_SERVED_MODEL_NAME, tier.api_model_name]
    argv += [vf.FLAG_HOST, serve.host, vf.FLAG_PORT, str(port)]
    if gpu_memory_utilization is not None:
        argv += [vf.FLAG_GPU_MEMORY_UTILIZATION, f"{gpu_memory_utilization:g}"]
    if serve.tensor_parallel_size > 1:
        argv += [vf.FLAG_TENSOR_PARALLEL_SIZE, str(serve.tensor_parallel_size)]
    if serve.pipeline_parallel_size > 1:
        argv += [vf.FLAG_PIPELINE_PARALLEL_SIZE, str(serve.pipeline_parallel_size)]
    quantization = (tier.quantization or "").strip().lower()
    if quantization and quantization not in CHECKPOINT_QUANTIZATION:
        argv += [vf.FLAG_QUANTIZATION, quantization]
    if serve.max_model_len is not None:
        argv += [vf.FLAG_MAX_MODEL_LEN, str(serve.max_model_len)]
    if serve.seed is not None:
        argv += [vf.FLAG_SEED, str(serve.seed)]
    if serve.speculative is not None:
        argv += [vf.FLAG_SPECULATIVE_CONFIG, json.dumps(serve.speculative, separators=(",", ":"))]
    # Always pinned: without it the attention backend may pick a block larger than the one the
    # prefix-cache simulator (and the KV capacity derivation) assumes.
    argv += [vf.FLAG_BLOCK_SIZE, str(tier.kv_cache.block_size)]
    if not serve.enable_prefix_caching:
        argv.append(vf.FLAG_DISABLE_PREFIX_CACHING)
    argv.append(vf.FLAG_PROMPT_TOKENS_DETAILS)  # usage.prompt_tokens_details.cached_tokens
    argv += serve.engine_args
    return argv


def plan_stack(stack: LoadedStack, tiers: Sequence[str] | None = None) -> list[ServeCommand]:
    """The exact commands `stack up` runs, one per tier (or per named tier), in config order."""
    config = stack.config
    unknown = sorted(set(tiers or ()) - {t.name for t in config.tiers})
    if unknown:
        raise ConfigError(
            f"unknown tier(s) {', '.join(unknown)} (tiers: {', '.join(t.name for t in config.tiers)})"
        )
    for i, tier in enumerate(config.tiers):
        for arg in tier.serve.engine_args:
            flag = arg.split("=", 1)[0]
            if flag in vf.REMOVED_FLAGS:
                raise ConfigError(
                    f"engine_args sets {flag}, which vLLM {vf.VLLM_VERSION} no longer has: use "
                    f"{vf.REMOVED_FLAGS[flag]} (serve.speculative)",
                    key=stack.where("tiers", i, "serve", "engine_args"),
                )
            if flag in MANAGED_FLAGS:
                raise ConfigError(
                    f"engine_args sets {flag}, which costguard derives from {MANAGED_FLAGS[flag]}: set that instead",
                    key=stack.where("tiers", i, "serve", "engine_args"),
                )
    devices = assign_devices(config, stack.where)
    memory = memory_utilization(config, devices, stack.where)
    ports = assign_ports(config)
    seen_ports: dict[int, str] = {}
    for tier in config.tiers:
        other = seen_ports.setdefault(ports[tier.name], tier.name)
        if other != tier.name:
            raise ConfigError(f"tiers {other!r} and {tier.name!r} both use port {ports[tier.name]}")
    commands = []
    for tier in config.tiers:
        if tiers and tier.name not in tiers:
            continue
        argv = serve_argv(
            tier,
            config.launch.executable,
            port=ports[tier.name],
            gpu_memory_utilization=memory[tier.name],
        )
        commands.append(
            ServeCommand(
                tier=tier.name,
                argv=argv,
                env={"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in devices[tier.name])},
                host=tier.serve.host,
                port=ports[tier.name],
                served_model_name=tier.api_model_name,
                devices=devices[tier.name],
                api_key_env=tier.serve.api_key_env,
            )
        )
    return commands


def target_version_note(config: StackConfig) -> str:
    """Which vLLM the commands are for: the pinned release and the one the flags were checked against."""
    pinned = config.launch.vllm_version
    checked = f"flags and defaults checked against vLLM {vf.VLLM_VERSION}"
    if pinned is None:
        return f"vLLM: any version (launch.vllm_version: null; {checked})"
    if not version_matches(vf.VLLM_VERSION, pinned):
        return f"vLLM {pinned} (launch.vllm_version; {checked}: they may not hold for {pinned})"
    return f"vLLM {pinned} ({checked})"


_VERSION_RE = re.compile(r"\b(\d+)\.(\d+)(?:\.(\d+))?(?:[.\w+-]*)\b")


def installed_vllm_version(executable: str) -> str:
    """`vllm --version` (the last line that looks like a version; vLLM may log before it)."""
    path = shutil.which(executable)
    if path is None:
        raise BackendError(
            f"{executable!r} not found on PATH: install the pinned vLLM on this machine (pip install vllm==VERSION) "
            "or set launch.executable in costguard.yaml"
        )
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"{path} --version failed: {exc}") from None
    for line in reversed(done.stdout.splitlines()):
        match = _VERSION_RE.search(line.strip())
        if match and done.returncode == 0:
            return match.group(0)
    detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    raise BackendError(f"{path} --version gave no version (exit {done.returncode}): {detail[0]}")


def version_matches(installed: str, pinned: str) -> bool:
    """True when `installed`'s release starts with `pinned` (0.11 accepts 0.11.2; 0.11.0 needs 0.11.0)."""

    def release(v: str) -> list[int]:
        head = re.match(r"\d+(?:\.\d+)*", v.strip().lstrip("v"))
        return [int(x) for x in head.group(0).split(".")] if head else []

    want, have = release(pinned), release(installed)
    return bool(want) and have[: len(want)] == want


def check_vllm_version(config: StackConfig) -> str | None:
    """Refuse a vLLM other than the pinned one: its flags, routes and metric names may differ."""
    pinned = config.launch.vllm_version
    installed = installed_vllm_version(config.launch.executable)
    if pinned is not None and not version_matches(installed, pinned):
        raise BackendError(
            f"vLLM {installed} is installed but costguard.yaml pins launch.vllm_version {pinned}: install it "
            f"(pip install vllm=={pinned}) or, after checking the flags in DESIGN §4 still hold, change the pin"
        )
    return installed
