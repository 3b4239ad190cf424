"""`costguard stack up|down|status|logs`: the routed vLLM stack of `costguard.yaml` as processes.

Thin over the facade (`costguard.api.Costguard.stack()`); exit codes: 0 done, 1 (`status`) not every tier is healthy,
2 bad input or a tier that failed to start (its log tail is printed first).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from costguard.cli.options import config_option


def _control(config: str):  # -> costguard.api.StackControl
    from costguard.api import Costguard

    return Costguard(config).stack()


def _running(config: str):  # -> (StackControl, StackState | None)
    """The state `stack up` left, or None (saying so on stderr)."""
    stack = _control(config)
    state = stack.running()
    if state is None:
        _say(f"no stack is running (no state file in {stack.state_dir()})")
    return stack, state


def _say(message: str) -> None:
    click.echo(f"costguard: {message}", err=True)


@click.group("stack")
def stack_group() -> None:
    """Start, inspect and stop one `vllm serve` per tier of the stack config."""


@stack_group.command("up")
@config_option
@click.option(
    "--tier", "tiers", multiple=True, help="Only this tier (repeatable). Default: every tier."
)
@click.option(
    "--dry-run", is_flag=True, help="Print the exact commands and environment; start nothing."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    help="Seconds each tier may take to become healthy (default: launch.startup_timeout_s).",
)
def up(config: str, tiers: tuple[str, ...], dry_run: bool, timeout_s: float | None) -> None:
    """Launch the tiers, wait until every /health answers 200, and leave them running."""
    stack = _control(config)
    if dry_run:
        directory = stack.state_dir()
        click.echo(f"# {stack.target_version_note()}")
        for command in stack.plan(tiers or None):
            gpus = ",".join(str(d) for d in command.devices)
            click.echo(
                f"# {command.tier}: GPU {gpus} -> {command.base_url} (log: {directory / (command.tier + '.log')})"
            )
            click.echo(command.shell())
        return
    try:
        state = stack.up(tiers or None, timeout_s=timeout_s, notify=_say)
    except stack.start_error as exc:
        click.echo(f"---- last {len(exc.log_tail)} lines of {exc.log} ----", err=True)
        for line in exc.log_tail:
            click.echo(line, err=True)
        click.echo("---- the other tiers were stopped ----", err=True)
        raise
    for proc in state.tiers:
        click.echo(f"{proc.tier}\t{proc.base_url}\tpid {proc.pid}")
    _say(f"stack is up; state in {state.path} (`costguard stack down` stops it)")


@stack_group.command("down")
@config_option
def down(config: str) -> None:
    """Stop every tier started by `stack up` (whole process groups), from any process."""
    stack, state = _running(config)
    if state is None:
        return
    stopped = stack.down(state, notify=_say)
    if not stopped:
        _say("the stack had already stopped; state file removed")


@stack_group.command("status")
@config_option
def status(config: str) -> None:
    """Each tier's process and /health; exit 1 unless every tier is up and healthy."""
    stack, state = _running(config)
    if state is None:
        sys.exit(1)
    healthy = True
    for info in stack.status(state):
        healthy &= info["health"] == "ready"
        click.echo(
            f"{info['tier']}\t{info['health']}\tpid {info['pid']}\t{info['base_url']}\t{info['log']}"
        )
    sys.exit(0 if healthy else 1)


@stack_group.command("logs")
@config_option
@click.argument("tier", required=False)
@click.option(
    "--lines", "-n", default=40, show_default=True, help="Lines from the end of each log."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Copy the whole logs (and the previous start's) into this directory instead of printing.",
)
def logs(config: str, tier: str | None, lines: int, follow: bool, out_dir: str | None) -> None:
    """Print the end of each tier's server log (or one tier's), or copy the logs (--out)."""
    import shutil

    from costguard.errors import UsageError

    stack = _control(config)
    names = stack.tier_names
    if tier is not None and tier not in names:
        raise UsageError(f"unknown tier {tier!r} (tiers: {', '.join(names)})")
    directory = stack.state_dir()
    paths = [
        directory / f"{name}.log{suffix}"
        for name in ([tier] if tier else names)
        for suffix in ("", ".prev")
    ]
    paths = [p for p in paths if p.exists()]
    if out_dir is not None:  # for CI artifacts: never fails, says what it found
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy2(path, Path(out_dir) / path.name)
        _say(f"copied {len(paths)} log file(s) from {directory} to {out_dir}")
        return
    paths = [p for p in paths if not p.name.endswith(".prev")]
    if not paths:
        raise UsageError(f"no logs in {directory} (run `costguard stack up` first)")
    for path in paths:
        if len(paths) > 1:
            click.echo(f"==> {path} <==")
        for line in stack.log_tail(path, lines):
            click.echo(line)
    if follow:
        _follow(paths)


def _follow(paths: list[Path]) -> None:
    offsets = {p: p.stat().st_size for p in paths}
    try:
        while True:
            for path in paths:
                with path.open("rb") as f:
                    f.seek(offsets[path])
                    data = f.read()
                    offsets[path] = f.tell()
                for line in data.decode("utf-8", errors="replace").splitlines():
                    click.echo(f"{path.stem}| {line}" if len(paths) > 1 else line)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


def register_commands(cli: click.Group) -> None:
    cli.add_command(stack_group)
