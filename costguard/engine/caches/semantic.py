"""The semantic result cache: a request similar enough to an earlier one gets that one's answer.

What is compared: the embedding of the request's last user message (the usual choice, e.g.
GPTCache's ``last_content``), by cosine similarity, only against entries in the same scope: the
same requested model and the same system prompt. A request at or above the threshold is served
the most similar stored answer; a request below it goes to the model and its answer is stored.
Entries live ``ttl_s`` seconds of traffic time.

A loose threshold serves wrong answers (a reversed question, a swapped entity), so every hit is
judged: the cached answer is held against the NEW request's expectations (`costguard.engine.quality.assess`).
The simulation runs once per threshold of a sweep over the same arrival sequence, so the report
can show hits against wrong hits as the threshold moves. Nearest earlier neighbours are computed
once (blockwise matrix products), then each threshold replays the arrivals cheaply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from costguard.engine.quality.assess import passes_expectations
from costguard.model.fixtures import Fixture, tool_fields

if TYPE_CHECKING:
    import numpy as np

_ROWS_PER_BLOCK = 512  # similarity rows computed at once: 512 x n float32 per block
_MAX_CANDIDATES = 32  # nearest earlier neighbours kept per request (more are searched on demand)


def semantic_text(fixture: Fixture) -> str:
    """The text that is embedded: the last user message."""
    return fixture.last_user_text


def semantic_scope(fixture: Fixture) -> str:
    """Requests share entries only with the same requested model, system prompt and tools (a
    request offering tools may be answered with a tool call)."""
    scope: list[Any] = [fixture.model or "", fixture.system_text]
    if fixture.tools is not None or fixture.tool_choice is not None:
        scope.append(tool_fields(fixture.tools, fixture.tool_choice))
    payload = json.dumps(scope, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SemanticHit:
    """A request served from the semantic cache, and what it was served."""

    index: int  # the fixture served from cache
    source: int  # the fixture whose answer was cached
    similarity: float
    answer_source: str | None = (
        None  # "response" (recorded) | "reference" (expect.reference) | None
    )
    correct: bool | None = (
        None  # the cached answer meets the new request's expectations; None: unjudged
    )


class SemanticCacheSimulation:
    """Replays one arrival sequence through a semantic cache at any threshold.

    `indices` are fixture indices in arrival order (only the requests that reach this layer),
    `embeddings` their L2-normalised embeddings (rows in the same order), `scopes` their scope
    keys and `times` their arrival times in seconds.
    """

    def __init__(
        self,
        indices: Sequence[int],
        embeddings: np.ndarray,
        scopes: Sequence[Hashable],
        times: Sequence[float],
        *,
        ttl_s: float | None = None,
        floor: float = 0.0,
    ) -> None:
        import numpy as np

        if not len(indices) == len(embeddings) == len(scopes) == len(times):
            raise ValueError("indices, embeddings, scopes and times must have the same length")
        self.indices = list(indices)
        self._emb = np.asarray(embeddings, dtype=np.float32)
        self._times = list(times)
        self.ttl_s = ttl_s
        self.floor = floor
        groups: dict[Hashable, list[int]] = {}
        for pos, scope in enumerate(scopes):
            groups.setdefault(scope, []).append(pos)
        self._group_of: list[list[int]] = [[] for _ in self.indices]
        for members in groups.values():
            for pos in members:
                self._group_of[pos] = members
        self._candidates = self._nearest_earlier(list(groups.values()))

    def _nearest_earlier(
        self, groups: list[list[int]]
    ) -> list[tuple[list[int], list[float], bool]]:
        """Per position: earlier same-scope positions with similarity >= floor, most similar
        first (at most _MAX_CANDIDATES), and whether more were cut off."""
        import numpy as np

        out: list[tuple[list[int], list[float], bool]] = [([], [], False)] * len(self.indices)
        for members in groups:
            pos = np.asarray(members)
            vectors = self._emb[pos]
            for start in range(0, len(pos), _ROWS_PER_BLOCK):
                stop = min(start + _ROWS_PER_BLOCK, len(pos))
                sims = vectors[start:stop] @ vectors[:stop].T
                for r in range(stop - start):
                    row = sims[r, : start + r]  # earlier arrivals only
                    near = np.flatnonzero(row >= self.floor)
                    cut = near.size > _MAX_CANDIDATES
                    if cut:
                        near = near[np.argpartition(row[near], -_MAX_CANDIDATES)[-_MAX_CANDIDATES:]]
                    near = near[np.argsort(-row[near], kind="stable")]
                    out[int(pos[start + r])] = (pos[near].tolist(), row[near].tolist(), cut)
        return out

    def _fresh(self, pos: int, earlier: int) -> bool:
        return self.ttl_s is None or self._times[pos] - self._times[earlier] <= self.ttl_s

    def run(self, threshold: float) -> list[SemanticHit]:
        """Hits at `threshold` (unjudged), in arrival order."""
        import numpy as np

        if threshold < self.floor:
            raise ValueError(f"threshold {threshold} is below the simulation's floor {self.floor}")
        stored = [False] * len(self.indices)
        hits: list[SemanticHit] = []
        for pos, (near, sims, cut) in enumerate(self._candidates):
            found: tuple[int, float] | None = None
            exhausted = True
            for earlier, sim in zip(near, sims, strict=True):
                if sim < threshold:
                    exhausted = False
                    break
                if stored[earlier] and self._fresh(pos, earlier):
                    found = (earlier, sim)
                    exhausted = False
                    break
            if found is None and exhausted and cut:
                # Every kept neighbour was above the threshold but unusable: search them all.
                members = [
                    p for p in self._group_of[pos] if p < pos and stored[p] and self._fresh(pos, p)
                ]
                if members:
                    row = self._emb[members] @ self._emb[pos]
                    best = int(np.argmax(row))
                    if row[best] >= threshold:
                        found = (members[best], float(row[best]))
            if found is None:
                stored[pos] = True
            else:
                hits.append(
                    SemanticHit(self.indices[pos], self.indices[found[0]], round(found[1], 6))
                )
        return hits


def cached_answer(fixture: Fixture, response_text: str | None) -> tuple[str | None, str | None]:
    """The answer a fixture leaves in the cache: its recorded response, else its reference
    (a stand-in for what the model would have said, labelled as such)."""
    if response_text is not None:
        return response_text, "response"
    if fixture.expect.reference is not None:
        return fixture.expect.reference, "reference"
    return None, None


def judge(
    hit: SemanticHit, fixtures: Sequence[Fixture], responses: Sequence[str | None]
) -> SemanticHit:
    """Hold the cached answer against the new request's expectations."""
    text, source = cached_answer(fixtures[hit.source], responses[hit.source])
    correct = None if text is None else passes_expectations(fixtures[hit.index].expect, text)
    return SemanticHit(hit.index, hit.source, hit.similarity, source, correct)
