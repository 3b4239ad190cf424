"""Small-vs-large agreement: how close each tier's recorded answers are to the largest tier's.

For every fixture with a recorded response on the largest tier and on another tier, the cosine
similarity of the two answers (sentence embeddings, the same embedder as `similar`). A tier whose
agreement falls is drifting from the answers the stack would give without routing: the routine
A/B check between tiers, and it needs no assertions. Plain means over fixtures (not traffic
weighted): the question is how the tiers differ on the same requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from costguard.engine.quality.scorers.similarity import pair_similarities
from costguard.model.config import StackConfig, TierConfig
from costguard.model.fixtures import Fixture
from costguard.model.stats import percentile

RecordedText = Callable[[Fixture, TierConfig], "str | None"]
LOWEST = 10  # the fixtures with the lowest agreement, listed for a look


def agreement_section(
    fixtures: Sequence[Fixture],
    config: StackConfig,
    recorded_text: RecordedText,
    embedder: Callable[[], Any],
) -> dict[str, Any] | None:
    """The report's `agreement` section, or None when no fixture is recorded on two tiers."""
    reference = config.largest
    pairs: list[
        tuple[Fixture, str, str, str]
    ] = []  # fixture, tier, its answer, the reference answer
    for fx in fixtures:
        ref_text = recorded_text(fx, reference)
        if ref_text is None:
            continue
        for tier in config.tiers:
            if tier.name == reference.name:
                continue
            text = recorded_text(fx, tier)
            if text is not None:
                pairs.append((fx, tier.name, text, ref_text))
    if not pairs:
        return None
    sims = pair_similarities(embedder(), [p[2] for p in pairs], [p[3] for p in pairs])
    by_tier: dict[str, list[float]] = {}
    for (_, tier, _, _), sim in zip(pairs, sims, strict=True):
        by_tier.setdefault(tier, []).append(sim)
    tiers = {}
    for tier, values in by_tier.items():
        ordered = sorted(values)
        tiers[tier] = {
            "fixtures": len(values),
            "mean": sum(values) / len(values),
            "p10": percentile(ordered, 0.10),
            "min": ordered[0],
        }
    lowest = sorted(
        zip(pairs, sims, strict=True), key=lambda item: (item[1], item[0][0].id, item[0][1])
    )[:LOWEST]
    return {
        "reference_tier": reference.name,
        "tiers": dict(sorted(tiers.items())),
        "lowest": [
            {"id": fx.id, "tier": tier, "similarity": round(sim, 6)}
            for (fx, tier, _, _), sim in lowest
        ],
    }
