"""Routers: decide which tier serves each request.

A router sees the whole fixture batch at once (embedding routers encode in batches) and returns
one decision per request. The rules router and the length router live here; the embedding
complexity and kNN routers are in `costguard.engine.routing.complexity`, the external one in
`costguard.engine.routing.external`; `costguard.engine.routing.factory.build_router` picks one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from costguard.model.config import (
    BINARY_CLASSES,
    LengthRouterConfig,
    RulesRouterConfig,
    StackConfig,
)
from costguard.model.fixtures import Fixture


@dataclass(frozen=True)
class RouteInput:
    fixture: Fixture
    prompt_tokens: int  # counted with the router's tokenizer tier


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: str
    reason: str
    score: float | None = None


@dataclass
class RouterOverhead:
    """Per-request scoring latency of the router as deployed (one request at a time).

    `samples_s` are wall-clock seconds (what a request waits, and what the machine's load
    inflates); `cpu_samples_s` the CPU time of the routing work itself (all of this process's
    threads), each the minimum over `repeats` runs of the same probe -- the figure a policy can
    gate on without flaking on a busy runner. `conditions` records what the machine was doing.
    """

    samples_s: list[float] = field(default_factory=list)
    source: str = "measured"  # "measured" | "stored" (an earlier run's) | "not_measured"
    method: str = ""
    cpu_samples_s: list[float] = field(default_factory=list)
    repeats: int = 1
    conditions: dict[str, Any] = field(default_factory=dict)


OVERHEAD_REPEATS = 3
"""Each probe is timed this many times; its minimum is kept (noise only ever adds time)."""


def machine_conditions() -> dict[str, Any]:
    """What a timing was measured under: CPUs and the load average (1 min) at the time."""
    import datetime as _dt
    import os

    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": load,
        "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def time_probe(work: Any, repeats: int = OVERHEAD_REPEATS) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `work()`, each the minimum over `repeats` runs."""
    walls, cpus = [], []
    for _ in range(max(1, repeats)):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus)


@dataclass
class RoutingRun:
    """Run-level routing facts that the per-request records cannot hold (the report's routing section)."""

    kind: str
    description: str
    score_range: tuple[float, float] | None = (
        None  # None: scores are not on a fixed scale (or absent)
    )
    overhead: RouterOverhead | None = None
    cascade: dict[str, Any] | None = None  # CascadeTally.summary()


class Router(Protocol):
    kind: str

    def route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]: ...


OVERHEAD_PROBES = 32


def overhead_probes(batch: Sequence[RouteInput], limit: int = OVERHEAD_PROBES) -> list[RouteInput]:
    """A deterministic sample spread over the batch, for the router-overhead measurement."""
    step = max(1, len(batch) // limit)
    return list(batch[::step][:limit])


def measure_overhead(router: Router, probes: Sequence[RouteInput]) -> RouterOverhead | None:
    """The router's per-request latency on `probes`: its own measurement where it has one
    (embedding routers), else each probe routed alone and timed."""
    own = getattr(router, "measure_overhead", None)
    if own is not None:
        return own(probes)
    if not probes:
        return None
    samples, cpu = [], []
    for item in probes:
        wall_s, cpu_s = time_probe(lambda item=item: router.route([item]))
        samples.append(wall_s)
        cpu.append(cpu_s)
    return RouterOverhead(
        samples,
        "measured",
        f"each of {len(samples)} probe requests routed alone, in process, "
        f"min of {OVERHEAD_REPEATS} runs",
        cpu_samples_s=cpu,
        repeats=OVERHEAD_REPEATS,
        conditions=machine_conditions(),
    )


class SingleTierRouter:
    """No router configured: everything goes to one tier."""

    kind = "single"

    def __init__(self, tier: str) -> None:
        self.tier = tier

    def route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]:
        return [RouteDecision(self.tier, "single tier (no router configured)") for _ in batch]


class RulesRouter:
    """First matching rule wins: by suite, regex on the last user message, prompt length."""

    kind = "rules"

    def __init__(self, config: RulesRouterConfig) -> None:
        self.config = config
        self._regex = [re.compile(r.regex) if r.regex else None for r in config.rules]
        # One decision per rule, shared by every request it routes (nothing changes a decision;
        # 100k-request runs hold one per request).
        self._decisions = [
            RouteDecision(r.tier, f"rule {i + 1}") for i, r in enumerate(config.rules)
        ]
        self._default = RouteDecision(config.default_tier, "default tier")

    def route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]:
        return [self._one(item) for item in batch]

    def _one(self, item: RouteInput) -> RouteDecision:
        fx = item.fixture
        for i, rule in enumerate(self.config.rules):
            if rule.suites is not None and fx.suite not in rule.suites:
                continue
            if rule.min_prompt_tokens is not None and item.prompt_tokens < rule.min_prompt_tokens:
                continue
            if rule.max_prompt_tokens is not None and item.prompt_tokens > rule.max_prompt_tokens:
                continue
            pattern = self._regex[i]
            if pattern is not None and not pattern.search(fx.last_user_text):
                continue
            return self._decisions[i]
        return self._default


class LengthRouter:
    """Route by prompt length alone: the known-bad baseline that short-but-hard prompts defeat."""

    kind = "length"

    def __init__(self, config: LengthRouterConfig) -> None:
        self.thresholds = sorted(config.thresholds, key=lambda t: t.max_prompt_tokens)
        self.default_tier = config.default_tier

    def route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]:
        out = []
        for item in batch:
            for t in self.thresholds:
                if item.prompt_tokens <= t.max_prompt_tokens:
                    out.append(
                        RouteDecision(
                            t.tier,
                            f"prompt <= {t.max_prompt_tokens} tokens",
                            float(item.prompt_tokens),
                        )
                    )
                    break
            else:
                out.append(
                    RouteDecision(
                        self.default_tier, "longer than every threshold", float(item.prompt_tokens)
                    )
                )
        return out


def tiers_by_strength(config: StackConfig) -> list[str]:
    """Tiers from the weakest to the strongest: config order, with the largest tier last."""
    largest = config.largest.name
    return [t.name for t in config.tiers if t.name != largest] + [largest]


def sufficient_rank(label: str | None, order: Sequence[str]) -> int | None:
    """The rank (in `order`) of the weakest tier that answers a request with this label well.

    `simple` -> the weakest tier; `complex` -> only the strongest; a tier name -> that tier
    (or any stronger). Other labels (and none) say nothing: None.
    """
    if label is None:
        return None
    if label == BINARY_CLASSES[0]:
        return 0
    if label == BINARY_CLASSES[1]:
        return len(order) - 1
    if label in order:
        return list(order).index(label)
    return None


def router_tokenizer_tier(config: StackConfig) -> str:
    tier = getattr(config.router, "tokenizer_tier", None) if config.router else None
    return tier or config.tiers[0].name
