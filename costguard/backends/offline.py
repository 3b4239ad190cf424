"""The offline projection backend: no GPU, no server, no network."""

from __future__ import annotations

from collections.abc import Sequence

from costguard.backends import CallResult, PlannedCall
from costguard.config import StackConfig
from costguard.errors import ConfigError
from costguard.fixtures import Fixture


class OfflineBackend:
    """Projects each call: prompt tokens counted exactly upstream, output tokens estimated.

    Output tokens come from, in order: a recorded response for this request and tier (measured),
    the fixture's `expect.output_tokens` ("expected", an estimate), or the suite's
    `output_tokens_prior` ("prior", an estimate).
    """

    name = "offline"

    def __init__(self, config: StackConfig) -> None:
        self.config = config

    def output_tokens(self, call: PlannedCall) -> tuple[int, str]:
        return self.output_tokens_for(call.fixture)

    def output_tokens_for(self, fx: Fixture) -> tuple[int, str]:
        """(output tokens, source) for a fixture on any tier, capped by its max_tokens."""
        output, source = self._uncapped(fx)
        if fx.sampling.max_tokens is not None:
            output = min(output, fx.sampling.max_tokens)
        return output, source

    def _uncapped(self, fx: Fixture) -> tuple[int, str]:
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

    def execute(self, calls: Sequence[PlannedCall]) -> list[CallResult]:
        results = []
        for call in calls:
            output, source = self.output_tokens(call)
            results.append(
                CallResult(
                    input_tokens=call.prompt_tokens,
                    cached_tokens=0,
                    output_tokens=output,
                    input_source=call.input_source,
                    cached_source="none",
                    output_source=source,
                )
            )
        return results
