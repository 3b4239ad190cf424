"""The confidence cascade: the small tier answers with a self-assessed confidence; below the
threshold the request is sent on to a stronger tier, and pays for both calls.

Live backends record the small tier's confidence (its structured `{"answer", "confidence"}`
reply). Offline there is no answer to read, so the cascade uses an estimate whose method is
stated in the report and labelled estimated:

- `router_score` (default): a logistic fit of "the small tier suffices" on the router score,
  over the fixtures that carry a `label:` (simple, complex or a tier name). Without labels of
  both kinds, a router with a 0-10 score falls back to `1 - score/10`, said so; a router with
  no score (rules) gives no estimate, said so.
- `label`: the label itself (simple = 1, complex = 0): an oracle, useful as an upper bound.
- `none`: no estimate; requests without a recorded confidence are not escalated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from costguard.engine.routing.router import sufficient_rank, tiers_by_strength
from costguard.errors import ConfigError
from costguard.model.config import CascadeConfig, StackConfig
from costguard.model.fixtures import Fixture


def fit_logistic(
    xs: Sequence[float], ys: Sequence[int], *, ridge: float = 1e-2, iterations: int = 50
) -> tuple[float, float]:
    """(a, b) of P(y=1 | x) = 1 / (1 + exp(-(a + b x))), by Newton's method with a small ridge
    penalty on b (so perfectly separated labels still give a finite, steep curve)."""
    n = len(xs)
    if n == 0:
        raise ValueError("no points to fit")
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / n) or 1.0
    zs = [(x - mean) / sd for x in xs]
    a = b = 0.0
    for _ in range(iterations):
        ga = gb = 0.0
        haa = hab = hbb = 0.0
        for z, y in zip(zs, ys, strict=True):
            p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, a + b * z))))
            w = p * (1.0 - p)
            ga += y - p
            gb += (y - p) * z
            haa += w
            hab += w * z
            hbb += w * z * z
        gb -= ridge * n * b
        hbb += ridge * n
        haa += 1e-9
        det = haa * hbb - hab * hab
        if det <= 0:
            break
        da = (hbb * ga - hab * gb) / det
        db = (haa * gb - hab * ga) / det
        a += da
        b += db
        if abs(da) < 1e-9 and abs(db) < 1e-9:
            break
    # back to the unstandardised x
    return a - b * mean / sd, b / sd


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, v))))


@dataclass
class ConfidenceEstimate:
    """Estimated confidences of the cascade's first tier, per request, and how they were made."""

    values: list[float | None]
    method: str


def estimate_confidence(
    config: CascadeConfig,
    stack: StackConfig,
    fixtures: Sequence[Fixture],
    scores: Sequence[float | None],
    *,
    score_range: tuple[float, float] | None,
    router_kind: str,
) -> ConfidenceEstimate:
    """The `estimate:` method of the cascade config applied to every request."""
    order = tiers_by_strength(stack)
    from_rank = order.index(config.from_tier)
    if config.estimate == "none":
        return ConfidenceEstimate(
            [None] * len(fixtures),
            "no estimate (requests without a recorded confidence are not escalated)",
        )
    if config.estimate == "label":
        values: list[float | None] = []
        for fx in fixtures:
            rank = sufficient_rank(fx.label, order)
            values.append(None if rank is None else (1.0 if rank <= from_rank else 0.0))
        return ConfidenceEstimate(
            values,
            f"fixture labels: 1 where the label says {config.from_tier} suffices, else 0 (an oracle)",
        )
    if any(s is None for s in scores):
        # e.g. a rules router, or frontier's "only <tier>" variants: nothing to estimate from
        return ConfidenceEstimate(
            [None] * len(fixtures),
            f"no estimate: the {router_kind} router gives no score (estimate: router_score needs a complexity, "
            "knn or length router; requests without a recorded confidence are not escalated)",
        )
    xs: list[float] = []
    ys: list[int] = []
    for fx, s in zip(fixtures, scores, strict=True):
        rank = sufficient_rank(fx.label, order)
        if rank is not None and s is not None:
            xs.append(s)
            ys.append(1 if rank <= from_rank else 0)
    if xs and 0 < sum(ys) < len(ys):
        a, b = fit_logistic(xs, ys)
        return ConfidenceEstimate(
            [_sigmoid(a + b * s) for s in scores if s is not None],
            f"logistic fit of the router score on {len(xs)} labelled fixtures: "
            f"confidence = 1/(1+exp(-({a:.3f} {'+' if b >= 0 else '-'} {abs(b):.3f} x score)))",
        )
    if score_range is None:
        raise ConfigError(
            "cascade.estimate router_score needs labelled fixtures of both kinds (label: simple and complex, "
            f"or tier names) to calibrate the {router_kind} router's score; none found",
            key="cascade.estimate",
        )
    lo, hi = score_range
    return ConfidenceEstimate(
        [1.0 - (s - lo) / (hi - lo) for s in scores if s is not None],
        f"1 - score/{hi:g} (uncalibrated: no labelled fixtures of both kinds to fit on)",
    )


@dataclass
class CascadeTally:
    """What the cascade did in one run: the confidence each first-tier answer had, and its source."""

    config: CascadeConfig
    method: str
    recorded: int = 0
    estimated: int = 0
    unknown: int = 0  # neither recorded nor estimated: not escalated
    confidences: dict[int, tuple[float, str]] = field(
        default_factory=dict
    )  # fixture index -> (confidence, source)
    escalated: list[int] = field(default_factory=list)  # fixture indices

    def decide(self, index: int, recorded: float | None, estimate: float | None) -> bool:
        """Whether request `index`, answered by the first tier, escalates."""
        if recorded is not None:
            self.recorded += 1
            self.confidences[index] = (recorded, "recorded")
        elif estimate is not None:
            self.estimated += 1
            self.confidences[index] = (estimate, "estimated")
        else:
            self.unknown += 1
            return False
        return self.confidences[index][0] < self.config.threshold

    def summary(self) -> dict[str, object]:
        return {
            "from_tier": self.config.from_tier,
            "to_tier": self.config.to_tier,
            "threshold": self.config.threshold,
            "estimate": self.config.estimate,
            "method": self.method,
            "confidence_sources": {
                "recorded": self.recorded,
                "estimated": self.estimated,
                "none": self.unknown,
            },
        }
