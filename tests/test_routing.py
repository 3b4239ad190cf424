"""Routing math without a model: scores over vectors, thresholds, RouteLLM metrics, baselines,
the routing config schema and the routing policy metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from costguard.engine.records import RequestRecord, RouteAlternatives
from costguard.engine.routing.complexity import (
    exemplar_scores,
    knn_scores,
    routed_text,
    tier_for_score,
)
from costguard.engine.routing.metrics import (
    apgr,
    cpt,
    pgr_at,
    pgr_curve,
    router_overhead,
    routing_details,
)
from costguard.engine.routing.router import (
    OVERHEAD_REPEATS,
    RouterOverhead,
    RoutingRun,
    sufficient_rank,
    tiers_by_strength,
)
from costguard.errors import ConfigError
from costguard.model.config import ScoreThreshold, StackConfig
from costguard.model.fixtures import Expect, Fixture, Sampling
from costguard.policy.engine import MetricContext, Rule, evaluate, load_policy
from costguard.report.run_report import RunReport
from tests.conftest import write


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# -- scores --------------------------------------------------------------------------------------


def test_exemplar_scores_run_from_simple_to_complex() -> None:
    simple = np.stack([unit(1, 0, 0), unit(1, 0.1, 0)])
    complex_ = np.stack([unit(0, 1, 0), unit(0.1, 1, 0)])
    queries = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(1, 1, 0)])
    s = exemplar_scores(queries, [simple, complex_], top_k=2, temperature=0.05)
    assert s[0] < 0.1 and s[1] > 9.9
    assert s[2] == pytest.approx(5.0, abs=0.01)  # equally close to both classes
    assert 0 <= s.min() and s.max() <= 10


def test_exemplar_scores_with_three_tiers_put_the_middle_class_at_five() -> None:
    classes = [np.stack([unit(1, 0, 0)]), np.stack([unit(0, 1, 0)]), np.stack([unit(0, 0, 1)])]
    s = exemplar_scores(
        np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)]), classes, temperature=0.01
    )
    assert s == pytest.approx([0.0, 5.0, 10.0], abs=1e-3)


def test_exemplar_scores_average_the_top_k_of_each_class() -> None:
    # one complex exemplar matches exactly, the other is far: top_k=1 sees only the match
    simple = np.stack([unit(1, 1, 0)])
    complex_ = np.stack([unit(0, 1, 0), unit(0, 0, 1)])
    q = np.stack([unit(0, 1, 0)])
    assert (
        exemplar_scores(q, [simple, complex_], top_k=1)[0]
        > exemplar_scores(q, [simple, complex_], top_k=2)[0]
    )


def test_knn_scores_vote_by_similarity_and_skip_the_query_itself() -> None:
    train = np.stack([unit(1, 0), unit(1, 0.05), unit(0, 1), unit(0.05, 1)])
    positions = [0.0, 0.0, 1.0, 1.0]
    q = np.stack([unit(1, 0.02), unit(0.02, 1)])
    s = knn_scores(q, train, positions, k=2)
    assert s[0] == pytest.approx(0.0) and s[1] == pytest.approx(10.0)
    # The query *is* training row 0: with keys it cannot vote for itself.
    own = knn_scores(
        np.stack([unit(1, 0)]),
        train,
        positions,
        k=1,
        query_keys=["a"],
        train_keys=["a", "b", "c", "d"],
    )
    alone = knn_scores(np.stack([unit(1, 0)]), train, positions, k=1)
    assert own[0] == pytest.approx(0.0) and alone[0] == pytest.approx(0.0)
    mixed_train = np.stack([unit(1, 0), unit(0.9, 0.44)])
    assert (
        knn_scores(
            np.stack([unit(1, 0)]),
            mixed_train,
            [0.0, 1.0],
            k=1,
            query_keys=["x"],
            train_keys=["x", "y"],
        )[0]
        == 10.0
    )


def test_thresholds_are_inclusive_and_the_default_tier_takes_the_rest() -> None:
    th = [ScoreThreshold(max_score=3, tier="small"), ScoreThreshold(max_score=6, tier="mid")]
    assert tier_for_score(3.0, th, "large")[0] == "small"
    assert tier_for_score(3.01, th, "large")[0] == "mid"
    assert tier_for_score(6.5, th, "large") == ("large", "score 6.50 above every threshold")


def test_long_texts_are_embedded_from_their_beginning_and_end() -> None:
    fx = Fixture(
        "x",
        "s",
        1.0,
        [{"role": "user", "content": "INSTRUCTION " + "x" * 5000 + " QUESTION?"}],
        Sampling(),
        Expect(),
        "f.yaml",
        1,
    )
    text = routed_text(fx, "last_user", 200)
    assert text.startswith("INSTRUCTION") and text.endswith("QUESTION?") and len(text) < 220
    assert routed_text(fx, "last_user", None) == fx.last_user_text


# -- RouteLLM metrics ----------------------------------------------------------------------------


def test_perfect_router_reaches_full_pgr_at_the_complex_share() -> None:
    # 20% of traffic needs the strong tier; the scorer ranks exactly those first
    rows = [(1.0, 1.0, 1.0)] * 2 + [(0.0, 1.0, 0.0)] * 8
    curve = pgr_curve(rows)
    assert curve[-1] == (1.0, 1.0)
    assert cpt(curve, 0.5) == pytest.approx(0.2) and cpt(curve, 0.8) == pytest.approx(0.2)
    assert pgr_at(curve, 0.1) == pytest.approx(0.5)
    # PGR 0, .5, 1, 1, ... over 0%, 10%, ..., 100%: trapezoids give (0/2 + .5 + 9*1 - 1/2)/10
    assert apgr(curve) == pytest.approx((0.5 + 8 + 0.5) / 10)


def test_a_scorer_that_cannot_tell_requests_apart_is_a_random_router() -> None:
    curve = pgr_curve([(5.0, 1.0, 1.0), (5.0, 1.0, 0.0), (5.0, 2.0, 1.0)])
    assert curve == [(0.0, 0.0), (1.0, 1.0)]
    assert apgr(curve) == pytest.approx(0.5)
    assert cpt(curve, 0.5) == 1.0  # ties move together: nothing short of everything


def test_reversed_scorer_has_low_apgr_and_weights_count() -> None:
    rows = [(0.0, 3.0, 1.0), (1.0, 1.0, 0.0)]  # the one request needing strong scores lowest
    curve = pgr_curve(rows)
    assert cpt(curve, 0.5) == 1.0
    assert apgr(curve) < 0.5
    assert pgr_curve([(1.0, 1.0, 0.0)]) == []  # no gain anywhere: undefined


# -- baselines on records -------------------------------------------------------------------------

STACK = """\
tiers:
  - {name: small, model: s, tokenizer: {hf: test/tok}, pricing: {input_per_mtok: 1, output_per_mtok: 1}}
  - {name: large, model: l, tokenizer: {hf: test/tok}, pricing: {input_per_mtok: 10, output_per_mtok: 10}}
traffic: {requests_per_month: 100}
"""


def stack(text: str = STACK) -> StackConfig:
    import yaml

    return StackConfig.model_validate(yaml.safe_load(text))


def record(
    i: int, tier: str, score: float | None, label: str | None, tokens: int, *, monthly: float = 25.0
) -> RequestRecord:
    return RequestRecord(
        fixture_id=f"f{i}",
        suite="s",
        location="f.yaml",
        content_hash=str(i),
        weight=1.0,
        monthly_requests=monthly,
        arrival_index=i,
        route_tier=tier,
        route_reason="test",
        route_score=score,
        route_label=label,
        alternatives=RouteAlternatives.of(tokens, {"small": 1.0, "large": 10.0}, False),
    )


def test_baselines_price_the_same_fixtures_on_one_tier_each() -> None:
    config = stack()
    # two hard short prompts (complex), two long easy ones (simple); the router gets them right
    records = [
        record(0, "large", 9.0, "complex", 10),
        record(1, "large", 8.0, "complex", 12),
        record(2, "small", 1.0, "simple", 500),
        record(3, "small", 2.0, "simple", 900),
    ]
    out = routing_details(records, config, RoutingRun("complexity", "test router", (0.0, 10.0)))
    assert out["routed_shares"] == {"small": 0.5, "large": 0.5} and out["strong_share"] == 0.5
    cmp = out["comparison"]
    rows = cmp["baselines"]
    assert rows["router"]["cost_per_month"] == pytest.approx(25 * (10 + 10 + 1 + 1))
    assert rows["all_largest"]["cost_per_month"] == pytest.approx(1000)
    assert rows["all_smallest"]["cost_per_month"] == pytest.approx(100)
    assert rows["random"]["cost_per_month"] == pytest.approx(100 * (0.5 * 1 + 0.5 * 10))
    # the length router sends the two short (hard) prompts to the small tier: all wrong
    assert rows["length"]["quality"] == pytest.approx(0.5) and rows["length"][
        "pgr"
    ] == pytest.approx(0.0)
    assert rows["router"]["quality"] == 1.0 and rows["router"]["pgr"] == 1.0
    assert rows["router"]["apgr"] > rows["random"]["apgr"] == 0.5 > rows["length"]["apgr"]
    assert rows["router"]["cpt50"] == pytest.approx(0.25)
    assert cmp["savings"]["vs_all_largest"]["saving_per_month"] == pytest.approx(1000 - 550)
    assert cmp["savings"]["vs_random"]["baseline"] == "random"
    assert cmp["quality"]["source"] == "labels" and cmp["quality"]["labelled_share"] == 1.0


def test_quality_metrics_say_why_they_are_missing() -> None:
    config = stack()
    unlabelled = [record(0, "small", 1.0, None, 10), record(1, "large", 9.0, None, 10)]
    cmp = routing_details(unlabelled, config, None)["comparison"]
    assert cmp["quality"]["available"] is False and "label" in cmp["quality"]["reason"]
    no_scores = [record(0, "small", None, "simple", 10), record(1, "large", None, "complex", 10)]
    rows = routing_details(no_scores, config, None)["comparison"]["baselines"]
    assert (
        rows["router"]["pgr"] == 1.0
        and "apgr" not in rows["router"]
        and "no scores" in rows["router"]["sweep_reason"]
    )
    assert (
        rows["length"]["apgr"] is not None
    )  # the length baseline always has a score: the prompt length


def test_labels_map_to_the_weakest_sufficient_tier() -> None:
    order = tiers_by_strength(stack(STACK.replace("traffic:", "largest_tier: large\ntraffic:")))
    assert order == ["small", "large"]
    assert [
        sufficient_rank(x, ["a", "b", "c"]) for x in ("simple", "complex", "b", "other", None)
    ] == [0, 2, 1, None, None]


def test_overhead_percentiles_and_router_price() -> None:
    config = stack(
        STACK
        + "router:\n  kind: complexity\n  thresholds: [{max_score: 5, tier: small}]\n  default_tier: large\n"
        "  exemplars: {simple: [a], complex: [b]}\n  pricing: {instance_hour_usd: 3.6}\n"
    )
    run = RoutingRun(
        "complexity", "r", (0, 10), RouterOverhead([0.01] * 99 + [0.5], "measured", "probes")
    )
    records = [record(0, "small", 1.0, "simple", 10, monthly=1000.0)]
    ov = router_overhead(records, config, run)
    # one percentile definition (costguard.model.stats): linear between ranks, as vllm bench does
    assert ov["p50_s"] == 0.01 and ov["p99_s"] == pytest.approx(0.0149) and ov["samples"] == 100
    assert ov["mean_s"] == pytest.approx((0.99 + 0.5) / 100)
    assert ov["cost_per_request_usd"] == pytest.approx(3.6 / 3600 * ov["mean_s"])
    assert (
        ov["cost_per_month"] == pytest.approx(1000 * ov["cost_per_request_usd"])
        and ov["cost_estimated"] is True
    )


# -- policy metrics --------------------------------------------------------------------------------


def test_routing_policy_metrics(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml",
        """\
        rules:
          escalation: {metric: escalation_rate, max: 0.3}
          strong_max: {metric: strong_tier_share, max: 0.2}
          strong_min: {metric: strong_tier_share, min: 0.05}
          overhead: {metric: router_overhead_p99, max: 0.05, level: warn}
          apgr: {metric: routing_apgr, min: 0.6}
          pgr: {metric: routing_pgr, min: 0.5}
        """,
    )
    config = stack()
    records = [record(0, "large", 9.0, "complex", 10), record(1, "small", 1.0, "simple", 500)]
    run = RoutingRun("complexity", "r", (0, 10), RouterOverhead([0.2], "measured", "m"))
    routing = routing_details(records, config, run)
    routing.update(
        escalation_rate=0.4, escalation_estimated=True, escalation={"method": "logistic fit"}
    )
    timing = {"router_overhead": router_overhead(records, config, run)}
    report = RunReport(
        {
            "complete": True,
            "routing": routing,
            "timing": timing,
            "totals": {},
            "tiers": {},
            "suites": {},
            "records": [],
        }
    )
    verdicts = {v.rule: v for v in evaluate(load_policy(policy), MetricContext(report)).verdicts}
    assert verdicts["escalation"].status == "fail" and verdicts["escalation"].estimated
    assert "logistic fit" in verdicts["escalation"].message
    assert verdicts["strong_max"].status == "fail" and verdicts["strong_min"].status == "pass"
    assert verdicts["overhead"].status == "warn" and "200.0 ms" in verdicts["overhead"].message
    assert verdicts["apgr"].status == "pass" and verdicts["pgr"].status == "pass"
    timing = {"router_overhead": {"p99_s": None, "method": "the model was not loaded"}}
    report = RunReport(
        {
            "complete": True,
            "routing": routing,
            "timing": timing,
            "totals": {},
            "tiers": {},
            "suites": {},
            "records": [],
        }
    )
    skipped = {v.rule: v for v in evaluate(load_policy(policy), MetricContext(report)).verdicts}[
        "overhead"
    ]
    assert skipped.status == "skip" and "not loaded" in skipped.message


def test_policy_rejects_selectors_routing_metrics_do_not_take(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml", "rules:\n  x: {metric: strong_tier_share, tier: large, max: 0.2}\n"
    )
    with pytest.raises(ConfigError, match="takes no 'tier'"):
        load_policy(policy)
    assert Rule(metric="escalation_rate", max=0.3).max == 0.3


# -- config schema --------------------------------------------------------------------------------

ROUTER = """\
router:
  kind: complexity
  thresholds:
    - {max_score: 4, tier: small}
  default_tier: large
  exemplars:
    simple: [What are your hours?]
    complex: [Prove the algorithm terminates.]
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("simple: [What are your hours?]", "small: [What are your hours?]", "not a mix"),
        ("{max_score: 4, tier: small}", "{max_score: 4, tier: medium}", "unknown tier 'medium'"),
        ("{max_score: 4, tier: small}", "{max_score: 11, tier: small}", "less than or equal to 10"),
        (
            "    - {max_score: 4, tier: small}\n",
            "    - {max_score: 4, tier: small}\n    - {max_score: 2, tier: small}\n",
            "must not decrease",
        ),
        ("complex: [Prove the algorithm terminates.]", "complex: []", "at least one"),
        (
            "default_tier: large",
            "default_tier: large\n  pricing: {instance_hour_usd: 1, per_million_requests_usd: 2}",
            "exactly one of",
        ),
        ("kind: complexity", "kind: complexity\n  top_k: 0", "greater than or equal to 1"),
    ],
)
def test_router_config_errors_name_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    from costguard.model.config import load_stack

    text = STACK + ROUTER
    assert old in text
    path = write(tmp_path / "costguard.yaml", text.replace(old, new))
    with pytest.raises(ConfigError, match=message) as info:
        load_stack(path)
    assert str(info.value).startswith(f"{path}:")


@pytest.mark.parametrize(
    ("cascade", "message"),
    [
        ("{from_tier: small, to_tier: small, threshold: 0.5}", "must differ"),
        ("{from_tier: small, to_tier: huge, threshold: 0.5}", "unknown tier 'huge'"),
        ("{from_tier: small, to_tier: large, threshold: 1.5}", "less than or equal to 1"),
        ("{from_tier: small, to_tier: large, threshold: 0.5, estimate: guess}", "router_score"),
    ],
)
def test_cascade_config_errors(tmp_path: Path, cascade: str, message: str) -> None:
    from costguard.model.config import load_stack

    path = write(tmp_path / "costguard.yaml", STACK + f"cascade: {cascade}\n")
    with pytest.raises(ConfigError, match=message):
        load_stack(path)


# -- router overhead: measured with the model loaded, stored for warm runs ----------------------


class FakeEmbedder:
    """Stands in for Embedder where only the overhead bookkeeping is under test."""

    model_id = "fake@0"
    precision = "float32"

    def __init__(self, loaded: bool) -> None:
        self._model = object() if loaded else None
        self.encoded = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([unit(1.0, float(len(t) % 3)) for t in texts])

    def encode_uncached(self, texts: list[str]) -> np.ndarray:
        self.encoded += len(texts)
        return self.embed(texts)


def test_overhead_is_measured_when_the_model_is_loaded_and_stored_for_warm_runs(
    tmp_path: Path,
) -> None:
    from costguard.engine.routing.complexity import ComplexityRouter
    from costguard.engine.routing.router import RouteInput, measure_overhead
    from costguard.model.config import ComplexityRouterConfig

    config = ComplexityRouterConfig.model_validate(
        {
            "kind": "complexity",
            "thresholds": [{"max_score": 5, "tier": "small"}],
            "default_tier": "large",
            "exemplars": {"simple": ["hi"], "complex": ["prove it"]},
        }
    )
    probes = [
        RouteInput(
            Fixture(
                f"f{i}",
                "s",
                1.0,
                [{"role": "user", "content": "x" * i}],
                Sampling(),
                Expect(),
                "f",
                1,
            ),
            0,
        )
        for i in range(1, 11)
    ]
    store = tmp_path / "router-overhead"
    assert (
        measure_overhead(
            ComplexityRouter(config, FakeEmbedder(False), overhead_dir=store), probes
        ).source
        == "not_measured"
    )  # type: ignore[arg-type]
    cold = FakeEmbedder(True)
    measured = measure_overhead(ComplexityRouter(config, cold, overhead_dir=store), probes)  # type: ignore[arg-type]
    assert (
        measured is not None
        and measured.source == "measured"
        and len(measured.samples_s) == 10 == len(measured.cpu_samples_s)
        and cold.encoded == 10 * OVERHEAD_REPEATS  # each probe timed repeatedly, min kept
    )
    assert (
        measured.conditions["cpus"] == os.cpu_count() and "load_average_1m" in measured.conditions
    )
    warm = FakeEmbedder(False)
    stored = measure_overhead(ComplexityRouter(config, warm, overhead_dir=store), probes)  # type: ignore[arg-type]
    assert (
        stored is not None and stored.source == "stored" and stored.samples_s == measured.samples_s
    )
    assert warm.encoded == 0 and "measured earlier" in stored.method
    assert "not under this run's conditions" in stored.method
    assert stored.cpu_samples_s == measured.cpu_samples_s and stored.conditions
    # a figure stored under other conditions (another CPU count) is not reused at all
    for path in store.glob("*.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "cpus": (os.cpu_count() or 1) + 6}))
    other = measure_overhead(
        ComplexityRouter(config, FakeEmbedder(False), overhead_dir=store), probes
    )  # type: ignore[arg-type]
    assert other is not None and other.source == "not_measured"
    assert "other conditions" in other.method


def test_route_alternatives_share_their_tier_names() -> None:
    a = RouteAlternatives.of(10, {"small": 1.0, "large": 2.0}, False)
    b = RouteAlternatives.of(20, {"small": 3.0, "large": 4.0}, True)
    assert a.tiers is b.tiers and a.tier_cost_usd == {"small": 1.0, "large": 2.0}
    assert b.cost_on("large") == 4.0 and b.costs == (3.0, 4.0)
    with pytest.raises(KeyError):
        a.cost_on("medium")
