"""The routed vLLM stack as processes: one `vllm serve` per tier, started, watched and stopped.

`plan_stack` turns `costguard.yaml` into exact commands (DESIGN §4: the model is positional;
per-instance `--gpu-memory-utilization`, split when tiers share a GPU; CUDA_VISIBLE_DEVICES;
no `--quantization` for AWQ/GPTQ checkpoints, whose fast Marlin kernels vLLM picks itself;
`--enable-prompt-tokens-details` so usage reports cached tokens). `start_stack` launches each
command in its own session (a process group, so teardown reaches vLLM's engine-core children
too), polls `/health` until every tier answers 200 (the port refuses connections while weights
load, for minutes), and writes a state file so `down`, `status` and `logs` work from another
process. A tier that dies or times out stops the others and carries its log tail.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costguard.errors import BackendError, ConfigError
from costguard.model import vllm_facts as vf
from costguard.model.config import LoadedStack, StackConfig, TierConfig

DEFAULT_GPU_MEMORY_UTILIZATION = (
    vf.DEFAULT_GPU_MEMORY_UTILIZATION
)  # shared out when tiers share a GPU
STATE_FILE = "state.json"
LOG_TAIL_LINES = 40

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


# --------------------------------------------------------------------------------------------
# Planning: config -> commands
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The vLLM version
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc), to tell a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the process group."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


# --------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------


def probe_health(base_url: str, timeout_s: float = 2.0) -> str:
    """ "ready" (200), "unhealthy" (503: engine not up or dead), "refused" (not listening yet),
    or "error: ..." for anything else."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout_s) as resp:
            return "ready" if resp.status == 200 else f"error: HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return "unhealthy" if exc.code == 503 else f"error: HTTP {exc.code}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return "refused"
        return f"error: {exc.reason}"
    except (ConnectionError, TimeoutError, OSError) as exc:
        if isinstance(exc, ConnectionRefusedError):
            return "refused"
        return f"error: {type(exc).__name__}"


def served_models(base_url: str, api_key: str | None, timeout_s: float = 5.0) -> list[str]:
    """Model ids from `/v1/models` (to be sure the server on the port is the tier's)."""
    request = urllib.request.Request(f"{base_url}/v1/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return []
    data = body.get("data") if isinstance(body, dict) else None
    return [m.get("id") for m in data or [] if isinstance(m, dict)]


def port_in_use(host: str, port: int) -> bool:
    import socket

    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class TierProcess:
    """A launched tier, as written to the state file."""

    tier: str
    pid: int
    pgid: int
    start_ticks: int | None
    base_url: str
    served_model_name: str
    log: str
    argv: list[str]
    env: dict[str, str]
    api_key_env: str | None = None
    child: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier, "pid": self.pid, "pgid": self.pgid, "start_ticks": self.start_ticks,
            "base_url": self.base_url, "served_model_name": self.served_model_name, "log": self.log,
            "argv": self.argv, "env": self.env, "api_key_env": self.api_key_env,
        }  # fmt: skip

    @property
    def same_process(self) -> bool:
        """The pid still belongs to the process we started (not a later process reusing it)."""
        if self.start_ticks is None:
            return True
        return process_start_ticks(self.pid) == self.start_ticks

    @property
    def running(self) -> bool:
        return group_alive(self.pgid) and (
            self.same_process or process_start_ticks(self.pid) is None
        )


@dataclass
class StackState:
    """What is running: written by `up`, read by `down`, `status`, `logs` and `--backend vllm`."""

    path: Path
    config: str
    started_at: str
    tiers: list[TierProcess]

    def write(self) -> None:
        from costguard.report.run_report import write_atomic

        data = {"version": 1, "config": self.config, "started_at": self.started_at,
                "tiers": [t.to_dict() for t in self.tiers]}  # fmt: skip
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")

    def tier(self, name: str) -> TierProcess | None:
        return next((t for t in self.tiers if t.tier == name), None)


def state_dir(loaded: LoadedStack) -> Path:
    """Where the state file and the tier logs live (absolute: `down` may run from elsewhere)."""
    config = loaded.config
    root = loaded.root.resolve()
    if config.launch.log_dir:
        path = Path(config.launch.log_dir)
        return path if path.is_absolute() else root / path
    cache = Path(config.cache_dir)
    return (cache if cache.is_absolute() else root / cache) / "stack"


def read_state(loaded: LoadedStack) -> StackState | None:
    path = state_dir(loaded) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"unreadable stack state ({exc}); remove it once no vLLM of this stack runs", file=path
        ) from None
    try:
        tiers = [TierProcess(**{k: v for k, v in t.items()}) for t in data["tiers"]]
        return StackState(
            path=path, config=data["config"], started_at=data["started_at"], tiers=tiers
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"malformed stack state ({exc}); remove it once no vLLM of this stack runs", file=path
        ) from None


# --------------------------------------------------------------------------------------------
# up / down
# --------------------------------------------------------------------------------------------


class StackStartError(BackendError):
    """A tier did not come up; the others were stopped. `log_tail` is that tier's last lines."""

    def __init__(self, message: str, *, tier: str, log: Path, log_tail: list[str]) -> None:
        self.tier = tier
        self.log = log
        self.log_tail = log_tail
        super().__init__(message)


Notify = Callable[[str], None]


def _api_key(name: str | None) -> str | None:
    return os.environ.get(name) if name else None


def launch(command: ServeCommand, log_path: Path, cwd: Path) -> TierProcess:
    """Start one `vllm serve` in its own session, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists():  # keep one previous log; the tail shown on failure is this start's
        log_path.replace(log_path.with_name(log_path.name + ".prev"))
    env = {**os.environ, **command.env}
    if command.api_key_env:
        key = os.environ.get(command.api_key_env)
        if not key:
            raise ConfigError(
                f"serve.api_key_env names {command.api_key_env}, which is not set",
                key=f"tier {command.tier}",
            )
        env["VLLM_API_KEY"] = key
    with log_path.open("ab") as log:
        header = f"=== costguard stack up {_dt.datetime.now().isoformat(timespec='seconds')}: {command.shell()}\n"
        log.write(header.encode())
        log.flush()
        try:
            child = subprocess.Popen(
                command.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise BackendError(
                f"cannot start {command.argv[0]} for tier {command.tier!r}: {exc}"
            ) from None
    return TierProcess(
        tier=command.tier, pid=child.pid, pgid=child.pid, start_ticks=process_start_ticks(child.pid),
        base_url=command.base_url, served_model_name=command.served_model_name, log=str(log_path),
        argv=command.argv, env=command.env, api_key_env=command.api_key_env, child=child,
    )  # fmt: skip


def start_stack(
    loaded: LoadedStack,
    *,
    tiers: Sequence[str] | None = None,
    timeout_s: float | None = None,
    notify: Notify | None = None,
    poll_s: float = 0.5,
) -> StackState:
    """Check vLLM's version, launch every tier, wait until all are healthy, write the state.

    On a tier that exits or is not healthy in time, every tier launched is stopped and a
    StackStartError carries that tier's log tail.
    """
    say = notify or (lambda message: None)
    existing = read_state(loaded)
    if existing is not None:
        alive = [t.tier for t in existing.tiers if t.running]
        if alive:
            raise BackendError(
                f"a stack is already running from {existing.path} (tiers {', '.join(alive)}): "
                "`costguard stack down` first"
            )
        existing.path.unlink(missing_ok=True)
    commands = plan_stack(loaded, tiers)
    check_vllm_version(loaded.config)
    for command in commands:
        if port_in_use(command.host, command.port):
            raise BackendError(
                f"tier {command.tier!r}: port {command.port} is already in use; stop what listens there or "
                "change serve.port"
            )
    directory = state_dir(loaded)
    state = StackState(
        path=directory / STATE_FILE,
        config=str(loaded.path.resolve()),
        started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        tiers=[],
    )
    try:
        for command in commands:
            proc = launch(command, directory / f"{command.tier}.log", loaded.root)
            state.tiers.append(proc)
            state.write()  # written early so `down` from elsewhere can stop a slow start
            say(f"started {command.tier} (pid {proc.pid}) -> {command.base_url}, log {proc.log}")
        wait_ready(
            state, timeout_s or loaded.config.launch.startup_timeout_s, notify=say, poll_s=poll_s
        )
    except BaseException:
        stop_stack(state, notify=say)
        raise
    return state


def wait_ready(
    state: StackState, timeout_s: float, *, notify: Notify | None = None, poll_s: float = 0.5
) -> None:
    """Poll each tier's /health until 200 (and /v1/models lists its served name)."""
    say = notify or (lambda message: None)
    pending = {t.tier: t for t in state.tiers}
    last: dict[str, str] = {}
    started = time.monotonic()
    deadline = started + timeout_s
    while pending:
        for name, proc in list(pending.items()):
            code = proc.child.poll() if proc.child is not None else None
            if code is not None or not proc.running:
                reason = f"exited with code {code}" if code is not None else "is no longer running"
                raise StackStartError(
                    f"tier {name!r}: vllm serve {reason} during start-up (log: {proc.log})",
                    tier=name, log=Path(proc.log), log_tail=log_tail(Path(proc.log)),
                )  # fmt: skip
            status = probe_health(proc.base_url)
            if status == "ready":
                names = served_models(proc.base_url, _api_key(proc.api_key_env))
                if proc.served_model_name not in names:
                    status = f"a server answers but does not serve {proc.served_model_name!r} (it serves {names})"
                else:
                    say(f"{name} ready after {time.monotonic() - started:.1f} s")
                    del pending[name]
                    continue
            last[name] = status
        if not pending:
            break
        if time.monotonic() >= deadline:
            name, proc = next(iter(pending.items()))
            raise StackStartError(
                f"tier {name!r}: not healthy after {timeout_s:g} s (last /health: {last.get(name, 'not probed')}); "
                f"raise launch.startup_timeout_s if the model is still loading (log: {proc.log})",
                tier=name, log=Path(proc.log), log_tail=log_tail(Path(proc.log)),
            )  # fmt: skip
        time.sleep(poll_s)


def stop_stack(
    state: StackState, *, notify: Notify | None = None, grace_s: float = 20.0
) -> list[str]:
    """Stop every tier's whole process group and remove the state file. Returns the tiers stopped.

    All groups get SIGTERM at once, then share one grace period; what is left gets SIGKILL.
    Signals arriving meanwhile do not cut this short (the clean-up is shielded); they shorten
    the grace period instead -- when a run was interrupted (GitHub sends SIGKILL ~10 s after its
    first signal), the groups get at most `INTERRUPTED_GRACE_S`.
    """
    from costguard.serving import interrupts

    say = notify or (lambda message: None)
    stopped = []
    with interrupts.shielded():
        signalled: list[TierProcess] = []
        for proc in state.tiers:
            ticks = process_start_ticks(proc.pid)
            if (
                proc.start_ticks is not None
                and ticks is not None
                and ticks != proc.start_ticks
                and proc.child is None
            ):
                say(
                    f"{proc.tier}: pid {proc.pid} now belongs to another process; not signalling it"
                )
                continue
            if _terminate(proc):
                signalled.append(proc)
        interrupted = bool(interrupts.received())
        deadline = time.monotonic() + (
            min(grace_s, INTERRUPTED_GRACE_S) if interrupted else grace_s
        )
        seen = len(interrupts.received())
        while signalled and time.monotonic() < deadline:
            for proc in signalled:
                if proc.child is not None:
                    proc.child.poll()  # reap our own child so it does not linger as a zombie
            if not any(group_alive(p.pgid) for p in signalled):
                break
            if len(interrupts.received()) > seen:  # another signal: stop waiting
                break
            time.sleep(0.05)
        for proc in signalled:
            if group_alive(proc.pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pgid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5
        for proc in signalled:
            while time.monotonic() < kill_deadline and group_alive(proc.pgid):
                if proc.child is not None:
                    proc.child.poll()
                time.sleep(0.05)
            if proc.child is not None:
                proc.child.poll()
            stopped.append(proc.tier)
            say(f"stopped {proc.tier} (process group {proc.pgid})")
        state.path.unlink(missing_ok=True)
    return stopped


INTERRUPTED_GRACE_S = 2.0
"""How long an interrupted run lets `vllm serve` shut down before SIGKILL."""


def _terminate(proc: TierProcess) -> bool:
    """SIGTERM the tier's group; False when nothing of it was running."""
    if not group_alive(proc.pgid):
        if proc.child is not None:
            proc.child.poll()
        return False
    try:
        os.killpg(proc.pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def tier_status(proc: TierProcess) -> dict[str, Any]:
    running = proc.running
    health = probe_health(proc.base_url) if running else "stopped"
    return {"tier": proc.tier, "pid": proc.pid, "running": running, "health": health,
            "base_url": proc.base_url, "log": proc.log}  # fmt: skip
