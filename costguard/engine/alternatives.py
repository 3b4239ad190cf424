"""Offline projections beside the served calls: what a request would cost on every tier (the
routing baselines' input), what the backend does not serve (other shards' requests), and the
counterfactual (everything on the largest tier, no caches)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from costguard.engine.backends import CallResult, PlannedCall
from costguard.engine.backends.offline import OfflineBackend
from costguard.engine.pipeline_io import Kept, PromptTokens, SharedCalls, plan_call
from costguard.engine.records import ESTIMATED_OUTPUT, RouteAlternatives
from costguard.engine.routing.router import RouteInput
from costguard.model.config import StackConfig
from costguard.model.fixtures import Fixture
from costguard.model.pricing import TierPrice

if TYPE_CHECKING:
    from costguard.engine.recordings import RecordingStore


def route_alternatives(
    config: StackConfig,
    recordings: RecordingStore | None,
    prices: dict[str, TierPrice],
    tokens: PromptTokens,
    fixtures: Sequence[Fixture],
    batch: Sequence[RouteInput],
    indices: set[int],
) -> list[RouteAlternatives | None]:
    """Each served request (fixture index in `indices`) priced on every tier, projected offline
    with no caches: what the routing baselines (all-small, all-large, random, length) are
    computed from. By fixture index; None for the others."""
    # Its own backend: these projections are not calls of the run (recorded-response counts stay).
    offline = OfflineBackend(config, recordings)
    wanted = sorted(indices)
    # Per tier, the cost of each wanted request (lists by position in `wanted`: a dict per
    # request would hold a million dicts at once).
    costs: list[list[float]] = []
    estimated = [False] * len(wanted)
    if not offline.has_recordings:
        # Unrecorded: the same output estimate on every tier, each tier's own prompt count.
        outputs = [offline.projected_output(fixtures[i]) for i in wanted]
        for tier in config.tiers:
            price = prices[tier.name]
            counts = tokens.counts[tier.name]
            approximate = tokens.sources[tier.name] == "approximate"
            on_tier = []
            for k, (i, (output, source)) in enumerate(zip(wanted, outputs, strict=True)):
                on_tier.append(price.cost(counts[i], 0, output))
                if source in ESTIMATED_OUTPUT or approximate or price.estimated:
                    estimated[k] = True
            costs.append(on_tier)
    else:
        for tier in config.tiers:
            price = prices[tier.name]
            results = offline.execute(
                [plan_call(tokens, i, fixtures[i], tier, "counterfactual") for i in wanted]
            )
            on_tier = []
            for k, r in enumerate(results):
                assert r is not None  # the offline backend answers every call
                on_tier.append(price.cost(r.input_tokens, 0, r.output_tokens))
                if (
                    r.output_source in ESTIMATED_OUTPUT
                    or r.input_source == "approximate"
                    or price.estimated
                ):
                    estimated[k] = True
            costs.append(on_tier)
    tiers = tuple(t.name for t in config.tiers)
    out: list[RouteAlternatives | None] = [None] * len(fixtures)
    # Equal alternatives as one object: a million requests make a few thousand distinct ones.
    shared: Kept[RouteAlternatives] = Kept(SharedCalls.FREE)
    for k, i in enumerate(wanted):
        key = (batch[i].prompt_tokens, tuple(c[k] for c in costs), estimated[k])
        alternatives = shared.find(key)
        if alternatives is None:
            alternatives = RouteAlternatives(key[0], tiers, key[1], key[2])
            shared.keep(key, alternatives)
        out[i] = alternatives
    return out


def project_offline(offline: OfflineBackend, calls: list[PlannedCall]) -> list[CallResult]:
    """Offline projections of calls (recorded replies where there are any), for what this
    backend does not serve: other shards' requests and the counterfactual."""
    if not calls:
        return []
    results = offline.execute(calls)
    assert all(r is not None for r in results)  # the offline backend answers every call
    return results  # type: ignore[return-value]


def counterfactual_results(offline: OfflineBackend, calls: list[PlannedCall]) -> list[CallResult]:
    """No caches: projected offline (recorded replies of the largest tier where there are
    any, else the expected/prior output), with no cached prompt tokens."""
    results = project_offline(offline, calls)
    for r in results:
        r.cached_tokens = 0
        r.cached_source = "none"
    return results
