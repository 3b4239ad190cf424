"""Running a projection from the command line: the project, the progress bar, live notices."""

from __future__ import annotations

import sys
from typing import Any

import click


def make_progress(enabled: bool) -> Any:
    """A rich progress bar on stderr for long runs; None when stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return progress, update


def run_projection(
    config: str,
    fixtures: tuple[str, ...],
    backend: str = "offline",
    show_progress: bool = True,
    variant: str | None = None,
    **options: Any,
) -> Any:
    """Load the project (or one of its stack variants) and run it (`options`: shard, replay
    overrides for live backends)."""
    from costguard.api import Costguard

    session = Costguard(config, fixtures or None, variant=variant)
    live = backend != "offline"
    progress, update = make_progress(
        show_progress and (live or len(session.project.fixtures) >= 2000)
    )
    notify = (lambda message: click.echo(f"costguard: {message}", err=True)) if live else None
    if progress is None:
        return session.run(backend=backend, notify=notify, **options)
    with progress:
        return session.run(backend=backend, progress=update, notify=notify, **options)
