"""`judge`: a rubric scored by a named tier (default: the largest) through the run's backend.

The judge request is an ordinary chat request built from the conversation, the answer, the
rubric and (when the fixture has one) the reference answer, sent to the judge tier at
temperature 0. Because it is an ordinary request, live backends record the judge's reply like
any other reply, and offline runs replay it from the recorded responses (keyed by the request,
so a changed answer or rubric needs a new judgement). Offline with no recorded judge reply, the
assertion is unmeasured: a judgement is never made up.

The judge answers `{"score": 0..1, "reason": "..."}`; the assertion passes at `min_score`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from costguard.engine.backends import Backend, PlannedCall
from costguard.engine.quality.scorers import AssertionScore, Response, quoted
from costguard.engine.recordings import JUDGE_MARK, RecordingStore, recording_key
from costguard.model.config import StackConfig
from costguard.model.fixtures import Assertion, Expect, Fixture, Sampling

JUDGE_SAMPLING = Sampling(temperature=0.0, max_tokens=256, seed=0)
JUDGE_OUTPUT_TOKENS = 64  # what an offline projection of a judge call would assume (never billed)

JUDGE_SYSTEM = (
    "You grade the answers of an AI assistant. You are given the conversation the assistant "
    "answered, its answer, a rubric and possibly a reference answer. Judge the answer only "
    "against the rubric. Reply with one JSON object and nothing else: "
    '{"score": S, "reason": "one sentence"} where S is a number from 0 (does not meet the '
    "rubric at all) to 1 (fully meets it)."
)

# Counts prompt tokens of `messages` on a tier: (count, "exact" | "approximate").
PromptCounter = Callable[[str, list[dict[str, Any]]], tuple[int, str]]


def judge_messages(fixture: Fixture, assertion: Assertion, answer: str) -> list[dict[str, Any]]:
    check = assertion.judge
    assert check is not None
    conversation = "\n".join(f"[{m['role']}] {m.get('content') or ''}" for m in fixture.messages)
    parts = [f"## Conversation\n{conversation}"]
    if fixture.expect.reference is not None:
        parts.append(f"## Reference answer\n{fixture.expect.reference}")
    parts.append(f"## Answer to grade\n{answer}")
    parts.append(f"## Rubric\n{check.rubric}")
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def judge_request(fixture: Fixture, index: int, answer: str) -> Fixture:
    """The judge request for assertion `index` of `fixture` on `answer`, as a fixture to serve."""
    assertion = fixture.expect.assertions[index]
    return Fixture(
        id=f"{fixture.id}{JUDGE_MARK}{index}",
        suite=fixture.suite,
        weight=fixture.weight,
        messages=judge_messages(fixture, assertion, answer),
        sampling=JUDGE_SAMPLING,
        expect=Expect(output_tokens=JUDGE_OUTPUT_TOKENS),
        file=fixture.file,
        line=fixture.line,
        label="judge",
    )


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_verdict(text: str) -> tuple[float, str]:
    """(score, reason) from a judge reply; ValueError when it holds no score in 0..1."""
    stripped = text.strip()
    data: Any = None
    for candidate in (stripped, *(m.group(0) for m in [_OBJECT.search(stripped)] if m)):
        try:
            data = json.loads(candidate)
            break
        except ValueError:
            continue
    if not isinstance(data, dict) or "score" not in data:
        raise ValueError(f"no JSON object with a score in the judge reply {quoted(text)}")
    score = data["score"]
    if isinstance(score, str):
        try:
            score = float(score)
        except ValueError:
            raise ValueError(f"judge score {score!r} is not a number") from None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise ValueError(f"judge score {score!r} is not a number from 0 to 1")
    return float(score), str(data.get("reason") or "").strip()


class Judge:
    """Scores `judge` assertions by serving judge requests through the run's backend, in one batch."""

    def __init__(self, config: StackConfig, backend: Backend, count_prompt: PromptCounter) -> None:
        self.config = config
        self._run_backend = backend
        self._backend: Backend | None = None
        self.count_prompt = count_prompt
        self.live = getattr(backend, "name", "offline") != "offline"
        self.failure: str | None = (
            None  # why the judge backend could not serve (shown as the reason)
        )

    @property
    def backend(self) -> Backend:
        """The run's backend for evaluation requests (`for_evaluation()`, when it has one)."""
        if self._backend is None:
            evaluation = getattr(self._run_backend, "for_evaluation", None)
            self._backend = evaluation() if evaluation is not None else self._run_backend
        return self._backend

    def tier_of(self, assertion: Assertion) -> str:
        assert assertion.judge is not None
        return assertion.judge.tier or self.config.largest.name

    def _serve(self, calls: list[PlannedCall]) -> list[Any]:
        """Judge replies (None where there is none): a judge tier without an endpoint, or a
        failing server, leaves its assertions unmeasured instead of stopping the run."""
        from costguard.errors import CostguardError

        if not calls:
            return []
        try:
            return list(self.backend.execute(calls))
        except CostguardError as exc:
            self.failure = str(exc)
            return [None] * len(calls)

    def score(self, items: Sequence[tuple[int, Response]]) -> list[AssertionScore]:
        """Score (assertion index, response) pairs; the assertion is response.fixture's."""
        calls = []
        for index, response in items:
            fx = response.fixture
            assertion = fx.expect.assertions[index]
            request = judge_request(fx, index, response.text)
            tier = self.config.tier(self.tier_of(assertion))
            tokens, source = self.count_prompt(tier.name, request.messages)
            calls.append(
                PlannedCall(
                    arrival_index=-1,
                    fixture=request,
                    tier=tier,
                    stage="judge",
                    prompt_tokens=tokens,
                    input_source=source,
                )
            )
        results = self._serve(calls)
        out = []
        for (index, response), call, result in zip(items, calls, results, strict=True):
            assertion = response.fixture.expect.assertions[index]
            tier = call.tier.name
            text = getattr(result, "text", None)
            if text is None:
                if self.failure:
                    reason = f"the judge tier {tier} could not be asked: {self.failure}"
                elif self.live:
                    reason = f"the judge tier {tier} gave no reply"
                else:
                    reason = (
                        f"no recorded judge reply from tier {tier} (record one with a live backend)"
                    )
                out.append(AssertionScore.unmeasured(assertion, reason))
                continue
            try:
                score, why = parse_verdict(text)
            except ValueError as exc:
                out.append(AssertionScore.unmeasured(assertion, f"judge tier {tier}: {exc}"))
                continue
            check = assertion.judge
            assert check is not None
            ok = score >= check.min_score
            message = f"judge ({tier}) scored {score:.2f} {'>=' if ok else '<'} {check.min_score:g}"
            out.append(
                AssertionScore.graded(
                    assertion, score, ok, f"{message}: {why}" if why else message, score
                )
            )
        return out


def recorded_judge_keys(
    fixtures: Sequence[Fixture], config: StackConfig, store: RecordingStore
) -> dict[str, str]:
    """Recording keys of the judge requests that the recorded answers need (key -> judge tier).

    For every fixture with judge assertions and every tier with a recorded answer to it, the
    judge request on that answer: these judge replies are current; others judged an answer or a
    rubric that changed since.
    """
    tiers = {t.name: t for t in config.tiers}
    out: dict[str, str] = {}
    for fx in fixtures:
        judged = [i for i, a in enumerate(fx.expect.assertions) if a.judge is not None]
        if not judged:
            continue
        for tier in config.tiers:
            rec = store.get(fx, tier)
            if rec is None:
                continue
            for i in judged:
                check = fx.expect.assertions[i].judge
                judge_tier = tiers.get(
                    (check.tier if check is not None else None) or config.largest.name
                )
                if judge_tier is not None:
                    out[recording_key(judge_request(fx, i, rec.text), judge_tier.model)] = (
                        judge_tier.name
                    )
    return out
