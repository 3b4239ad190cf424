"""Deterministic checks: string matching, regular expressions, JSON (with JSON Schema), output length.

They need nothing but the response, so they run everywhere (the semantic-cache wrong-hit check
uses them too). `equals` ignores differences in whitespace only (a trailing newline is not a
different answer); `regex` uses `re.search` (anchor with ^ and $ when the whole answer must match).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from costguard.engine.quality.scorers import AssertionScore, quoted
from costguard.model.fixtures import Assertion

CHECKS = ("equals", "contains", "icontains", "not_contains", "regex", "json", "max_output_tokens")
TEXT_CHECKS = (
    "equals",
    "contains",
    "icontains",
    "not_contains",
    "regex",
    "json",
)  # need only the text


def same_text(a: str, b: str) -> bool:
    """Equal up to whitespace (runs of spaces and newlines, leading and trailing)."""
    return a.split() == b.split()


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@lru_cache(maxsize=256)
def _schema_validator(schema_json: str) -> Any:
    from jsonschema import validators

    schema = json.loads(schema_json)
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why a JSON Schema is invalid, or None (checked before a run, so errors come early)."""
    from jsonschema.exceptions import SchemaError

    try:
        _schema_validator(json.dumps(schema, sort_keys=True))
    except SchemaError as exc:
        return exc.message
    return None


def _json(assertion: Assertion, text: str) -> AssertionScore:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (it is wrapped in a code fence)" if text.strip().startswith("```") else ""
        return AssertionScore.check(
            assertion, False, f"not valid JSON{hint}: {exc.msg} at position {exc.pos}"
        )
    schema = getattr(assertion.value, "schema_", None)
    if schema is None:
        return AssertionScore.check(assertion, True, "valid JSON")
    validator = _schema_validator(json.dumps(schema, sort_keys=True))
    if validator.is_valid(data):
        return AssertionScore.check(assertion, True, "valid JSON matching the schema")
    error = min(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return AssertionScore.check(
        assertion, False, f"JSON does not match the schema at {where}: {error.message}"
    )


def run_check(assertion: Assertion, text: str, output_tokens: int | None = None) -> AssertionScore:
    """One deterministic assertion on a response's text (and its measured output tokens)."""
    kind, value = assertion.type, assertion.value
    if kind == "equals":
        ok = same_text(text, value)
        return AssertionScore.check(
            assertion,
            ok,
            f"equals {quoted(value)}" if ok else f"{quoted(text)} is not {quoted(value)}",
        )
    if kind == "contains":
        ok = value in text
        return AssertionScore.check(
            assertion, ok, f"{'contains' if ok else 'does not contain'} {quoted(value)}"
        )
    if kind == "icontains":
        ok = value.casefold() in text.casefold()
        return AssertionScore.check(
            assertion, ok, f"{'contains' if ok else 'does not contain'} {quoted(value)} (any case)"
        )
    if kind == "not_contains":
        ok = value not in text
        return AssertionScore.check(
            assertion, ok, f"{'does not contain' if ok else 'contains'} {quoted(value)}"
        )
    if kind == "regex":
        ok = _regex(value).search(text) is not None
        return AssertionScore.check(
            assertion, ok, f"{'matches' if ok else 'no match for'} {quoted(value)}"
        )
    if kind == "json":
        return _json(assertion, text)
    if kind == "max_output_tokens":
        if output_tokens is None:
            return AssertionScore.unmeasured(
                assertion, "output tokens were not measured for this response"
            )
        ok = output_tokens <= value
        return AssertionScore.check(
            assertion,
            ok,
            f"{output_tokens} output tokens {'<=' if ok else '>'} {value}",
            float(output_tokens),
        )
    raise ValueError(f"not a deterministic check: {kind}")
