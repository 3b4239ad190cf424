"""The exact result cache: an identical request (model, sampling, messages) is served from cache.

Only near-deterministic requests are cacheable: temperature must be set and at most the
configured maximum (an unset temperature means the server's default, usually 1.0).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from costguard.fixtures import Fixture


@dataclass(frozen=True)
class CacheOutcome:
    outcome: str  # "miss" | "exact" | "bypass"
    detail: str | None = None


def exact_key(fixture: Fixture) -> str:
    """Normalised key: requested model, sampling parameters, and the full message list."""
    messages = [
        {"role": m["role"].strip().lower(), "content": " ".join((m.get("content") or "").split())}
        for m in fixture.messages
    ]
    payload = {"model": fixture.model or "", "sampling": fixture.sampling.as_request_params(), "messages": messages}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ExactResultCache:
    def __init__(self, *, max_temperature: float = 0.1) -> None:
        self.max_temperature = max_temperature
        self._entries: dict[str, str] = {}  # key -> fixture id that filled it

    def lookup(self, fixture: Fixture) -> CacheOutcome:
        """Look the request up; on a miss, its answer is stored (requests are replayed in arrival order)."""
        temperature = fixture.sampling.temperature
        if temperature is None:
            return CacheOutcome("bypass", "temperature unset (server default is sampled)")
        if temperature > self.max_temperature:
            return CacheOutcome("bypass", f"temperature {temperature:g} > {self.max_temperature:g}")
        key = exact_key(fixture)
        first = self._entries.get(key)
        if first is not None:
            return CacheOutcome("exact", f"same request as {first}")
        self._entries[key] = fixture.id
        return CacheOutcome("miss")
