"""Scorers: one quality assertion held against one response.

`checks.py` holds the deterministic checks (equals, contains, icontains, not_contains, regex,
json with an optional JSON Schema, max_output_tokens); `similarity.py` the embedding cosine to a
reference answer; `judge.py` the rubric scored by a tier; `custom.py` user scorers by dotted path.
`costguard.engine.quality.assess` runs them over a run's responses and combines the results per fixture.

An assertion either measures something (`measured=True`, with `passed` and a `score` in 0..1)
or says why it could not (`measured=False`): a missing judge reply is never turned into a score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costguard.model.fixtures import Assertion, Fixture


@dataclass(frozen=True)
class Response:
    """A tier's answer to a fixture: its text and, when measured, its output tokens."""

    fixture: Fixture
    text: str
    output_tokens: int | None = None  # None: not measured (never an estimate here)
    tier: str | None = None
    ref: str | None = None  # the recorded-response key it came from, if any


@dataclass(slots=True)
class AssertionScore:
    """The outcome of one assertion on one response."""

    type: str
    weight: float
    measured: bool
    message: str
    passed: bool | None = None  # None only when not measured
    score: float | None = None  # 0..1; checks score 1 or 0, judges and custom scorers may grade
    value: float | None = None  # what was compared: a similarity, a judge's score, a token count

    @classmethod
    def check(
        cls, assertion: Assertion, passed: bool, message: str, value: float | None = None
    ) -> AssertionScore:
        """A pass/fail measurement (score 1 or 0)."""
        return cls(
            assertion.type, assertion.weight, True, message, passed, 1.0 if passed else 0.0, value
        )

    @classmethod
    def graded(
        cls,
        assertion: Assertion,
        score: float,
        passed: bool,
        message: str,
        value: float | None = None,
    ) -> AssertionScore:
        """A graded measurement: the score is the grade itself (a judge, a custom scorer)."""
        return cls(
            assertion.type,
            assertion.weight,
            True,
            message,
            passed,
            min(1.0, max(0.0, score)),
            value,
        )

    @classmethod
    def unmeasured(cls, assertion: Assertion, reason: str) -> AssertionScore:
        return cls(assertion.type, assertion.weight, False, reason)

    def to_dict(self) -> dict[str, Any]:
        # Unmeasured assertions carry no `passed`/`score`: readers that default a missing
        # `passed` to true (the pytest plugin) then never report them as failures.
        out: dict[str, Any] = {"type": self.type, "weight": self.weight, "measured": self.measured}
        if self.measured:
            out["passed"] = self.passed
            out["score"] = self.score if self.score in (0.0, 1.0) else round(self.score or 0.0, 6)
        if self.value is not None:
            out["value"] = self.value if self.value.is_integer() else round(self.value, 6)
        out["message"] = self.message
        return out


def quoted(text: str, limit: int = 60) -> str:
    """A short, single-line repr of user text for messages."""
    one_line = " ".join(text.split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "…"
    return repr(one_line)
