"""Quality scorers: each assertion type on real responses, weights, unmeasured answers, custom
scorers imported from a project, the judge's request and verdict parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from costguard.engine.backends import CallResult
from costguard.engine.quality.assess import (
    Answer,
    QualityScorer,
    fixture_quality,
    passes_expectations,
    score_response,
)
from costguard.engine.quality.scorers import AssertionScore, Response
from costguard.engine.quality.scorers.checks import run_check
from costguard.engine.quality.scorers.judge import Judge, judge_request, parse_verdict
from costguard.errors import ConfigError
from costguard.model.config import StackConfig
from costguard.model.fixtures import Expect, Fixture, Sampling
from costguard.pytest_plugin.session import quality_failure

CONFIG = StackConfig.model_validate(
    {
        "tiers": [
            {
                "name": "small",
                "model": "m/small",
                "tokenizer": {"hf": "unused"},
                "pricing": {"input_per_mtok": 1, "output_per_mtok": 1},
            },
            {
                "name": "large",
                "model": "m/large",
                "tokenizer": {"hf": "unused"},
                "pricing": {"input_per_mtok": 5, "output_per_mtok": 5},
            },
        ],
        "traffic": {"requests_per_month": 1000},
    }
)


def fixture(*assertions: dict, reference: str | None = None, fid: str = "fx-1") -> Fixture:
    expect = Expect.model_validate({"reference": reference, "assertions": list(assertions)})
    return Fixture(
        id=fid,
        suite="support",
        weight=1.0,
        messages=[{"role": "user", "content": "How do refunds work?"}],
        sampling=Sampling(),
        expect=expect,
        file="fixtures/support.yaml",
        line=7,
    )


def one(assertion: dict, text: str, tokens: int | None = None) -> AssertionScore:
    return run_check(fixture(assertion).expect.assertions[0], text, tokens)


# -- deterministic checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assertion", "text", "passed"),
    [
        ({"equals": "positive"}, "positive\n", True),
        ({"equals": "positive"}, "  positive  ", True),
        ({"equals": "positive"}, "Positive", False),
        ({"equals": "a b"}, "a\n  b", True),
        ({"contains": "30 days"}, "Returns are accepted within 30 days.", True),
        ({"contains": "30 days"}, "Returns are accepted within 30 Days.", False),
        ({"icontains": "full refund"}, "You get a FULL REFUND.", True),
        ({"icontains": "full refund"}, "You get store credit.", False),
        ({"not_contains": "$6.95"}, "Return shipping is free.", True),
        ({"not_contains": "$6.95"}, "Return shipping costs $6.95.", False),
        ({"regex": "^(positive|negative)$"}, "negative", True),
        ({"regex": "^(positive|negative)$"}, "it is negative", False),
        ({"json": True}, '{"order_number": null}', True),
        ({"json": True}, "order_number: null", False),
    ],
)
def test_checks_pass_and_fail_on_the_response_text(
    assertion: dict, text: str, passed: bool
) -> None:
    score = one(assertion, text)
    assert (score.measured, score.passed, score.score) == (True, passed, 1.0 if passed else 0.0)


def test_check_messages_say_what_was_compared() -> None:
    assert one({"contains": "30 days"}, "within a month").message == "does not contain '30 days'"
    assert one({"equals": "positive"}, "neutral").message == "'neutral' is not 'positive'"
    assert "code fence" in one({"json": True}, '```json\n{"a": 1}\n```').message


SCHEMA = {
    "json": {
        "schema": {
            "type": "object",
            "properties": {
                "order_number": {"type": ["string", "null"], "pattern": "^CW-[0-9]{7}$"}
            },
            "required": ["order_number"],
            "additionalProperties": False,
        }
    }
}


def test_json_schema_names_the_failing_field() -> None:
    assert one(SCHEMA, '{"order_number": "CW-4418207"}').passed
    bad = one(SCHEMA, '{"order_number": "4418207"}')
    assert not bad.passed
    assert bad.message.startswith("JSON does not match the schema at order_number:")
    assert "(root)" in one(SCHEMA, '{"order": 1}').message


def test_max_output_tokens_needs_measured_tokens() -> None:
    assert one({"max_output_tokens": 10}, "short", 8).passed
    over = one({"max_output_tokens": 10}, "long", 12)
    assert (over.passed, over.value, over.message) == (False, 12.0, "12 output tokens > 10")
    assert not one({"max_output_tokens": 10}, "short", None).measured  # never an estimated count


# -- a fixture's score ---------------------------------------------------------------------------------


def test_fixture_score_is_the_weighted_mean_of_measured_assertions() -> None:
    fx = fixture({"contains": "refund", "weight": 3}, {"contains": "30 days"})
    q = score_response(fx, "A refund within two weeks.", config=CONFIG, tier="small")
    assert q is not None
    assert (q["measured"], q["complete"], q["passed"], q["score"], q["tier"]) == (
        True,
        True,
        False,
        0.75,
        "small",
    )
    assert [a["passed"] for a in q["assertions"]] == [True, False]
    assert (
        quality_failure(q)
        == "quality: 1 of 2 assertion(s) failed (score 0.75)\n  contains: does not contain '30 days'"
    )


def test_no_response_is_unmeasured_never_scored_from_the_reference() -> None:
    fx = fixture({"contains": "refund"}, reference="A refund within 30 days.")
    q = score_response(
        fx, None, config=CONFIG, tier="small", missing="no recorded response on tier small"
    )
    assert q == {
        "measured": False,
        "complete": False,
        "score": None,
        "reason": "no recorded response on tier small",
        "tier": "small",
        "assertions": [{"type": "contains", "weight": 1.0, "measured": False}],
    }
    assert quality_failure(q) is None


def test_fixture_without_assertions_has_no_quality() -> None:
    assert score_response(fixture(), "anything", config=CONFIG) is None


def test_partially_measured_fixture_fails_only_on_measured_assertions() -> None:
    fx = fixture({"contains": "30 days"}, {"judge": {"rubric": "polite"}})
    scores = [
        run_check(fx.expect.assertions[0], "no"),
        AssertionScore.unmeasured(fx.expect.assertions[1], "no judge"),
    ]
    q = fixture_quality(scores, tier="small")
    assert (q["measured"], q["complete"], q["passed"], q["score"]) == (True, False, False, 0.0)
    assert q["assertions"][1] == {
        "type": "judge",
        "weight": 1.0,
        "measured": False,
        "message": "no judge",
    }
    failure = quality_failure(q)
    assert failure is not None and "judge" not in failure


# -- the semantic cache's wrong-hit check ------------------------------------------------------------------


def test_passes_expectations_uses_the_deterministic_scorers() -> None:
    expect = fixture({"icontains": "store credit"}, {"json": True}, reference="x").expect
    assert passes_expectations(expect, "x") is True  # equal to the reference
    assert passes_expectations(expect, '"store credit"') is True
    assert passes_expectations(expect, "store credit") is False  # not JSON
    assert (
        passes_expectations(fixture({"judge": {"rubric": "r"}}).expect, "y") is None
    )  # nothing could judge
    schema = fixture(SCHEMA).expect
    assert passes_expectations(schema, '{"order_number": "bad"}') is False


# -- preparing a run: bad assertions fail before it starts ----------------------------------------------------


@pytest.mark.parametrize(
    ("assertion", "message"),
    [
        ({"json": False}, "`json: false` checks nothing"),
        ({"json": {"schema": {"type": "nonsense"}}}, "invalid JSON Schema"),
        ({"similar": {"threshold": 0.8}}, "`similar` needs a reference answer"),
        ({"judge": {"rubric": "r", "tier": "huge"}}, "judge tier 'huge' is not in the stack"),
        (
            {"custom": "nowhere.module:score"},
            "custom scorer nowhere.module:score: cannot import 'nowhere.module'",
        ),
    ],
)
def test_prepare_rejects_assertions_that_cannot_be_scored(
    tmp_path: Path, assertion: dict, message: str
) -> None:
    scorer = QualityScorer(CONFIG, root=tmp_path)
    with pytest.raises(ConfigError) as err:
        scorer.prepare([fixture(assertion)])
    assert message in str(err.value)
    assert str(err.value).startswith("fixtures/support.yaml:7: expect.assertions[0]")


# -- custom scorers ---------------------------------------------------------------------------------------


CUSTOM = """
def polite(response):
    return "please" in response.text.lower()

def graded(response):
    return {"passed": len(response.text) < 20, "score": 0.4, "message": f"{len(response.text)} chars on {response.tier}"}

def explained(response):
    return False, "mentions no order number"

def number(response):
    return 0.6

def broken(response):
    raise KeyError("order")
"""


@pytest.fixture
def custom_project(tmp_path: Path) -> Path:
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "__init__.py").write_text("")
    (tmp_path / "checks" / "support_quality.py").write_text(CUSTOM)
    return tmp_path


def test_custom_scorers_are_imported_from_the_project_root(custom_project: Path) -> None:
    scorer = QualityScorer(CONFIG, root=custom_project)
    fx = fixture(
        {"custom": "checks.support_quality:polite"},
        {"custom": "checks.support_quality.graded", "weight": 2},
        {"custom": "checks.support_quality:explained"},
    )
    scorer.prepare([fx])
    q = score_response(fx, "Please wait.", scorer=scorer, tier="large")
    assert q is not None
    assert [(a["passed"], a["score"]) for a in q["assertions"]] == [
        (True, 1.0),
        (True, 0.4),
        (False, 0.0),
    ]
    assert q["assertions"][1]["message"] == "checks.support_quality.graded: 12 chars on large"
    assert (
        q["assertions"][2]["message"]
        == "checks.support_quality:explained: mentions no order number"
    )
    assert q["score"] == pytest.approx((1.0 + 2 * 0.4 + 0.0) / 4)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("number", "a bare number is ambiguous"),
        ("broken", "raised KeyError: 'order'"),
    ],
)
def test_custom_scorer_misbehaving_stops_the_run(
    custom_project: Path, name: str, message: str
) -> None:
    scorer = QualityScorer(CONFIG, root=custom_project)
    with pytest.raises(ConfigError) as err:
        score_response(fixture({"custom": f"checks.support_quality:{name}"}), "text", scorer=scorer)
    assert message in str(err.value)
    assert str(err.value).startswith("fixtures/support.yaml:7:")


# -- the judge ----------------------------------------------------------------------------------------------


class RecordedJudgeReplies:
    """A backend double answering judge requests from a table of replies keyed by the request."""

    def __init__(self, replies: dict[str, str], name: str = "offline") -> None:
        self.replies = replies
        self.name = name
        self.calls: list = []

    def execute(self, calls):  # noqa: ANN001, ANN201 - the Backend protocol
        self.calls.extend(calls)
        return [
            CallResult(
                c.prompt_tokens,
                0,
                10,
                c.input_source,
                "none",
                "measured",
                text=self.replies.get(c.fixture.content_hash),
            )
            for c in calls
        ]


def judged(
    reply: str | None, *, min_score: float = 0.7, name: str = "offline"
) -> tuple[dict, RecordedJudgeReplies]:
    fx = fixture(
        {"judge": {"rubric": "Explains the 30-day window", "min_score": min_score}},
        reference="30 days.",
    )
    answer = "Refunds within 30 days."
    replies = {} if reply is None else {judge_request(fx, 0, answer).content_hash: reply}
    backend = RecordedJudgeReplies(replies, name)
    judge = Judge(
        CONFIG,
        backend,
        lambda tier, messages: (sum(len(m["content"]) for m in messages) // 4, "approximate"),
    )
    q = score_response(
        fx, answer, scorer=QualityScorer(CONFIG, root=Path.cwd(), judge=judge), tier="small"
    )
    assert q is not None
    return q, backend


def test_judge_request_goes_to_the_largest_tier_with_rubric_answer_and_reference() -> None:
    q, backend = judged('{"score": 0.9, "reason": "Clear."}')
    (call,) = backend.calls
    assert (call.tier.name, call.stage, call.fixture.sampling.temperature) == (
        "large",
        "judge",
        0.0,
    )
    prompt = call.fixture.messages[1]["content"]
    for part in (
        "How do refunds work?",
        "30 days.",
        "Refunds within 30 days.",
        "Explains the 30-day window",
    ):
        assert part in prompt
    assert q["assertions"][0] == {
        "type": "judge",
        "weight": 1.0,
        "measured": True,
        "passed": True,
        "score": 0.9,
        "value": 0.9,
        "message": "judge (large) scored 0.90 >= 0.7: Clear.",
    }


def test_judge_request_changes_with_the_answer() -> None:
    fx = fixture({"judge": {"rubric": "r"}})
    assert judge_request(fx, 0, "a").content_hash == judge_request(fx, 0, "a").content_hash
    assert judge_request(fx, 0, "a").content_hash != judge_request(fx, 0, "b").content_hash


def test_judge_score_below_min_score_fails_with_its_grade() -> None:
    q, _ = judged('Sure! {"score": 0.5, "reason": "Vague."}', min_score=0.7)
    assert (q["passed"], q["score"]) == (False, 0.5)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (None, "no recorded judge reply from tier large (record one with a live backend)"),
        ("I think it is good", "judge tier large: no JSON object with a score"),
        ('{"score": 7}', "judge tier large: judge score 7 is not a number from 0 to 1"),
    ],
)
def test_judge_without_a_usable_reply_is_unmeasured(reply: str | None, reason: str) -> None:
    q, _ = judged(reply)
    assert (q["measured"], q["score"]) == (False, None)
    assert q["reason"].startswith(reason)


def test_live_judge_without_reply_says_the_tier_gave_none() -> None:
    q, _ = judged(None, name="endpoint")
    assert q["reason"] == "the judge tier large gave no reply"


def test_parse_verdict_accepts_a_numeric_string() -> None:
    assert parse_verdict('{"score": "0.25"}') == (0.25, "")


def test_response_carries_what_custom_scorers_read() -> None:
    fx = fixture()
    r = Response(fx, "text", 3, "small")
    assert (r.text, r.output_tokens, r.tier, r.fixture.id) == ("text", 3, "small", "fx-1")


def test_answers_without_a_response_keep_the_reason() -> None:
    fx = fixture({"contains": "x"})
    (q,) = QualityScorer(CONFIG, root=Path.cwd()).score_many(
        [Answer(fx, None, "large", "tier large returned no text")]
    )
    assert q is not None and q["reason"] == "tier large returned no text"


# -- similar (the real MiniLM embedder) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():  # noqa: ANN201
    from costguard.text.embeddings import Embedder, EmbeddingCache

    return Embedder(cache=EmbeddingCache.memory())


def test_similar_compares_the_answer_with_the_reference(embedder) -> None:  # noqa: ANN001
    scorer = QualityScorer(CONFIG, root=Path.cwd(), embedder=lambda: embedder)
    fx = fixture(
        {"similar": {"threshold": 0.7}},
        {"similar": {"threshold": 0.7, "reference": "Paris is the capital of France."}},
        reference="Refunds reach your card within 5-7 business days after we inspect the return.",
    )
    q = score_response(
        fx,
        "After we inspect your return, the refund arrives on your card in 5-7 business days.",
        scorer=scorer,
    )
    assert q is not None
    first, second = q["assertions"]
    assert first["passed"] and first["value"] > 0.8
    assert not second["passed"] and second["value"] < 0.3
    assert second["message"].startswith(f"similarity {second['value']:.3f} to the reference < 0.7")
    assert q["score"] == 0.5
