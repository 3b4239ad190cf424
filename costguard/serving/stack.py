"""The routed vLLM stack as processes: one `vllm serve` per tier, started, watched and stopped.

`plan_stack` turns `costguard.yaml` into exact commands (DESIGN §4: the model is positional;
per-instance `--gpu-memory-utilization`, split when tiers share a GPU; CUDA_VISIBLE_DEVICES;
no `--quantization` for AWQ/GPTQ checkpoints, whose fast Marlin kernels vLLM picks itself;
`--enable-prompt-tokens-details` so usage reports cached tokens). `start_stack` launches each
command in its own session (a process group, so teardown reaches vLLM's engine-core children
too), polls `/health` until every tier answers 200 (the port refuses connections while weights
load, for minutes), and writes a state file so `down`, `status` and `logs` work from another
process. A tier that dies or times out stops the others and carries its log tail.

The commands are planned in `vllm_plan`, processes probed in `processes`; their names are
importable from here.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costguard.errors import BackendError, ConfigError
from costguard.model.config import LoadedStack
from costguard.serving.processes import (  # noqa: F401 (re-exported)
    LOG_TAIL_LINES,
    group_alive,
    log_tail,
    port_in_use,
    probe_health,
    process_start_ticks,
    served_models,
)
from costguard.serving.vllm_plan import (  # noqa: F401 (re-exported)
    CHECKPOINT_QUANTIZATION,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    MANAGED_FLAGS,
    ServeCommand,
    assign_devices,
    assign_ports,
    check_vllm_version,
    installed_vllm_version,
    memory_utilization,
    plan_stack,
    serve_argv,
    target_version_note,
    version_matches,
)

STATE_FILE = "state.json"


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
        from costguard.model.files import write_atomic

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
