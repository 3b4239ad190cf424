"""The result-cache pass: every request, in arrival order, through the PII guard and the exact
cache, and marked for the semantic layer where it may be looked up there.

The pass needs only the fixtures and the config (not token counts, routes or replies). Most of
its work does not depend on the order (the arrival order itself, what the PII guard finds in each
request, each request's exact-cache key: `ResultCaches.prepare`), so a run prepares it in a
second process while this one counts tokens and routes, and then runs the ordered lookups here
(`start_pass`): the same code on the same fixtures, so the outcomes are the ones this process
would compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from costguard.engine.caches.exact import CacheOutcome, ExactResultCache, temperature_gate
from costguard.engine.caches.pii import PiiGuard
from costguard.engine.caches.semantic import semantic_text
from costguard.engine.forked import Forked
from costguard.engine.prepared_store import PreparedStore, pass_key
from costguard.engine.traffic import arrival_order, arrival_times
from costguard.model.config import StackConfig
from costguard.model.fixtures import Fixture

# Below this many fixtures the pass runs in this process: a second process pays for itself
# only when the pass takes longer than starting one and sending its outcomes back.
FORK_MIN_FIXTURES = 20_000


@dataclass
class PreparedPass:
    """What the pass computes before its ordered lookups: the arrival order and times, and per
    fixture index what the PII guard found (only where it found something) and the exact
    cache's key (None: no exact cache, PII found, or sampling keeps the request out)."""

    order: list[int]
    times: list[float]
    pii: dict[int, list[str]]
    exact_keys: list[bytes | None]


@dataclass
class ResultCachePass:
    """The arrival order and times, and what the result caches did with each request."""

    order: list[int]  # fixture indices in arrival order
    times: list[float]  # arrival time of the n-th arrival
    outcomes: dict[int, CacheOutcome]  # fixture index -> outcome of the PII guard / exact cache
    pii: dict[int, list[str]] = field(default_factory=dict)  # fixture index -> detectors matched
    semantic_candidates: list[tuple[int, float]] = field(default_factory=list)  # (index, time)
    exact_expired: int | None = None  # None: no exact cache


class ResultCaches:
    """The PII guard and the exact cache of a stack config, and the semantic layer's gates."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        caches = config.caches
        self.exact_cache = (
            ExactResultCache(
                max_temperature=caches.exact.max_temperature,
                ttl_s=caches.exact.ttl_s,
                normalize=caches.exact.normalize,
            )
            if caches.exact.enabled
            else None
        )
        self.semantic = caches.semantic if caches.semantic.enabled else None
        self.pii = (
            PiiGuard(caches.pii.detectors, caches.pii.custom, caches.pii.allow, caches.pii.roles)
            if caches.pii.enabled and (self.exact_cache is not None or self.semantic is not None)
            else None
        )
        self._shared: dict[tuple[str, str | None], CacheOutcome] = {}

    def prepare(self, fixtures: Sequence[Fixture]) -> PreparedPass:
        """The pass's work that does not depend on the arrival order (see PreparedPass)."""
        order = arrival_order(fixtures, self.config.traffic.seed)
        times = arrival_times(len(fixtures), self.config)
        pii: dict[int, list[str]] = {}
        keys: list[bytes | None] = [None] * len(fixtures)
        for i, fixture in enumerate(fixtures):
            if self.pii is not None:
                found = self.pii.scan(fixture)
                if found:
                    pii[i] = found
                    continue  # bypassed: never looked up in the exact cache
            if self.exact_cache is not None:
                keys[i] = self.exact_cache.key(fixture)
        return PreparedPass(order, times, pii, keys)

    def run(
        self, fixtures: Sequence[Fixture], prepared: PreparedPass | None = None
    ) -> ResultCachePass:
        """The whole pass over `fixtures`, in the config's seeded arrival order (`prepared`:
        its `prepare(fixtures)`, where it was computed elsewhere)."""
        if prepared is None:
            prepared = self.prepare(fixtures)
        order, times, pii, keys = prepared.order, prepared.times, prepared.pii, prepared.exact_keys
        out = ResultCachePass(order, times, {})
        for arrival, i in enumerate(order):
            outcome, found, semantic = self.lookup(
                i, fixtures[i], times[arrival], pii.get(i, []), keys[i]
            )
            out.outcomes[i] = outcome
            if found:
                out.pii[i] = found
            if semantic:
                out.semantic_candidates.append((i, times[arrival]))
        if self.exact_cache is not None:
            out.exact_expired = self.exact_cache.expired
        return out

    def _outcome(self, outcome: str, detail: str | None = None) -> CacheOutcome:
        """One (immutable) CacheOutcome per distinct miss/bypass: 100k requests share a few."""
        key = (outcome, detail)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = CacheOutcome(outcome, detail)
        return shared

    def lookup(
        self, index: int, fixture: Fixture, now: float, found: list[str], key: bytes | None
    ) -> tuple[CacheOutcome, list[str], bool]:
        """PII guard, then the exact cache: (outcome, PII detectors matched, reaches the semantic
        layer). `found`, `key`: what `prepare` found in the request and its exact-cache key."""
        if found:
            return self._outcome("bypass", "PII: " + ", ".join(found)), found, False
        gates: list[str] = []
        outcome = None
        if self.exact_cache is not None:
            outcome = self.exact_cache.lookup(fixture, index=index, now=now, key=key)
            if outcome.outcome == "exact":
                return outcome, [], False
            if outcome.outcome == "bypass":
                gates.append(outcome.detail or "bypass")
                outcome = None
            elif outcome.source_index is None:
                outcome = self._outcome(outcome.outcome, outcome.detail)
        semantic = self.semantic_eligible(fixture)
        if semantic is True:
            return outcome or self._outcome("miss"), [], True
        if semantic is not None:
            gates.append(semantic)
        if outcome is not None:
            return outcome, [], False
        return (
            (self._outcome("bypass", "; ".join(gates)) if gates else self._outcome("miss")),
            [],
            False,
        )

    def semantic_eligible(self, fixture: Fixture) -> Literal[True] | str | None:
        """True: looked up; a string: the gate that stops it; None: the layer does not apply."""
        if self.semantic is None:
            return None
        suite = self.config.suites.get(fixture.suite)
        if suite is not None and not suite.semantic_cache:
            return None
        if not semantic_text(fixture).strip():
            return None
        gate = temperature_gate(fixture, self.semantic.max_temperature)
        return True if gate is None else gate


class StartedPass:
    """A result-cache pass whose preparation runs in a second process (where there is one) or
    is read from `store` (kept by an earlier run with the same fixtures and settings);
    `.result()` waits for it and runs the ordered lookups here."""

    def __init__(
        self,
        config: StackConfig,
        fixtures: Sequence[Fixture],
        *,
        fork: bool = True,
        store: PreparedStore | None = None,
    ) -> None:
        caches = ResultCaches(config)
        self._caches: ResultCaches | None = caches
        self._fixtures = fixtures
        self._store, self._key = store, None
        self.kept: PreparedPass | None = None  # read from the store
        if store is not None:
            self._key = pass_key(config, fixtures)
            kept = store.load(self._key, len(fixtures)) if self._key is not None else None
            if kept is not None:
                self.kept = PreparedPass(*kept)
        self._prepared: Forked[PreparedPass] | None = Forked(
            lambda: caches.prepare(fixtures), fork=fork and self.kept is None
        )
        self._forked = False

    @property
    def forked(self) -> bool:
        """Whether the preparation came from a forked process."""
        return self._prepared.forked if self._prepared is not None else self._forked

    def result(self) -> ResultCachePass:
        """The pass (once: the caches' entries and the exact-cache keys, one per request, are
        let go after it)."""
        caches, self._caches = self._caches, None
        pending, self._prepared = self._prepared, None  # (its function holds the caches)
        if caches is None or pending is None:
            raise RuntimeError("the result-cache pass was already taken")
        prepared, self.kept = self.kept, None
        try:
            if prepared is None:
                prepared = pending.result()
                if self._store is not None and self._key is not None:
                    self._store.save(
                        self._key,
                        (prepared.order, prepared.times, prepared.pii, prepared.exact_keys),
                    )
        finally:
            self._forked = pending.forked
            pending.close()
        return caches.run(self._fixtures, prepared)

    def close(self) -> None:
        if self._prepared is not None:
            self._prepared.close()

    def __enter__(self) -> StartedPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_pass(
    config: StackConfig,
    fixtures: Sequence[Fixture],
    *,
    fork_min: int | None = None,
    cache_dir: Path | None = None,
) -> StartedPass:
    """The result-cache pass, prepared in a second process when there are at least `fork_min`
    (default FORK_MIN_FIXTURES) fixtures, a second core and `fork`; `.result()` waits for it.
    With `cache_dir`, a pass prepared by an earlier run is read instead (and one prepared here
    is kept): `prepared_store`."""
    least = FORK_MIN_FIXTURES if fork_min is None else fork_min
    store = PreparedStore(cache_dir / "passes") if cache_dir is not None else None
    return StartedPass(config, fixtures, fork=len(fixtures) >= least, store=store)
