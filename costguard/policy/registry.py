"""The metric registry: every metric a policy rule may name, listed explicitly.

Built-in metrics come from the modules imported below, each of which exports `METRICS`, a tuple
of `Metric`. Nothing registers itself by being imported.

Other packages add metrics through the entry-point group `costguard.metrics` (the way pytest
plugins extend pytest). In the plugin's `pyproject.toml`:

```toml
[project.entry-points."costguard.metrics"]
gpu_hours = "my_package.costguard_metrics:METRICS"
```
The object an entry point names is a `Metric`, an iterable of `Metric`s, or a callable taking no
arguments that returns either. Plugins load once, on the first lookup. A plugin that fails to load,
returns something else or reuses a taken metric name is a `ConfigError` naming the entry point:
a policy is never judged with a metric silently missing or replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any

from costguard.errors import ConfigError
from costguard.policy.metric import Metric
from costguard.policy.metrics import budget, caches, quality, regression, routing, tokens

ENTRY_POINT_GROUP = "costguard.metrics"

BUILTIN_METRICS: tuple[Metric, ...] = (
    *budget.METRICS,
    *routing.METRICS,
    *caches.METRICS,
    *quality.METRICS,
    *regression.METRICS,
    *tokens.METRICS,
)


class MetricRegistry(Mapping[str, Metric]):
    """Metric name -> Metric. Built-ins first, then the entry-point plugins (loaded lazily)."""

    def __init__(
        self, metrics: Iterable[Metric] = BUILTIN_METRICS, *, entry_points: bool = True
    ) -> None:
        self._metrics: dict[str, Metric] = {}
        self._sources: dict[str, str] = {}
        for metric in metrics:
            self.add(metric, source="costguard")
        self._plugins_pending = entry_points
        self._lock = threading.Lock()

    def add(self, metric: Metric, *, source: str = "registered in code") -> Metric:
        """Add one metric; a name already taken is an error (naming both sources)."""
        if not isinstance(metric, Metric):
            raise ConfigError(f"{source}: expected a costguard Metric, got {type(metric).__name__}")
        taken = self._sources.get(metric.name)
        if taken is not None:
            raise ConfigError(f"{source}: metric {metric.name!r} is already defined by {taken}")
        self._metrics[metric.name] = metric
        self._sources[metric.name] = source
        return metric

    def source(self, name: str) -> str:
        """Where a metric comes from: `costguard` or the entry point that added it."""
        self._load_plugins()
        return self._sources[name]

    def _load_plugins(self) -> None:
        if not self._plugins_pending:
            return
        with self._lock:
            if not self._plugins_pending:
                return
            self._plugins_pending = False
            for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                for metric in _plugin_metrics(ep):
                    self.add(metric, source=_plugin_name(ep))

    # Mapping
    def __getitem__(self, name: str) -> Metric:
        self._load_plugins()
        return self._metrics[name]

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(self._metrics)

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._metrics)


def _plugin_name(ep: metadata.EntryPoint) -> str:
    return f"metric plugin {ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP})"


def _plugin_metrics(ep: metadata.EntryPoint) -> list[Metric]:
    where = _plugin_name(ep)
    try:
        obj: Any = ep.load()
        if callable(obj) and not isinstance(obj, Metric):
            obj = obj()
    except Exception as exc:  # a broken plugin is bad input, reported in one line
        raise ConfigError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
    items = [obj] if isinstance(obj, Metric) else obj
    try:
        metrics = list(items)
    except TypeError:
        raise ConfigError(
            f"{where} gave {type(obj).__name__}: expected a Metric or an iterable of Metrics"
        ) from None
    for item in metrics:
        if not isinstance(item, Metric):
            raise ConfigError(f"{where} gave {type(item).__name__}: expected a Metric")
    return metrics


METRICS = MetricRegistry()
"""The process-wide registry that `load_policy` and `evaluate` use unless given another."""


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the process-wide registry from code (tests, notebooks, conftest.py).

    Packages should use the `costguard.metrics` entry-point group instead, so the metric is
    there in every front end (CLI, pytest plugin, Action) without an import.
    """
    return METRICS.add(metric)
