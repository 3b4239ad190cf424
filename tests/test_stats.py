"""The traffic-weighted percentiles: the numpy path (large samples) gives the same elements as
the loop that defines them, for any finite values and non-negative weights."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import costguard.model.stats as stats

number = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2.0, 2, 0.5]),  # ties, ints beside floats of equal value
)
weight = st.one_of(
    st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1, 0.5]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(number, weight), min_size=1, max_size=80))
def test_numpy_quantiles_are_the_loops(pairs: list[tuple[float, float]]) -> None:
    values = [v for v, _ in pairs]
    weights = [w for _, w in pairs]
    qs = (0.0, 0.5, 0.95, 0.99, 1.0)
    loop = stats._weighted_quantiles(values, weights, qs)  # under _NUMPY_FROM: the loop
    fast = stats._weighted_quantiles_numpy(values, weights, qs)
    assert fast is not None
    assert fast == loop and [type(x) for x in fast] == [type(x) for x in loop]


def test_large_samples_take_the_numpy_path_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [float(i % 97) for i in range(5000)] + [3] * 100
    weights = [float((i * 7) % 13) for i in range(5100)]
    fast = stats.weighted_distribution(values, weights)
    monkeypatch.setattr(stats, "_NUMPY_FROM", 10**9)
    assert stats.weighted_distribution(values, weights) == fast


def test_unusual_inputs_are_left_to_the_loop() -> None:
    assert stats._weighted_quantiles_numpy([1.0, 2.0], [1.0, -1.0], (0.5,)) is None
    assert stats._weighted_quantiles_numpy([float("inf"), 2.0], [1.0, 1.0], (0.5,)) is None
    assert stats.weighted_percentile([5.0, 1.0], [0.0, 0.0], 0.5) == 5.0  # no weight: the largest
