"""Which router serves a stack: `build_router` turns the `router:` config into a Router.

Kept apart from the routers so that they depend on the shared types in `router` and nothing
depends back on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from costguard.engine.routing import complexity
from costguard.engine.routing.external import ExternalRouter
from costguard.engine.routing.router import LengthRouter, Router, RulesRouter, SingleTierRouter
from costguard.errors import ConfigError
from costguard.model.config import (
    ComplexityRouterConfig,
    KnnRouterConfig,
    LengthRouterConfig,
    RulesRouterConfig,
    StackConfig,
)
from costguard.model.fixtures import load_fixtures


def build_router(config: StackConfig, **context: Any) -> Router:
    """The router for a stack config.

    `context`: `project` (a `costguard.engine.project.Project`: its root, fixtures, cache directory and shared
    embedders), or the pieces alone: `root`, `fixtures`, `embedding_cache`, `cache_dir`.
    Without a cache the embedding routers keep vectors in memory only.
    """
    rc = config.router
    if rc is None:
        return SingleTierRouter(config.tiers[0].name)
    if isinstance(rc, RulesRouterConfig):
        return RulesRouter(rc)
    if isinstance(rc, LengthRouterConfig):
        return LengthRouter(rc)
    if isinstance(rc, (ComplexityRouterConfig, KnnRouterConfig)):
        return _embedding_router(rc, **context)
    if rc.kind == "external":
        project = context.get("project")
        recordings = project.recordings() if project is not None else None  # type: ignore[attr-defined]
        return ExternalRouter(config, recordings, live=bool(context.get("live")))
    raise TypeError(f"unsupported router kind {getattr(rc, 'kind', rc)!r}")


def _embedding_router(rc: ComplexityRouterConfig | KnnRouterConfig, **context: Any) -> Router:
    project = context.get("project")
    root = Path(context.get("root") or (project.root if project is not None else "."))
    cache_dir = context.get("cache_dir") or (project.cache_dir if project is not None else None)
    overhead_dir = Path(cache_dir) / "router-overhead" if cache_dir is not None else None
    try:
        if (
            project is not None
        ):  # one embedder per model on the project, shared with the semantic cache
            embedder = project.embedder(complexity.model_name(rc, root), precision=rc.precision)
        else:
            embedder = complexity.make_embedder(rc, root=root, cache=context.get("embedding_cache"))
    except ConfigError as exc:
        if project is None or exc.file is not None:
            raise
        raise project.stack.error(exc.message, "router", "model") from None
    if isinstance(rc, ComplexityRouterConfig):
        return complexity.ComplexityRouter(rc, embedder, overhead_dir=overhead_dir)
    if rc.train is not None:
        training = load_fixtures(rc.train, root=root)
    else:
        # The run's fixtures; a project loaded without them (a pytest-xdist worker serving the
        # tests' own calls) trains on the config's fixture paths.
        training = context.get("fixtures") or (project.fixtures if project is not None else [])
        if not training and project is not None:
            training = load_fixtures(project.config.fixtures, root=root)
    return complexity.KnnRouter(rc, embedder, training, overhead_dir=overhead_dir)
