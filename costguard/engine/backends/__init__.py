"""Tier backends: who answers a planned model call.

- offline: the embedded default; exact token counts, output tokens from recorded responses,
  the fixture's expectation or the suite's prior (labelled estimated); no GPU, no network.
- endpoint / vllm: live OpenAI-compatible servers (measured numbers).

All backends take the same planned calls and return the same results; routing, caching and
pricing stay in the pipeline so every backend goes through one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from costguard.model.config import TierConfig
from costguard.model.fixtures import Fixture


@dataclass(slots=True)
class PlannedCall:
    arrival_index: int
    fixture: Fixture
    tier: TierConfig
    stage: str  # "primary" | "escalation" | "counterfactual"
    prompt_tokens: int
    input_source: str  # "exact" | "approximate"
    prompt_ids: Sequence[int] | None = None
    answered_by: str | None = (
        None  # "exact" | "semantic": a result cache answers; never sent to a tier
    )


@dataclass(slots=True)
class CallResult:
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    input_source: str
    cached_source: str
    output_source: str
    latency_s: float | None = None
    latency_source: str | None = None
    confidence: float | None = None
    text: str | None = None
    response_ref: str | None = None
    tier: str | None = (
        None  # the tier that served it, when an external router chose (else the planned tier)
    )


class Backend(Protocol):
    name: str
    incomplete_reason: str | None

    def execute(self, calls: Sequence[PlannedCall]) -> list[CallResult | None]:
        """Serve the calls in arrival order (live backends may overlap them).

        A live backend that stops early (Ctrl-C, a request failing after its retries) returns
        None for every call it has no reply for and says why in `incomplete_reason`; a result is
        never made up.
        """
        ...
