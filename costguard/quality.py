"""Does a response meet a fixture's expectations? The minimal deterministic check.

Used to judge semantic-cache hits: the cached answer (an earlier request's) is held against the
NEW request's `expect`. Only checks that need no model are run here (reference equality,
equals, contains, icontains, not_contains, regex, json without a schema); the full scorers
(similarity, LLM judge, custom, JSON Schema, token limits) plug in behind the same function.
"""

from __future__ import annotations

import json
import re

from costguard.fixtures import Assertion, Expect


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def check_assertion(assertion: Assertion, text: str) -> bool | None:
    """One assertion on `text`: True/False, or None when it needs more than string checks."""
    kind, value = assertion.type, assertion.value
    if kind == "equals":
        return _same_text(text, value)
    if kind == "contains":
        return value in text
    if kind == "icontains":
        return value.casefold() in text.casefold()
    if kind == "not_contains":
        return value not in text
    if kind == "regex":
        return re.search(value, text) is not None
    if kind == "json":
        try:
            json.loads(text)
        except ValueError:
            return False
        schema = getattr(value, "schema_", None)
        return True if schema is None else None
    return None


def passes_expectations(expect: Expect, text: str) -> bool | None:
    """True when `text` meets `expect`, False when a check fails, None when nothing could judge it.

    A text equal to the reference (whitespace aside) passes. Otherwise every assertion that can
    be checked deterministically must pass; assertions that cannot be judged here are skipped,
    and with none left (and no equal reference) the answer is None: unjudged, never a guess.
    """
    if expect.reference is not None and _same_text(text, expect.reference):
        return True
    verdicts = [check_assertion(a, text) for a in expect.assertions]
    judged = [v for v in verdicts if v is not None]
    if not judged:
        return None
    return all(judged)
