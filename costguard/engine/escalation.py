"""The confidence cascade's second calls: the first tier's low-confidence answers escalated to
the next tier, planned, served by the run's backend and priced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from costguard.engine.backends import Backend, CallResult, PlannedCall
from costguard.engine.caches.exact import CacheOutcome
from costguard.engine.pipeline_io import PromptTokens, plan_call, price_call
from costguard.engine.records import TierCall
from costguard.engine.routing.router import RouteDecision, Router
from costguard.model.config import StackConfig
from costguard.model.fixtures import Fixture
from costguard.model.pricing import TierPrice

if TYPE_CHECKING:
    from costguard.engine.routing.cascade import CascadeTally


def escalate(
    config: StackConfig,
    router: Router,
    backend: Backend,
    tokens: PromptTokens,
    prices: dict[str, TierPrice],
    fixtures: Sequence[Fixture],
    order: Sequence[int],
    decisions: Sequence[RouteDecision],
    outcomes: dict[int, CacheOutcome],
    results: Sequence[CallResult | None],
    served: Sequence[int],
) -> tuple[dict[int, tuple[TierCall, CallResult]], CascadeTally | None]:
    """Escalate the first tier's low-confidence answers: a second, priced call on the next tier.

    Only requests this run served on `from_tier` (no result-cache hit) can escalate; the
    confidence is the recorded one, else the configured estimate (`costguard.engine.routing.cascade`).
    `served`: the arrivals of the calls this run served (`results` is in arrival order).
    """
    cc = config.cascade
    if cc is None or not cc.enabled:
        return {}, None
    from costguard.engine.routing.cascade import CascadeTally, estimate_confidence

    estimate = estimate_confidence(
        cc, config, fixtures, [d.score for d in decisions],
        score_range=getattr(router, "score_range", None), router_kind=router.kind,
    )  # fmt: skip
    tally = CascadeTally(cc, estimate.method)
    to_tier = config.tier(cc.to_tier)
    planned: list[tuple[int, PlannedCall]] = []
    for arrival in served:
        i = order[arrival]
        result = results[arrival]
        assert result is not None
        tier = result.tier or decisions[i].tier
        if tier != cc.from_tier or outcomes[i].outcome in ("exact", "semantic"):
            continue
        if tally.decide(i, result.confidence, estimate.values[i]):
            call = plan_call(tokens, i, fixtures[i], to_tier, "escalation")
            call.arrival_index = arrival
            planned.append((i, call))
    escalated: dict[int, tuple[TierCall, CallResult]] = {}
    replies = backend.execute([call for _, call in planned]) if planned else []
    for (i, _), reply in zip(planned, replies, strict=True):
        if (
            reply is not None
        ):  # a live backend that stopped early: the request stays on the first tier
            escalated[i] = (
                price_call(prices[cc.to_tier], cc.to_tier, "escalation", reply),
                reply,
            )
    tally.escalated = sorted(escalated)
    return escalated, tally
