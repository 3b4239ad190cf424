"""`similar`: the cosine similarity of the response to a reference answer, against a threshold.

Texts are embedded by `costguard.text.embeddings.Embedder` (on-disk cache, torch only on a miss), all
pairs of a run in one batch. The reference is the assertion's own `reference:` or, by default,
the fixture's `expect.reference`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from costguard.engine.quality.scorers import AssertionScore, Response
from costguard.model.fixtures import Assertion, Fixture


def reference_of(assertion: Assertion, fixture: Fixture) -> str | None:
    check = assertion.similar
    assert check is not None
    return check.reference if check.reference is not None else fixture.expect.reference


def pair_similarities(embedder: Any, left: Sequence[str], right: Sequence[str]) -> list[float]:
    """Cosine similarity of left[i] to right[i] for every i (one embedding batch for all texts)."""
    if not left:
        return []
    vectors = embedder.embed([*left, *right])
    n = len(left)
    return [float(vectors[i] @ vectors[n + i]) for i in range(n)]


def score_similar(
    items: Sequence[tuple[Assertion, Response]], embedder: Any
) -> list[AssertionScore]:
    """Score every `similar` assertion of a run at once."""
    references = [reference_of(a, r.fixture) or "" for a, r in items]
    sims = pair_similarities(embedder, [r.text for _, r in items], references)
    out = []
    for (assertion, _), sim in zip(items, sims, strict=True):
        assert assertion.similar is not None
        threshold = assertion.similar.threshold
        ok = sim >= threshold
        out.append(
            AssertionScore.check(
                assertion,
                ok,
                f"similarity {sim:.3f} to the reference {'>=' if ok else '<'} {threshold:g}",
                sim,
            )
        )
    return out
