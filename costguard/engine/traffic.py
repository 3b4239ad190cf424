"""Simulated traffic: which fixture arrives when, how many requests a month each stands for,
and which arrivals one shard of a run serves."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from costguard.errors import UsageError
from costguard.model.config import StackConfig
from costguard.model.fixtures import Fixture

Progress = Callable[[str, int, int], None]

SECONDS_PER_MONTH = 30.4375 * 86400  # an average month


def arrival_order(fixtures: Sequence[Fixture], seed: int) -> list[int]:
    """Indices of `fixtures` in simulated arrival order.

    At each step a suite is drawn with probability proportional to its remaining weight and
    its next fixture (in file order) arrives. Deterministic for a seed.
    """
    queues: dict[str, list[int]] = {}
    for i, fx in enumerate(fixtures):
        queues.setdefault(fx.suite, []).append(i)
    remaining = {s: sum(fixtures[i].weight for i in q) for s, q in queues.items()}
    pos = {s: 0 for s in queues}
    rng = random.Random(seed)
    suites = sorted(queues)
    order: list[int] = []
    while len(order) < len(fixtures):
        live = [s for s in suites if pos[s] < len(queues[s])]
        total = sum(remaining[s] for s in live)
        pick = rng.random() * total
        chosen = live[-1]
        for s in live:
            pick -= remaining[s]
            if pick < 0:
                chosen = s
                break
        i = queues[chosen][pos[chosen]]
        pos[chosen] += 1
        remaining[chosen] -= fixtures[i].weight
        order.append(i)
    return order


def arrival_times(n: int, config: StackConfig) -> list[float]:
    """Arrival time in seconds of the n-th request in arrival order: Poisson arrivals, seeded.

    The rate is `traffic.arrival_rate_per_s`, else `requests_per_month` spread over an average
    month. Cache TTLs are measured against these times: the fixtures are treated as consecutive
    requests of live traffic.
    """
    from costguard.serving.replay import poisson_arrivals

    traffic = config.traffic
    rate = traffic.arrival_rate_per_s or traffic.requests_per_month / SECONDS_PER_MONTH
    return poisson_arrivals(n, rate, f"{traffic.seed}:arrival-times")


def monthly_requests(fixtures: Sequence[Fixture], config: StackConfig) -> list[float]:
    """Each fixture's requests per month: total x suite share x the fixture's share of its suite.

    Suite shares come from `suites:` in the config, else from the fixtures' summed weights.
    """
    suite_weight: dict[str, float] = {}
    for fx in fixtures:
        suite_weight[fx.suite] = suite_weight.get(fx.suite, 0.0) + fx.weight
    declared = {name: s.share for name, s in config.suites.items() if s.share is not None}
    if declared:
        present = set(suite_weight)
        # Suites with a share but no fixtures carry no traffic here; renormalise over the present ones.
        total_share = sum(v for k, v in declared.items() if k in present)
        shares = {s: declared.get(s, 0.0) / total_share if total_share else 0.0 for s in present}
    else:
        total = sum(suite_weight.values())
        shares = {s: w / total for s, w in suite_weight.items()}
    per_month = config.traffic.requests_per_month
    return [per_month * shares[fx.suite] * fx.weight / suite_weight[fx.suite] for fx in fixtures]


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` (1-based) -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 2/4") from None
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text!r}: need 1 <= i <= n")
    return index, count


def shard_arrivals(n: int, shard: tuple[int, int] | None) -> range:
    """Arrival positions of one shard: a contiguous block of the arrival order, so requests that
    arrive close together (a conversation's turns, bursts that share prefixes) stay on one server."""
    if shard is None:
        return range(n)
    index, count = shard
    return range((index - 1) * n // count, index * n // count)
