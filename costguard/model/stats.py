"""Percentiles and distributions: the one place costguard defines them.

Two kinds of sample exist, so there are two definitions, each used everywhere its kind occurs:

- `percentile`: plain samples (latencies of a replay, router scoring times, similarities), linear
  interpolation between the closest ranks (numpy's default, which `vllm bench serve` uses), so
  costguard's TTFT/E2EL figures can sit beside vLLM's.
- `weighted_percentile`: traffic-weighted values (a fixture's cost stands for its requests per
  month): the smallest value whose cumulative weight reaches q of the total (inverted CDF).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict


class Distribution(TypedDict):
    """mean, p50, p95, p99 and max of a traffic-weighted figure (the report's `{mean, p50, ...}`)."""

    mean: float
    p50: float
    p95: float
    p99: float
    max: float


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of plain samples, interpolated linearly (numpy's default); 0.0 if empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside 0..1")
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def weighted_percentile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values` where each value stands for `weight` requests."""
    return _weighted_quantiles(values, weights, (q,))[0]


def _weighted_quantiles(
    values: Sequence[float], weights: Sequence[float], qs: Sequence[float]
) -> list[float]:
    """`weighted_percentile` for several quantiles from one sort (ascending `qs` not required)."""
    if not values:
        return [0.0] * len(qs)
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(w for _, w in pairs)
    if total <= 0:
        return [pairs[-1][0]] * len(qs)
    slack = 1e-12 * total
    wanted = sorted((q * total - slack, k) for k, q in enumerate(qs))
    out = [pairs[-1][0]] * len(qs)
    acc = 0.0
    next_q = 0
    for value, weight in pairs:
        acc += weight
        while next_q < len(wanted) and acc >= wanted[next_q][0]:
            out[wanted[next_q][1]] = value
            next_q += 1
        if next_q == len(wanted):
            break
    return out


def weighted_distribution(values: Sequence[float], weights: Sequence[float]) -> Distribution:
    """Weighted mean, p50, p95, p99 and max (all 0.0 when there is nothing to weigh)."""
    total = sum(weights)
    mean = sum(v * w for v, w in zip(values, weights, strict=True)) / total if total else 0.0
    p50, p95, p99 = _weighted_quantiles(values, weights, (0.50, 0.95, 0.99))
    return {
        "mean": mean,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "max": max(values) if values else 0.0,
    }
