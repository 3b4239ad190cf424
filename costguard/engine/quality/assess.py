"""Quality: every fixture's assertions held against the answer it got, per fixture, suite and tier.

The pipeline hands `QualityScorer.score_many` one answer per request (the text the answering
tier returned: live, or replayed from a recorded response), and stores the result in
`record.quality`:

    {"measured": true, "complete": true, "score": 0.75, "passed": false, "tier": "small",
     "assertions": [{"type": "contains", "weight": 1, "measured": true, "passed": true,
                     "score": 1.0, "message": "contains 'refund'"}, ...]}

A fixture's score is the weighted mean of its measured assertions' scores (checks score 1 or 0,
judges and custom scorers may grade); it passes when every measured assertion passes. A
fixture without an answer (offline, nothing recorded) is `measured: false` with the reason, and
is counted as unmeasured: its quality is never guessed, and the fixture's `expect.reference` is
never taken for an answer. `quality_section` sums the records into the report's `quality`
section, weighting fixtures by their requests per month, like every other figure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costguard.engine.quality.scorers import AssertionScore, Response
from costguard.errors import ConfigError
from costguard.model.fixtures import Expect, Fixture

if TYPE_CHECKING:
    from costguard.engine.quality.scorers.judge import Judge
    from costguard.engine.records import RequestRecord
    from costguard.model.config import StackConfig

__all__ = [
    "Answer",
    "QualityScorer",
    "Response",
    "fixture_quality",
    "passes_expectations",
    "quality_section",
    "score_response",
]


@dataclass(frozen=True)
class Answer:
    """What a request got: a response to score, or why there is none."""

    fixture: Fixture
    response: Response | None
    tier: str | None = None
    missing: str | None = None  # why there is no response (reported for unmeasured fixtures)


class QualityScorer:
    """Scores a run's answers: deterministic checks at once, `similar` and `judge` in one batch each.

    `embedder`: a factory for the `costguard.text.embeddings.Embedder` used by `similar` (called only
    when a similar assertion has an answer to compare). `judge`: serves judge requests through
    the run's backend; None means judge assertions stay unmeasured.
    """

    def __init__(
        self,
        config: StackConfig,
        *,
        root: Path,
        embedder: Callable[[], Any] | None = None,
        judge: Judge | None = None,
    ) -> None:
        self.config = config
        self.root = root
        self._embedder_factory = embedder
        self._embedder: Any = None
        self.judge = judge
        self._custom: dict[str, Any] = {}

    # -- before the run -------------------------------------------------------------------
    def prepare(self, fixtures: Sequence[Fixture]) -> None:
        """Check every assertion can be scored (custom scorers import, judge tiers exist, similar
        has a reference, schemas are valid) so a bad fixture fails before a long run starts."""
        from costguard.engine.quality.scorers.checks import schema_problem

        tiers = [t.name for t in self.config.tiers]
        for fx in fixtures:
            for i, a in enumerate(fx.expect.assertions):
                key = f"expect.assertions[{i}].{a.type}"

                def fail(message: str, key: str = key, fx: Fixture = fx) -> ConfigError:
                    return ConfigError(message, file=fx.file, line=fx.line, key=key)

                if a.type == "json":
                    if a.value is False:
                        raise fail(
                            "`json: false` checks nothing: use `json: true` or `json: {schema: ...}`"
                        )
                    schema = getattr(a.value, "schema_", None)
                    problem = schema_problem(schema) if isinstance(schema, dict) else None
                    if problem:
                        raise fail(f"invalid JSON Schema: {problem}")
                elif a.type == "similar":
                    assert a.similar is not None
                    if a.similar.reference is None and fx.expect.reference is None:
                        raise fail(
                            "`similar` needs a reference answer: give `reference:` here or `expect.reference`"
                        )
                elif a.type == "judge":
                    assert a.judge is not None
                    if a.judge.tier is not None and a.judge.tier not in tiers:
                        raise fail(
                            f"judge tier {a.judge.tier!r} is not in the stack (tiers: {', '.join(tiers)})",
                            key=f"{key}.tier",
                        )
                elif a.type == "custom":
                    self._custom_scorer(a.custom or "", fx, key)

    def _custom_scorer(self, path: str, fx: Fixture, key: str = "expect.assertions") -> Any:
        """The custom scorer function for `path`, imported once."""
        from costguard.engine.quality.scorers.custom import load_scorer

        if path not in self._custom:
            try:
                self._custom[path] = load_scorer(path, root=self.root)
            except ValueError as exc:
                raise ConfigError(
                    f"custom scorer {path}: {exc}", file=fx.file, line=fx.line, key=key
                ) from None
        return self._custom[path]

    # -- scoring ----------------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            factory = self._embedder_factory or default_embedder
            self._embedder = factory()
        return self._embedder

    def score_many(self, answers: Sequence[Answer]) -> list[dict[str, Any] | None]:
        """The `record.quality` dict for every answer (None for fixtures without assertions)."""
        from costguard.engine.quality.scorers.checks import CHECKS, run_check
        from costguard.engine.quality.scorers.custom import run_custom
        from costguard.engine.quality.scorers.similarity import score_similar

        slots: list[list[AssertionScore | None] | None] = []
        similar: list[tuple[tuple[int, int], Any, Response]] = []
        judged: list[tuple[int, int, Response]] = []  # (answer, assertion index, response)
        for k, answer in enumerate(answers):
            assertions = answer.fixture.expect.assertions
            response = answer.response
            if not assertions or response is None:
                slots.append(None)
                continue
            row: list[AssertionScore | None] = []
            for i, a in enumerate(assertions):
                if a.type in CHECKS:
                    row.append(run_check(a, response.text, response.output_tokens))
                elif a.type == "similar":
                    similar.append(((k, i), a, response))
                    row.append(None)
                elif a.type == "judge":
                    if self.judge is None:
                        row.append(AssertionScore.unmeasured(a, "no judge backend in this run"))
                    else:
                        judged.append((k, i, response))
                        row.append(None)
                else:
                    row.append(
                        run_custom(self._custom_scorer(a.custom or "", answer.fixture), a, response)
                    )
            slots.append(row)
        if similar:
            for ((k, i), _, _), score in zip(
                similar, score_similar([(a, r) for _, a, r in similar], self.embedder), strict=True
            ):
                slots[k][i] = score  # type: ignore[index]
        if judged:
            assert self.judge is not None
            for (k, i, _), score in zip(
                judged, self.judge.score([(i, r) for _, i, r in judged]), strict=True
            ):
                slots[k][i] = score  # type: ignore[index]
        out: list[dict[str, Any] | None] = []
        for answer, scores in zip(answers, slots, strict=True):
            if not answer.fixture.expect.assertions:
                out.append(None)
            elif scores is None:
                out.append(unanswered_quality(answer))
            else:
                out.append(fixture_quality([s for s in scores if s is not None], tier=answer.tier))
        return out


def default_embedder() -> Any:
    """The MiniLM embedder with the embedding cache under the working directory."""
    from costguard.text.embeddings import Embedder, EmbeddingCache

    return Embedder(cache=EmbeddingCache())


def fixture_quality(scores: Sequence[AssertionScore], *, tier: str | None) -> dict[str, Any]:
    """Combine one fixture's assertion scores (weighted mean of the measured ones)."""
    measured = [s for s in scores if s.measured]
    out: dict[str, Any] = {"measured": bool(measured), "complete": len(measured) == len(scores)}
    if measured:
        total = sum(s.weight for s in measured)
        out["score"] = round(sum(s.weight * (s.score or 0.0) for s in measured) / total, 6)
        out["passed"] = all(s.passed for s in measured)
    else:
        out["score"] = None
        out["reason"] = scores[0].message if scores else "nothing to measure"
    out["tier"] = tier
    out["assertions"] = [s.to_dict() for s in scores]
    return out


def unanswered_quality(answer: Answer) -> dict[str, Any]:
    """The quality of a fixture that got no response: unmeasured, with the reason."""
    reason = answer.missing or "no response to score"
    return {
        "measured": False,
        "complete": False,
        "score": None,
        "reason": reason,
        "tier": answer.tier,
        "assertions": [
            {"type": a.type, "weight": a.weight, "measured": False}
            for a in answer.fixture.expect.assertions
        ],
    }


def score_response(
    fixture: Fixture,
    text: str | None,
    output_tokens: int | None = None,
    *,
    tier: str | None = None,
    scorer: QualityScorer | None = None,
    config: StackConfig | None = None,
    root: Path | None = None,
    missing: str | None = None,
) -> dict[str, Any] | None:
    """The quality of one response (`text` None: unmeasured, with `missing` as the reason).

    A convenience over `QualityScorer.score_many` for one record; runs score all records in one
    call so `similar` and `judge` assertions are batched.
    """
    if scorer is None:
        if config is None:
            raise ValueError("score_response needs a scorer or a config")
        scorer = QualityScorer(config, root=root or Path.cwd())
    response = None if text is None else Response(fixture, text, output_tokens, tier)
    return scorer.score_many([Answer(fixture, response, tier, missing)])[0]


def passes_expectations(expect: Expect, text: str) -> bool | None:
    """Does `text` meet `expect`, judged by the checks that need no model? None: nothing could judge.

    Used to judge semantic-cache hits (an earlier request's answer held against the new request's
    expectations). A text equal to the reference (whitespace aside) passes; otherwise every
    deterministic check (the same scorers as the quality report: strings, regex, JSON and JSON
    Schema) must pass. Similarity, judge and custom assertions are left out, as are output-token
    limits (a cached answer's length says nothing new); with none left, the answer is None.
    """
    from costguard.engine.quality.scorers.checks import TEXT_CHECKS, run_check, same_text

    if expect.reference is not None and same_text(text, expect.reference):
        return True
    verdicts = [run_check(a, text).passed for a in expect.assertions if a.type in TEXT_CHECKS]
    if not verdicts:
        return None
    return all(verdicts)


# -- the report section -----------------------------------------------------------------------


def _block() -> dict[str, Any]:
    # _w/_ws/_wp: traffic weight, weighted score, weighted passes; _s/_p: the unweighted sums,
    # used when the measured fixtures carry no traffic at all (a suite with share 0).
    return {
        "fixtures": 0,
        "measured": 0,
        "unmeasured": 0,
        "partial": 0,
        "passed": 0,
        "failed": 0,
        "_w": 0.0,
        "_ws": 0.0,
        "_wp": 0.0,
        "_s": 0.0,
    }


def _add(block: dict[str, Any], quality: dict[str, Any], weight: float) -> None:
    block["fixtures"] += 1
    if not quality.get("measured"):
        block["unmeasured"] += 1
        return
    block["measured"] += 1
    if not quality.get("complete", True):
        block["partial"] += 1
    passed = bool(quality.get("passed"))
    block["passed" if passed else "failed"] += 1
    score = float(quality.get("score") or 0.0)
    block["_w"] += weight
    block["_ws"] += weight * score
    block["_wp"] += weight * (1.0 if passed else 0.0)
    block["_s"] += score


def _finish(block: dict[str, Any]) -> dict[str, Any]:
    w, ws, wp, s = (block.pop(k) for k in ("_w", "_ws", "_wp", "_s"))
    n = block["measured"]
    if not n:
        score = pass_rate = None
    elif w > 0:
        score, pass_rate = ws / w, wp / w
    else:
        score, pass_rate = s / n, block["passed"] / n
    return {"score": score, "pass_rate": pass_rate, **block}


def quality_section(records: Sequence[RequestRecord]) -> dict[str, Any] | None:
    """The report's `quality` section from the records' quality, or None when nothing has assertions.

    `score` is the mean fixture score and `pass_rate` the share of fixtures passing every
    assertion, both over measured fixtures, weighted by requests per month; `unmeasured` counts
    fixtures with assertions and no answer, `partial` measured ones with some assertion unmeasured.
    """
    scored = [r for r in records if r.quality is not None]
    if not scored:
        return None
    total = _block()
    suites: dict[str, dict[str, Any]] = {}
    tiers: dict[str, dict[str, Any]] = {}
    assertions: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    for r in scored:
        q = r.quality
        assert q is not None
        weight = r.monthly_requests
        for block in (
            total,
            suites.setdefault(r.suite, _block()),
            tiers.setdefault(q.get("tier") or "?", _block()),
        ):
            _add(block, q, weight)
        if not q.get("measured"):
            reason = q.get("reason") or "no response to score"
            reasons[reason] = reasons.get(reason, 0) + 1
        for a in q.get("assertions", []):
            counts = assertions.setdefault(
                a["type"], {"measured": 0, "passed": 0, "failed": 0, "unmeasured": 0}
            )
            if a.get("measured"):
                counts["measured"] += 1
                counts["passed" if a.get("passed") else "failed"] += 1
            else:
                counts["unmeasured"] += 1
                if q.get("measured"):
                    reason = a.get("message") or "not measured"
                    reasons[reason] = reasons.get(reason, 0) + 1
    return {
        **_finish(total),
        "unmeasured_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "assertions": dict(sorted(assertions.items())),
        "suites": {name: _finish(b) for name, b in sorted(suites.items())},
        "tiers": {name: _finish(b) for name, b in sorted(tiers.items())},
    }


def unmeasured_warning(section: dict[str, Any]) -> str | None:
    """The report warning for fixtures whose quality was not (fully) measured, or None."""
    unmeasured, partial = section["unmeasured"], section["partial"]
    if not unmeasured and not partial:
        return None
    parts = []
    if unmeasured:
        parts.append(
            f"quality is unmeasured for {unmeasured} of {section['fixtures']} fixtures with assertions"
        )
    if partial:
        parts.append(f"{partial} fixture(s) have assertions that could not be measured")
    reasons = list(section.get("unmeasured_reasons", {}).items())
    shown = "; ".join(f"{why}: {n}" for why, n in reasons[:3]) + (
        "; ..." if len(reasons) > 3 else ""
    )
    return f"{', and '.join(parts)} ({shown}); record responses with a live backend to measure them"
