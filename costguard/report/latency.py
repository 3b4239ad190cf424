"""The report's `latency` section: end-to-end latency of the requests a model served, summed
in `projection.aggregate`'s walk over the records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from costguard.engine.records import TierCall
from costguard.model.stats import weighted_distribution


class LatencySums:
    """End-to-end latency of the requests a model served, where every call's latency was measured.

    Cache hits are left out (no model call; their latency is not measured), and so are requests
    with a call of unknown latency; `coverage` is the measured share of model-served traffic.
    """

    __slots__ = ("values", "weights", "model_requests", "served_traffic")

    def __init__(self) -> None:
        self.values: list[float] = []
        self.weights: list[float] = []
        self.model_requests = 0
        self.served_traffic = 0.0

    def add(self, billed: Sequence[TierCall], monthly: float) -> None:
        """A request a model served (its billed calls, none empty) and its requests per month."""
        self.model_requests += 1
        self.served_traffic += monthly
        if len(billed) == 1 and billed[0].latency_s is None:  # offline: no latency measured
            return
        if all(c.latency_s is not None for c in billed):
            self.values.append(sum(c.latency_s or 0.0 for c in billed))
            self.weights.append(monthly)

    def section(self) -> dict[str, Any] | None:
        """None when no latency was measured at all (offline without recorded responses)."""
        if not self.values:
            return None
        return {
            "e2e_s": weighted_distribution(self.values, self.weights),
            "measured_requests": len(self.values),
            "model_requests": self.model_requests,
            "coverage": sum(self.weights) / self.served_traffic if self.served_traffic else 0.0,
        }
