"""Calls observed in tests: measured usage, projected calls, pricing, counterfactuals, and the
quality contract that fixture items read from the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costguard import api
from costguard.engine.observed import (
    ObservedCall,
    observe_response,
    observed_records,
    serve_request,
)
from costguard.errors import ConfigError, UsageError
from costguard.pytest_plugin.session import fixture_item, quality_failure

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarise ticket 7"},
]
WHERE = {"test": "tests/test_app.py::test_summary", "seq": 0, "location": "tests/test_app.py:12"}


@pytest.fixture
def project(project_dir: Path) -> api.Project:
    return api.load_project(project_dir / "costguard.yaml")


def gpu_cost(input_tokens: int, output_tokens: int) -> float:
    """The large tier of the test stack: $3/GPU-h x 4 GPUs, 20k prefill / 2k decode tok/s, 50% utilisation."""
    return 3.0 * 4 / 3600 * (input_tokens / 20000 + output_tokens / 2000) / 0.5


def test_recorded_usage_is_measured_and_cached_tokens_are_billed_once(project: api.Project) -> None:
    response = {
        "model": "test/small-8b",
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 16},
        },
    }
    call = observe_response(
        project,
        {"model": "test/small-8b", "messages": MESSAGES, "temperature": 0},
        response,
        per_month=1000,
        **WHERE,
    )
    assert (call.tier, call.route_reason) == ("small", "recorded response")
    assert call.sampling == {"temperature": 0}
    [record] = observed_records(project, [call], first_arrival=4)
    served = record.calls[0]
    assert (served.input_source, served.cached_source, served.output_source) == (
        "measured",
        "measured",
        "measured",
    )
    assert record.cost_usd == pytest.approx((34 * 0.10 + 16 * 0.05 + 20 * 0.40) / 1e6)
    assert not record.estimated
    assert (record.fixture_id, record.location, record.monthly_requests, record.arrival_index) == (
        "tests/test_app.py::test_summary#0",
        "tests/test_app.py:12",
        1000,
        4,
    )
    assert record.extra == {
        "source": "pytest",
        "test": "tests/test_app.py::test_summary",
        "kind": "record",
    }

    # The counterfactual counts the prompt with the largest tier's tokenizer; the output length seen
    # on another tier is only an estimate there.
    cf = record.counterfactual
    assert cf is not None and cf.tier == "large"
    n_large = project.tokenizer("large").count_chat(MESSAGES)
    assert (cf.input_tokens, cf.cached_tokens, cf.output_tokens) == (n_large, 0, 20)
    assert (cf.input_source, cf.output_source) == ("exact", "expected")
    assert cf.cost_usd == pytest.approx(gpu_cost(n_large, 20))


def test_tier_comes_from_the_response_model_or_the_caller(project: api.Project) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 3}
    call = observe_response(
        project, {"messages": MESSAGES}, {"model": "test/large-70b", "usage": usage}, **WHERE
    )
    assert call.tier == "large"
    call = observe_response(
        project, {"messages": MESSAGES}, {"usage": usage}, tier="small", **WHERE
    )
    assert (call.tier, call.route_reason) == ("small", "tier given by the test")
    with pytest.raises(
        UsageError, match=r"^tests/test_app.py:12: unknown tier 'medium' \(tiers: small, large\)$"
    ):
        observe_response(project, {"messages": MESSAGES}, {"usage": usage}, tier="medium", **WHERE)
    with pytest.raises(UsageError, match="neither the request nor the response names a model"):
        observe_response(project, {"messages": MESSAGES}, {"usage": usage}, **WHERE)


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        ({"prompt_tokens": 9}, "usage.completion_tokens is missing"),
        (
            {"prompt_tokens": True, "completion_tokens": 1},
            "usage.prompt_tokens is missing or not a count",
        ),
        (
            {
                "prompt_tokens": 9,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 10},
            },
            "cached_tokens must be 0..prompt_tokens",
        ),
    ],
)
def test_bad_usage_is_one_line_error(project: api.Project, usage: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        observe_response(
            project, {"messages": MESSAGES}, {"model": "test/small-8b", "usage": usage}, **WHERE
        )
    assert str(info.value).startswith("tests/test_app.py:12: ") and "\n" not in str(info.value)


def test_bad_request_body_names_the_call_site(project: api.Project) -> None:
    with pytest.raises(UsageError, match=r"^tests/test_app.py:12: per_month must be a number >= 0"):
        observe_response(
            project,
            {"messages": MESSAGES},
            {"model": "test/small-8b", "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
            per_month=-1,
            **WHERE,
        )
    with pytest.raises(
        ConfigError, match=r"tests/test_app.py:12: messages: no chat `messages` list"
    ):
        serve_request(project, {"messages": []}, **WHERE)


def test_served_request_is_routed_and_its_output_labelled_estimated(project: api.Project) -> None:
    call, result = serve_request(
        project, {"messages": MESSAGES}, suite="coding", expected_output_tokens=300, **WHERE
    )
    assert (call.tier, call.route_reason) == (
        "large",
        "rule 1",
    )  # the rules router: suite coding -> large
    assert call.served is result and result.input_tokens == project.tokenizer("large").count_chat(
        MESSAGES
    )
    assert (result.input_source, result.output_tokens, result.output_source) == (
        "exact",
        300,
        "expected",
    )
    assert result.text is None  # offline: no response text is invented

    call, _ = serve_request(
        project, {"messages": MESSAGES, "max_tokens": 40}, suite="support", **WHERE
    )
    assert (call.tier, call.served.output_tokens, call.served.output_source) == (
        "small",
        40,
        "prior",
    )  # prior 100, capped
    [record] = observed_records(project, [call], first_arrival=0)
    assert record.estimated and record.calls[0].output_source == "prior"

    with pytest.raises(
        UsageError,
        match=r"^tests/test_app.py:12: .*costguard does not invent output lengths \(pass expected_output_tokens=N\)$",
    ):
        serve_request(project, {"messages": MESSAGES}, **WHERE)  # suite "pytest" declares no prior


def test_observed_call_survives_the_trip_from_a_worker(project: api.Project) -> None:
    call, _ = serve_request(
        project,
        {"messages": MESSAGES},
        tier="small",
        expected_output_tokens=12,
        per_month=5,
        **WHERE,
    )
    again = ObservedCall.from_dict(json.loads(json.dumps(call.to_dict())))
    assert again == call
    assert (
        observed_records(project, [again], first_arrival=0)[0].to_dict()
        == observed_records(project, [call], first_arrival=0)[0].to_dict()
    )


# -- the quality contract for fixture items --------------------------------------------------------


def test_fixture_item_fails_with_the_failed_assertions(project: api.Project) -> None:
    report = api.run(project)
    fx = next(f for f in project.fixtures if f.id == "order-status")
    record = dict(next(r for r in report.records if r["id"] == "order-status"))

    assert fixture_item(fx, record, report).outcome == "pass"
    record["quality"] = {
        "passed": False,
        "score": 0.5,
        "assertions": [
            {"type": "contains", "passed": True, "message": "contains '12345'"},
            {"type": "regex", "passed": False, "message": "no match for 'tracking number'"},
        ],
    }
    spec = fixture_item(fx, record, report)
    assert spec.outcome == "fail"
    assert spec.message == (
        "fixture order-status: quality: 1 of 2 assertion(s) failed (score 0.50)\n  regex: no match for 'tracking number'"
    )
    assert ("quality_score", 0.5) in spec.properties
    assert (
        quality_failure({"measured": False, "passed": False}) is None
    )  # unmeasured: not a failure here
    assert quality_failure({"passed": True, "assertions": []}) is None


def test_fixture_without_a_record_fails_saying_why(project: api.Project) -> None:
    report = api.run(project)
    report.data["complete"], report.data["incomplete_reason"] = (
        False,
        "interrupted after 3 requests",
    )
    spec = fixture_item(project.fixtures[0], None, report)
    assert (spec.outcome, spec.message) == (
        "fail",
        "fixture reset-password: no record in this run (interrupted after 3 requests)",
    )


def test_usage_without_prompt_tokens_details_is_unreported_not_zero_cached(
    project: api.Project,
) -> None:
    response = {"model": "test/small-8b", "usage": {"prompt_tokens": 50, "completion_tokens": 20}}
    call = observe_response(project, {"messages": MESSAGES}, response, **WHERE)
    [record] = observed_records(project, [call], first_arrival=0)
    served = record.calls[0]
    assert (served.cached_tokens, served.cached_source) == (0, "unreported")
