"""The semantic result cache: similarity against stored answers in the same scope, judged hits,
the threshold sweep, and (with the real MiniLM model) the bundled adversarial near-duplicates."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costguard.engine.caches.semantic import (
    SemanticCacheSimulation,
    SemanticHit,
    judge,
    semantic_scope,
)
from costguard.model.fixtures import Expect, Fixture, Sampling


def _unit(angle_deg: float) -> list[float]:
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a)]


def test_hits_at_or_above_the_threshold_take_the_most_similar_stored_answer() -> None:
    # cos(0-10 deg) = 0.985, cos(0-20) = 0.940, cos(10-20) = 0.985, cos(0-60) = 0.5
    vectors = np.array([_unit(0), _unit(60), _unit(20), _unit(10)], dtype=np.float32)
    sim = SemanticCacheSimulation([10, 11, 12, 13], vectors, ["s"] * 4, [0, 1, 2, 3], floor=0.5)
    # At 0.95: #12 (20 deg) misses (0.940 to #10) and is stored; #13 (10 deg) is 0.985 from both
    # #10 and #12: the earlier-stored of two equally similar entries wins the tie, else the nearer.
    hits = sim.run(0.95)
    assert [(h.index, h.source) for h in hits] == [(13, 10)]
    assert hits[0].similarity == pytest.approx(math.cos(math.radians(10)), abs=1e-5)
    # At 0.9: #12 hits #10 and is NOT stored; #13 then can only hit #10.
    assert [(h.index, h.source) for h in sim.run(0.9)] == [(12, 10), (13, 10)]
    # At 0.5 everything after the first hits it.
    assert [(h.index, h.source) for h in sim.run(0.5)] == [(11, 10), (12, 10), (13, 10)]
    assert sim.run(0.99) == []
    with pytest.raises(ValueError):
        sim.run(0.4)


def test_scopes_never_share_entries_and_entries_expire() -> None:
    vectors = np.array([_unit(0), _unit(0), _unit(0)], dtype=np.float32)
    scoped = SemanticCacheSimulation([0, 1, 2], vectors, ["a", "b", "a"], [0.0, 1.0, 2.0])
    assert [(h.index, h.source) for h in scoped.run(0.9)] == [(2, 0)]
    ttl = SemanticCacheSimulation([0, 1, 2], vectors, ["a", "a", "a"], [0.0, 10.0, 100.0], ttl_s=50)
    # #1 hits #0 (10 s old); #2 finds #0 expired (100 s) and #1 never stored: a miss.
    assert [(h.index, h.source) for h in ttl.run(0.9)] == [(1, 0)]


def test_finds_the_stored_answer_behind_more_than_the_kept_neighbours() -> None:
    # 40 requests at 20 deg all hit the stored 0-deg answer (cos 0.94) and are not stored
    # themselves; the last one's 32 nearest predecessors are those hits, so the stored answer
    # is found by searching past them.
    vectors = np.array([_unit(0)] + [_unit(20)] * 41, dtype=np.float32)
    sim = SemanticCacheSimulation(
        list(range(42)), vectors, ["s"] * 42, [float(i) for i in range(42)], floor=0.5
    )
    hits = sim.run(0.9)
    assert [(h.index, h.source) for h in hits] == [(i, 0) for i in range(1, 42)]


def _naive(vectors: np.ndarray, scopes: list[str], threshold: float) -> list[tuple[int, int]]:
    stored: list[int] = []
    out = []
    for i, v in enumerate(vectors):
        best, best_sim = None, -2.0
        for j in stored:
            if scopes[j] == scopes[i]:
                s = float(vectors[j] @ v)
                if s > best_sim:
                    best, best_sim = j, s
        if best is not None and best_sim >= threshold:
            out.append((i, best))
        else:
            stored.append(i)
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 120), st.sampled_from([0.2, 0.5, 0.8, 0.95]))
def test_matches_a_brute_force_cache_including_beyond_the_kept_neighbours(
    seed: int, n: int, threshold: float
) -> None:
    # Clustered vectors so that many requests have more than 32 similar predecessors, most of
    # them hits (not stored): the simulation must then search past its kept neighbours.
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 8))
    vectors = centres[rng.integers(0, 3, n)] + 0.3 * rng.normal(size=(n, 8))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    scopes = [random.Random(seed + i).choice("ab") for i in range(n)]
    sim = SemanticCacheSimulation(
        list(range(n)), vectors, scopes, [float(i) for i in range(n)], floor=0.2
    )
    got = [(h.index, h.source) for h in sim.run(threshold)]
    assert got == _naive(vectors, scopes, threshold)


def _fx(fid: str, reference: str | None, assertions: list[dict]) -> Fixture:
    return Fixture(
        id=fid,
        suite="support",
        weight=1.0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": fid}],
        sampling=Sampling(temperature=0),
        expect=Expect.model_validate({"reference": reference, "assertions": assertions}),
        file="f.yaml",
        line=1,
    )


def test_a_hit_is_judged_with_the_new_requests_expectations() -> None:
    within = _fx(
        "within", "Yes, within 30 days you get a full refund.", [{"icontains": "full refund"}]
    )
    after = _fx("after", "After 30 days only store credit.", [{"icontains": "store credit"}])
    para = _fx("para", "Yes, within 30 days you get a full refund.", [{"icontains": "full refund"}])
    bare = _fx("bare", None, [])
    fixtures = [within, after, para, bare]
    wrong = judge(SemanticHit(1, 0, 0.99), fixtures, [None] * 4)
    assert (wrong.correct, wrong.answer_source) == (False, "reference")
    assert judge(SemanticHit(2, 0, 0.9), fixtures, [None] * 4).correct is True
    # A recorded response is preferred to the reference as the cached answer.
    recorded = judge(
        SemanticHit(1, 0, 0.99), fixtures, ["You can get store credit.", None, None, None]
    )
    assert (recorded.correct, recorded.answer_source) == (True, "response")
    # No answer known for the source: unjudged.
    assert judge(SemanticHit(0, 3, 0.9), fixtures, [None] * 4).correct is None


def test_scope_is_model_and_system_prompt() -> None:
    a, b = _fx("x", None, []), _fx("y", None, [])
    assert semantic_scope(a) == semantic_scope(b)  # user text does not matter
    b.model = "other"
    assert semantic_scope(a) != semantic_scope(b)
    c = _fx("x", None, [])
    c.messages[0]["content"] = "Be verbose."
    assert semantic_scope(a) != semantic_scope(c)


# -- the layer in a run (a small bag-of-words embedding stands in for a model) --------------

SEMANTIC_FIXTURES = """\
suite: support
defaults:
  sampling: {temperature: 0}
  expect: {output_tokens: 20}
fixtures:
  - id: hours
    messages: [{role: system, content: "Be brief."}, {role: user, content: "what are your opening hours"}]
    expect: {output_tokens: 20, reference: "9 to 5.", assertions: [{contains: "9 to 5"}]}
  - id: hours-para
    messages: [{role: system, content: "Be brief."}, {role: user, content: "what are your opening hours today"}]
    expect: {output_tokens: 20, reference: "9 to 5.", assertions: [{contains: "9 to 5"}]}
  - id: hours-other-scope
    messages: [{role: system, content: "Be verbose."}, {role: user, content: "what are your opening hours"}]
  - id: hours-sampled
    sampling: {temperature: 0.9}
    messages: [{role: system, content: "Be brief."}, {role: user, content: "what are your opening hours"}]
  - id: hours-pii
    messages: [{role: system, content: "Be brief."}, {role: user, content: "what are your opening hours a@b.io"}]
  - id: hours-closing
    messages: [{role: system, content: "Be brief."}, {role: user, content: "what are your closing hours today"}]
    expect: {output_tokens: 20, reference: "We close at 5.", assertions: [{contains: "close at 5"}]}
  - id: rag-hours
    suite: rag
    messages: [{role: system, content: "Be brief."}, {role: user, content: "what are your opening hours"}]
"""


def _bag_of_words(texts: list[str]) -> np.ndarray:
    vocab = sorted({w for t in texts for w in t.split()})
    out = np.zeros((len(texts), len(vocab) + 1), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.split():
            out[i, vocab.index(w)] += 1
        out[i, -1] = 1e-6  # never all zero
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_the_layer_in_a_run_respects_scope_gates_suites_and_judges_hits(project_dir) -> None:
    from costguard import api
    from costguard.engine.backends.offline import OfflineBackend
    from costguard.engine.pipeline import Pipeline
    from costguard.engine.routing.factory import build_router
    from tests.conftest import write

    cfg = project_dir / "costguard.yaml"
    text = cfg.read_text().replace(
        "  coding: {output_tokens_prior: 400}",
        "  coding: {output_tokens_prior: 400}\n  rag: {output_tokens_prior: 50, semantic_cache: false}",
    )
    cfg.write_text(
        text + "caches:\n  semantic: {enabled: true, threshold: 0.85, sweep: [0.5, 0.8]}\n"
    )
    write(project_dir / "fixtures" / "support.yaml", SEMANTIC_FIXTURES)
    project = api.load_project(cfg)
    config = project.config
    fleet = api.build_prefix_fleet(project)
    pipeline = Pipeline(
        config,
        router=build_router(config, project=project),
        backend=OfflineBackend(config),
        prices=project.prices(),
        tokens=api.count_prompt_tokens(project, keep_ids=list(fleet.instances)),
        prefix=fleet,
        embed=_bag_of_words,
    )
    records = {r.fixture_id: r for r in pipeline.run(project.fixtures)}
    # cos("what are your opening hours", "... today") = 5 / sqrt(5 x 6) = 0.913 >= 0.85: a hit, judged correct.
    para = records["hours-para"]
    assert para.cache == "semantic" and para.extra["semantic"]["source"] == "hours"
    assert (
        para.extra["semantic"]["correct"] is True
        and para.extra["semantic"]["answer_source"] == "reference"
    )
    assert records["hours-other-scope"].cache == "miss"  # another system prompt
    assert records["hours-sampled"].cache == "bypass"  # temperature gate on both layers
    assert records["hours-pii"].cache == "bypass" and records["hours-pii"].extra["pii"] == ["email"]
    assert (
        records["rag-hours"].cache == "exact" or records["rag-hours"].cache == "miss"
    )  # semantic off for rag
    assert "semantic" not in records["rag-hours"].extra
    # "hours-para" was served from cache, so only "hours" is stored: cos("what are your closing
    # hours today", "what are your opening hours") = 4 / sqrt(6 x 5) = 0.730. A miss at 0.85 and
    # 0.8, a WRONG hit at 0.5 (served "9 to 5.", expected "close at 5").
    assert records["hours-closing"].cache == "miss"
    sweep = pipeline.simulation.semantic_sweep
    closing = [
        (h.source, h.correct)
        for t in (0.8, 0.5)
        for h in sweep[t]
        if project.fixtures[h.index].id == "hours-closing"
    ]
    assert closing == [(0, False)]
    assert sorted(sweep) == [0.5, 0.8, 0.85]
    # The semantic hit never reached the small tier (nothing admitted), but is priced with what it
    # would have reused there: the blocks "hours" left.
    assert para.calls[0].cached_source == "simulated" and para.calls[0].cached_tokens > 0
    assert "prefix" not in para.extra
