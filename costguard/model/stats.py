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
    if len(values) >= _NUMPY_FROM:
        found = _weighted_quantiles_numpy(values, weights, qs)
        if found is not None:
            return found
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


_NUMPY_FROM = 512  # samples from which sorting and accumulating in numpy pays for itself


def _weighted_quantiles_numpy(
    values: Sequence[float], weights: Sequence[float], qs: Sequence[float]
) -> list[float] | None:
    """The same quantiles as the loop in `_weighted_quantiles`, and the same elements of `values`:
    one lexsort (by value, then weight, as sorting the pairs does) and a cumulative sum, added
    left to right like the loop's. None when the inputs are outside what that equivalence needs
    (non-finite values, negative weights): the loop decides those."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.shape != w.shape or not np.isfinite(v).all() or not (w >= 0).all():
        return None
    order = np.lexsort((w, v))
    sorted_weights = w[order]
    cumulative = np.cumsum(sorted_weights)
    total = float(sum(sorted_weights.tolist()))  # `sum` over the sorted pairs, as the loop
    if total <= 0:
        return [values[int(order[-1])]] * len(qs)
    out = []
    for q in qs:
        k = int(np.searchsorted(cumulative, q * total - 1e-12 * total, side="left"))
        out.append(values[int(order[min(k, len(order) - 1)])])
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
