"""Who answered what: the reply each request was answered with (a cache hit's is the reply
that filled the cache entry), and the quality of those answers, scored in one batch."""

from __future__ import annotations

from collections.abc import Sequence

from costguard.engine.backends import CallResult
from costguard.engine.caches.exact import CacheOutcome
from costguard.engine.quality.assess import Answer, QualityScorer, Response
from costguard.engine.records import RequestRecord
from costguard.engine.traffic import Progress
from costguard.model.fixtures import Fixture

Replies = dict[int, tuple[str, CallResult]]  # fixture index -> (tier, reply)


def answer_for(
    fixtures: Sequence[Fixture],
    index: int,
    outcome: CacheOutcome,
    replies: Replies,
    *,
    backend: str,
) -> Answer:
    """What request `index` was answered with: the text to score, or why there is none.

    A result-cache hit is answered with the cached answer, i.e. the reply to the request that
    filled the cache entry (`source_index`), never with a reply this request did not get.
    `backend`: the run's backend name (offline runs have recorded responses or none).
    """
    fixture = fixtures[index]
    hit = outcome.outcome in ("exact", "semantic") and outcome.source_index is not None
    source = outcome.source_index if hit else index
    assert source is not None
    tier, result = replies.get(source, (None, None))
    if result is None or result.text is None:
        where = f"on tier {tier}" if tier else "in this run"
        if result is None:
            missing = f"no reply {where}"
        elif backend == "offline" or hit:
            missing = f"no recorded response {where}"
        else:
            missing = f"tier {tier} returned no text"
        if hit:
            missing = f"{outcome.outcome} cache hit on {fixtures[source].id}'s answer: {missing}"
        return Answer(fixture, None, tier, missing)
    measured = result.output_tokens if result.output_source == "measured" else None
    return Answer(
        fixture, Response(fixture, result.text, measured, tier, result.response_ref), tier
    )


def score_answers(
    quality: QualityScorer,
    fixtures: Sequence[Fixture],
    scored: list[tuple[RequestRecord, int, CacheOutcome]],
    replies: Replies,
    *,
    backend: str,
    progress: Progress,
) -> None:
    """Quality of every answer, in one batch (similarity and judge calls are batched), set on
    each record. The answers are looked up only when some fixture has assertions to score."""
    if not any(fixtures[i].expect.assertions for _, i, _ in scored):
        return
    answers = [
        (record, answer_for(fixtures, i, outcome, replies, backend=backend))
        for record, i, outcome in scored
    ]
    progress("quality", 0, len(answers))
    scores = quality.score_many([a for _, a in answers])
    for (record, _), score in zip(answers, scores, strict=True):
        record.quality = score
    progress("quality", len(answers), len(answers))
