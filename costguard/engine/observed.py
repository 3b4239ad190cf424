"""Calls observed outside the fixture set (LLM calls in a user's own tests) as RequestRecords.

A test hands costguard an OpenAI request body and the response it got (`observe_response`:
measured usage), or asks costguard to serve one through the configured backend
(`serve_request`: offline, exact prompt tokens and estimated output tokens). Each becomes an
`ObservedCall`, plain data that crosses process boundaries (pytest-xdist workers send theirs to
the controller), and `observed_records` prices them beside the fixtures' records, so the
report's totals, tiers and suites include them. An observed call stands for `per_month`
requests a month: 0 unless the caller says how often it happens (never invented).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from costguard.engine.backends import CallResult, PlannedCall
from costguard.engine.pipeline import price_call
from costguard.engine.records import RequestRecord
from costguard.errors import BackendError, ConfigError, UsageError
from costguard.model.fixtures import Expect, Fixture, Sampling, parse_chat_request
from costguard.model.yamlio import validate

if TYPE_CHECKING:
    from costguard.engine.project import Project

DEFAULT_SUITE = "pytest"


@dataclass
class ObservedCall:
    """One model call a test made (or asked costguard to project), with its token counts and their sources."""

    test: str  # who made it: the pytest node id
    seq: int  # its order among that test's calls
    location: str  # file:line of the call
    kind: (
        str  # "record" (usage from a real response) | "complete" (served by the configured backend)
    )
    suite: str
    tier: str
    route_reason: str
    messages: list[dict[str, Any]]
    sampling: dict[str, Any]
    served: CallResult  # token counts and their sources (what `price_call` prices)
    per_month: float = 0.0
    model: str | None = None
    expected_output_tokens: int | None = field(default=None, repr=False)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None

    @property
    def id(self) -> str:
        return f"{self.test}#{self.seq}"

    def as_fixture(self) -> Fixture:
        """The call as a fixture (content hash, routing input, offline backend input)."""
        file, _, line = self.location.rpartition(":")
        return Fixture(
            id=self.id,
            suite=self.suite,
            weight=1.0,
            messages=self.messages,
            sampling=Sampling(**self.sampling),
            expect=Expect(output_tokens=self.expected_output_tokens),
            file=file or self.location,
            line=int(line) if line.isdigit() else None,
            model=self.model,
            label=f"{self.kind} in {self.test}",
            tools=self.tools,
            tool_choice=self.tool_choice,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObservedCall:
        return cls(**{**data, "served": CallResult(**data["served"])})


def _split_location(location: str) -> tuple[str, int | None]:
    file, _, line = location.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (location, None)


def _check_per_month(per_month: float, location: str) -> float:
    if isinstance(per_month, bool) or not isinstance(per_month, int | float) or per_month < 0:
        file, line = _split_location(location)
        raise UsageError(
            f"per_month must be a number >= 0 (got {per_month!r})", file=file, line=line
        )
    return float(per_month)


def _sampling(sampling: dict[str, Any], location: str) -> dict[str, Any]:
    file, _ = _split_location(location)
    return validate(Sampling, sampling, file=file).as_request_params()


def _tier_for_model(project: Project, models: Sequence[str | None], location: str) -> str:
    """The tier a request/response `model` names (served name, model id or tier name)."""
    for model in models:
        if not model:
            continue
        for tier in project.config.tiers:
            if model in (tier.api_model_name, tier.model, tier.name):
                return tier.name
    file, line = _split_location(location)
    named = " / ".join(repr(m) for m in dict.fromkeys(models) if m)
    tiers = ", ".join(f"{t.name} ({t.api_model_name})" for t in project.config.tiers)
    what = (
        f"{named} matches no tier"
        if named
        else "neither the request nor the response names a model"
    )
    raise UsageError(f"{what} (tiers: {tiers}); pass tier=NAME", file=file, line=line)


def _known_tier(project: Project, tier: str, location: str) -> str:
    names = [t.name for t in project.config.tiers]
    if tier not in names:
        file, line = _split_location(location)
        raise UsageError(f"unknown tier {tier!r} (tiers: {', '.join(names)})", file=file, line=line)
    return tier


def _usage_int(usage: dict[str, Any], key: str, file: str, line: int | None) -> int:
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(
            f"response usage.{key} is missing or not a count (got {value!r}); record() needs the "
            "server's usage (streaming: stream_options.include_usage)",
            file=file,
            line=line,
        )
    return value


def observe_response(
    project: Project,
    request: Any,
    response: Any,
    *,
    test: str,
    seq: int,
    location: str,
    tier: str | None = None,
    suite: str = DEFAULT_SUITE,
    per_month: float = 0.0,
) -> ObservedCall:
    """A real call's request body and response (with `usage`): measured token counts.

    `usage.prompt_tokens` includes cached tokens (`prompt_tokens_details.cached_tokens`, absent
    when nothing was cached), exactly as vLLM and OpenAI report them.
    """
    file, line = _split_location(location)
    parsed = parse_chat_request(request, file=file, line=line)
    messages, sampling, model = parsed.messages, parsed.sampling, parsed.model
    if not isinstance(response, dict) or not isinstance(response.get("usage"), dict):
        raise UsageError(
            "response has no `usage` object (record() needs the server's token usage)",
            file=file,
            line=line,
        )
    usage = response["usage"]
    prompt = _usage_int(usage, "prompt_tokens", file, line)
    completion = _usage_int(usage, "completion_tokens", file, line)
    details = usage.get("prompt_tokens_details") or {}
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    if not isinstance(cached, int) or isinstance(cached, bool) or not 0 <= cached <= prompt:
        raise UsageError(
            f"usage.prompt_tokens_details.cached_tokens must be 0..prompt_tokens (got {cached!r})",
            file=file,
            line=line,
        )
    tier_name = (
        _known_tier(project, tier, location)
        if tier
        else _tier_for_model(project, [model, response.get("model")], location)
    )
    return ObservedCall(
        test=test,
        seq=seq,
        location=location,
        kind="record",
        suite=suite,
        tier=tier_name,
        route_reason="recorded response" if tier is None else "tier given by the test",
        messages=messages,
        sampling=_sampling(sampling, location),
        # No prompt_tokens_details: the server did not say what it cached (unknown, not 0).
        served=CallResult(
            prompt,
            cached,
            completion,
            "measured",
            "measured" if isinstance(usage.get("prompt_tokens_details"), dict) else "unreported",
            "measured",
        ),
        per_month=_check_per_month(per_month, location),
        model=model,
        tools=parsed.tools,
        tool_choice=parsed.tool_choice,
    )


def serve_request(
    project: Project,
    request: dict[str, Any],
    *,
    test: str,
    seq: int,
    location: str,
    backend: str = "offline",
    tier: str | None = None,
    suite: str = DEFAULT_SUITE,
    per_month: float = 0.0,
    expected_output_tokens: int | None = None,
) -> tuple[ObservedCall, CallResult]:
    """Serve a request body through the stack: the router picks the tier unless `tier` is given,
    the configured backend answers (offline: exact prompt tokens, output tokens from
    `expected_output_tokens` or the suite's prior, both labelled estimated)."""
    from costguard.engine.backends.factory import open_backend
    from costguard.engine.routing.factory import build_router
    from costguard.engine.routing.router import RouteInput, router_tokenizer_tier

    file, line = _split_location(location)
    parsed = parse_chat_request(request, file=file, line=line)
    messages, sampling, model = parsed.messages, parsed.sampling, parsed.model
    if expected_output_tokens is not None and (
        isinstance(expected_output_tokens, bool)
        or not isinstance(expected_output_tokens, int)
        or expected_output_tokens < 0
    ):
        raise UsageError(
            f"expected_output_tokens must be a count >= 0 (got {expected_output_tokens!r})",
            file=file,
            line=line,
        )
    call = ObservedCall(
        test=test,
        seq=seq,
        location=location,
        kind="complete",
        suite=suite,
        tier="",
        route_reason="",
        messages=messages,
        sampling=_sampling(sampling, location),
        served=CallResult(0, 0, 0, "", "", ""),
        per_month=_check_per_month(per_month, location),
        model=model,
        expected_output_tokens=expected_output_tokens,
        tools=parsed.tools,
        tool_choice=parsed.tool_choice,
    )
    fixture = call.as_fixture()
    config = project.config
    if tier is not None:
        call.tier, call.route_reason = (
            _known_tier(project, tier, location),
            "tier given by the test",
        )
    else:
        router_tier = router_tokenizer_tier(config)
        counted = project.tokenizer(router_tier).count_chat(messages, tools=parsed.tools)
        decision = build_router(config, project=project).route([RouteInput(fixture, counted)])[0]
        call.tier, call.route_reason = decision.tier, decision.reason
    tokenizer = project.tokenizer(call.tier)
    planned = PlannedCall(
        arrival_index=0,
        fixture=fixture,
        tier=config.tier(call.tier),
        stage="primary",
        prompt_tokens=tokenizer.count_chat(messages, tools=parsed.tools),
        input_source=tokenizer.input_source,
    )
    try:
        with open_backend(project, backend) as tier_backend:
            result = tier_backend.execute([planned])[0]
    except ConfigError as exc:  # e.g. no output-token expectation: say where the call is
        raise UsageError(
            exc.message + " (pass expected_output_tokens=N)", file=file, line=line
        ) from None
    if result is None:  # a live backend that got no reply
        raise BackendError(f"{location}: {tier_backend.incomplete_reason or 'no reply'}")
    call.served = result
    return call, result


def _counterfactual(project: Project, call: ObservedCall) -> CallResult:
    """The same call on the largest tier with no caches: the baseline the report's savings use."""
    largest = project.config.largest.name
    served = call.served
    if call.tier == largest:
        return CallResult(
            served.input_tokens,
            0,
            served.output_tokens,
            served.input_source,
            "none",
            served.output_source,
        )
    tokenizer = project.tokenizer(largest)
    # An output length seen on another tier is only an estimate of this tier's.
    output_source = "expected" if served.output_source == "measured" else served.output_source
    return CallResult(
        input_tokens=tokenizer.count_chat(call.messages, tools=call.tools),
        cached_tokens=0,
        output_tokens=served.output_tokens,
        input_source=tokenizer.input_source,
        cached_source="none",
        output_source=output_source,
    )


def observed_records(
    project: Project, calls: Sequence[ObservedCall], *, first_arrival: int
) -> list[RequestRecord]:
    """Priced records for observed calls, in the order given (callers sort for determinism)."""
    prices = project.prices()
    largest = project.config.largest.name
    records = []
    for i, call in enumerate(calls):
        fixture = call.as_fixture()
        records.append(
            RequestRecord(
                fixture_id=call.id,
                suite=call.suite,
                location=call.location,
                content_hash=fixture.content_hash,
                weight=1.0,
                monthly_requests=call.per_month,
                arrival_index=first_arrival + i,
                route_tier=call.tier,
                route_reason=call.route_reason,
                cache="miss",
                cache_detail="observed in a test (caches not consulted)",
                calls=[price_call(prices[call.tier], call.tier, "primary", call.served)],
                counterfactual=price_call(
                    prices[largest], largest, "counterfactual", _counterfactual(project, call)
                ),
                extra={"source": "pytest", "test": call.test, "kind": call.kind},
            )
        )
    return records
