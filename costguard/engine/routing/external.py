"""`router: external`: measure the router the team actually runs instead of modelling it.

Live runs send every request to the router's URL (vLLM semantic-router with model "auto", a
production-stack router) and attribute each reply to a tier by its `model` field (the live
backend does that). Offline runs replay the attribution recorded then; a fixture without one
goes to `router.default_tier`, or is an error: costguard does not guess a route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from costguard.engine.routing.router import RouteDecision, RouteInput
from costguard.errors import ConfigError
from costguard.model.config import ExternalRouterConfig, StackConfig

if TYPE_CHECKING:
    from costguard.engine.recordings import RecordingStore

PENDING = "chosen by the external router when served"


class ExternalRouter:
    kind = "external"

    def __init__(
        self, config: StackConfig, recordings: RecordingStore | None, *, live: bool = False
    ) -> None:
        assert isinstance(config.router, ExternalRouterConfig)
        self.router = config.router
        self.recordings = recordings
        self.live = live
        self.placeholder = config.router.default_tier or config.tiers[0].name

    def route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]:
        out = []
        model = self.router.model
        for item in batch:
            tier = self.recordings.external_route(item.fixture, model) if self.recordings else None
            if self.live:
                # The real decision arrives with the reply; a recorded one only places cache hits.
                out.append(RouteDecision(tier or self.placeholder, PENDING))
            elif tier is not None:
                out.append(RouteDecision(tier, f"external router ({model}), recorded"))
            elif self.router.default_tier is not None:
                out.append(
                    RouteDecision(
                        self.router.default_tier, "external router: no recorded route, default tier"
                    )
                )
            else:
                fx = item.fixture
                raise ConfigError(
                    f"fixture {fx.id!r} has no recorded route from the external router: record one with "
                    "`costguard run --backend endpoint`, or set router.default_tier for unrecorded fixtures",
                    file=fx.file,
                    line=fx.line,
                )
        return out
