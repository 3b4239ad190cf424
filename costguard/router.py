"""Routers: decide which tier serves each request.

A router sees the whole fixture batch at once (embedding routers encode in batches) and returns
one decision per request. The rules router and the length router live here; the embedding
complexity and kNN routers plug in through `build_router`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from costguard.config import LengthRouterConfig, RulesRouterConfig, StackConfig
from costguard.fixtures import Fixture


@dataclass(frozen=True)
class RouteInput:
    fixture: Fixture
    prompt_tokens: int  # counted with the router's tokenizer tier


@dataclass(frozen=True)
class RouteDecision:
    tier: str
    reason: str
    score: float | None = None


class Router(Protocol):
    kind: str

    def route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]: ...


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
            return RouteDecision(rule.tier, f"rule {i + 1}")
        return RouteDecision(self.config.default_tier, "default tier")


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
                    out.append(RouteDecision(t.tier, f"prompt <= {t.max_prompt_tokens} tokens", float(item.prompt_tokens)))
                    break
            else:
                out.append(RouteDecision(self.default_tier, "longer than every threshold", float(item.prompt_tokens)))
        return out


def router_tokenizer_tier(config: StackConfig) -> str:
    tier = getattr(config.router, "tokenizer_tier", None) if config.router else None
    return tier or config.tiers[0].name


def build_router(config: StackConfig, **context: object) -> Router:
    """The router for a stack config. `context` carries shared resources (e.g. the embedding cache)."""
    rc = config.router
    if rc is None:
        return SingleTierRouter(config.tiers[0].name)
    if isinstance(rc, RulesRouterConfig):
        return RulesRouter(rc)
    if isinstance(rc, LengthRouterConfig):
        return LengthRouter(rc)
    if rc.kind == "external":
        from costguard.external_router import ExternalRouter

        project = context.get("project")
        recordings = project.recordings() if project is not None else None  # type: ignore[attr-defined]
        return ExternalRouter(config, recordings, live=bool(context.get("live")))
    raise TypeError(f"unsupported router kind {getattr(rc, 'kind', rc)!r}")
