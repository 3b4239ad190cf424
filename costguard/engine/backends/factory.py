"""Backend names -> implementations: offline projection, tier endpoints, or a launched vLLM stack."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from costguard.engine.backends import Backend
from costguard.engine.project import Project
from costguard.engine.traffic import Progress
from costguard.errors import UsageError

BACKENDS = ("offline", "endpoint", "vllm")


@contextmanager
def open_backend(
    project: Project,
    name: str = "offline",
    *,
    settings: Any = None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> Iterator[Backend]:
    """The tier backend called `name` (the one place backend names map to implementations).

    offline: the projection, answering from recorded responses where there are any; endpoint:
    each tier's endpoint.base_url (or the external router); vllm: the launched stack, reused
    when `costguard stack up` runs, else started here and stopped on exit. `settings` is the
    ReplayConfig for live backends (default: the config's `replay:`).
    """
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    config = project.config
    settings = settings or config.replay
    live = name != "offline"
    recordings = (
        project.recordings() if (live and settings.record) or config.recordings.use else None
    )
    if name == "offline":
        from costguard.engine.backends.offline import OfflineBackend

        yield OfflineBackend(config, recordings)
        return
    from costguard.engine.backends.live import LiveBackend, Target, endpoint_targets

    if name == "endpoint":
        yield LiveBackend(project.stack, endpoint_targets(project.stack), name="endpoint",
                          recordings=recordings, replay=settings, progress=progress)  # fmt: skip
        return
    from costguard.serving import stack as stack_processes

    state = stack_processes.read_state(project.stack)
    launched = None
    if state is None or not all(t.running for t in state.tiers):
        if state is not None:
            stack_processes.stop_stack(state, notify=notify)
        launched = state = stack_processes.start_stack(project.stack, notify=notify)
    else:
        planned = {c.tier: c.argv for c in stack_processes.plan_stack(project.stack)}
        if planned != {t.tier: t.argv for t in state.tiers}:
            raise UsageError(
                "the running stack was started with other commands than costguard.yaml now gives "
                "(`costguard stack up --dry-run` shows them): `costguard stack down` first"
            )
    targets = {}
    for proc in state.tiers:
        tier = config.tier(proc.tier)
        key = os.environ.get(tier.serve.api_key_env) if tier.serve.api_key_env else None
        targets[proc.tier] = Target(proc.base_url, tier.api_model_name, key)
    try:
        yield LiveBackend(
            project.stack,
            targets,
            name="vllm",
            recordings=recordings,
            replay=settings,
            progress=progress,
        )
    finally:
        if launched is not None:
            stack_processes.stop_stack(launched, notify=notify)
