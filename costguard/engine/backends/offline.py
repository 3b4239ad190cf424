"""The offline projection backend: no GPU, no server, no network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from costguard.engine.backends import CallResult, PlannedCall
from costguard.errors import ConfigError
from costguard.model.config import StackConfig
from costguard.model.fixtures import Fixture

if TYPE_CHECKING:
    from costguard.engine.recordings import RecordingStore


class OfflineBackend:
    """Projects each call: prompt tokens counted exactly upstream, output tokens recorded or estimated.

    Output tokens come from, in order: a recorded response for this request and tier (measured),
    the fixture's `expect.output_tokens` ("expected", an estimate), or the suite's
    `output_tokens_prior` ("prior", an estimate).
    """

    name = "offline"
    incomplete_reason: str | None = None

    def __init__(self, config: StackConfig, recordings: RecordingStore | None = None) -> None:
        self.config = config
        self.recordings = recordings
        self.recorded = 0  # calls answered from recorded responses
        self.prompt_mismatches: list[
            tuple[str, str, int, int]
        ] = []  # (fixture, tier, counted, recorded)

    def for_evaluation(self) -> OfflineBackend:
        """A backend for evaluation requests (LLM-judge calls): the same recordings, its own counts,
        so judge replies never count as the run's recorded calls."""
        return OfflineBackend(self.config, self.recordings)

    @property
    def has_recordings(self) -> bool:
        return self.recordings is not None and len(self.recordings) > 0

    def projected_output(self, fixture: Fixture) -> tuple[int, str]:
        """Output tokens of an unrecorded call (the same on every tier): expected or prior,
        capped by the request's max_tokens."""
        output, source = self._estimate(fixture)
        if fixture.sampling.max_tokens is not None:
            output = min(output, fixture.sampling.max_tokens)
        return output, source

    def _estimate(self, fx: Fixture) -> tuple[int, str]:
        if fx.expect.output_tokens is not None:
            return fx.expect.output_tokens, "expected"
        suite = self.config.suites.get(fx.suite)
        if suite is not None and suite.output_tokens_prior is not None:
            return suite.output_tokens_prior, "prior"
        raise ConfigError(
            f"fixture {fx.id!r} has no expect.output_tokens and suite {fx.suite!r} declares no "
            f"output_tokens_prior in costguard.yaml (suites: {{{fx.suite}: {{output_tokens_prior: N}}}}); "
            "costguard does not invent output lengths",
            file=fx.file,
            line=fx.line,
            key="expect.output_tokens",
        )

    def recorded_result(self, call: PlannedCall) -> CallResult | None:
        """The call answered from a recorded response: output tokens, latency and confidence measured.

        Prompt tokens stay the exact count of this run; a recorded count that differs is noted
        (the tokenizer or chat template does not match the server's).
        """
        if self.recordings is None:
            return None
        rec = self.recordings.get(call.fixture, call.tier)
        if rec is None:
            return None
        self.recorded += 1
        if call.input_source == "exact" and rec.prompt_tokens != call.prompt_tokens:
            self.prompt_mismatches.append(
                (call.fixture.id, call.tier.name, call.prompt_tokens, rec.prompt_tokens)
            )
        return CallResult(
            input_tokens=call.prompt_tokens,
            cached_tokens=0,
            output_tokens=rec.completion_tokens,
            input_source=call.input_source,
            cached_source="none",
            output_source="measured",
            latency_s=rec.e2el_s,
            latency_source="measured",
            confidence=rec.confidence,
            text=rec.text,
            response_ref=rec.key,
        )

    def execute(self, calls: Sequence[PlannedCall]) -> list[CallResult | None]:
        results: list[CallResult | None] = []
        recorded_any = self.has_recordings
        for call in calls:
            if recorded_any:
                recorded = self.recorded_result(call)
                if recorded is not None:
                    results.append(recorded)
                    continue
            output, source = self.projected_output(call.fixture)
            # Positional (input, cached and output tokens, then their sources): every request
            # of 100k-request runs is projected twice.
            results.append(
                CallResult(call.prompt_tokens, 0, output, call.input_source, "none", source)
            )
        return results
