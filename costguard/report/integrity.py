"""Is a RunReport read from disk fit to be gated on? (README "Reliability").

A report is an input like any other: someone can hand-edit it, a tool can truncate it, a
foreign tool can write `NaN`. `check_report` enforces the one numeric rule on it -- every number
the gate reads is a real, finite, non-negative number (not a boolean, not a string), `complete`
is literally `true` or `false`, and the totals agree with the per-tier and per-suite breakdowns
-- or raises a one-line ConfigError naming the file, the line and the key.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError
from costguard.model.yamlio import INT_LIMIT, is_number
from costguard.report.rows import RecordRows, RowError

TOTAL_KEYS = (
    "requests_per_month",
    "input_tokens_per_month",
    "cached_tokens_per_month",
    "output_tokens_per_month",
    "cost_per_month",
)
"""Totals every report has; each is the sum of the same key over the tiers' or suites' blocks."""
SUMMED_OVER = {"tiers": ("cost_per_month",), "suites": ("cost_per_month", "requests_per_month")}
RECORD_KEYS = ("input_tokens", "cached_tokens", "output_tokens", "cost_usd")
RECORD_TEXTS = ("suite", "location", "served_by")  # strings when present: a diff compares them
RECORD_FLAGS = ("escalated", "estimated")
# No amount a record holds is 2**63 or more (an integer that large in a row reads as a float).
RECORD_FIGURES = (*RECORD_KEYS, "monthly_requests", "cost_per_month", "saved_by_cache_usd")
DISTRIBUTIONS = {"cost_per_request": 1, "tokens_per_request": 2}
"""Totals that are distributions the policy metrics index: stat -> number (or kind -> stat ->
number), checked when present."""
REL_TOL = 1e-6
ABS_TOL = 1e-6


def json_constant(name: str) -> float:
    """`parse_constant` for json.loads: NaN/Infinity are not JSON and never a number here."""
    raise ValueError(f"{name} is not a number costguard accepts (numbers must be finite)")


def check_report(data: dict[str, Any], path: str | Path, text: str | None = None) -> None:
    """Raise ConfigError (file:line: key: message) for a report a gate must not read."""
    where = _Locator(path, text)
    complete = data.get("complete")
    if not isinstance(complete, bool):
        raise where.error(("complete",), f"must be true or false, got {_shown(complete)}")
    totals = data.get("totals")
    if not isinstance(totals, dict):
        raise where.error(("totals",), "missing or not a mapping")
    for key in TOTAL_KEYS:
        _number(where, ("totals", key), totals.get(key), present=key in totals)
    for key, depth in DISTRIBUTIONS.items():
        if key in totals:
            _numbers_within(where, ("totals", key), totals[key], depth)
    for section, keys in SUMMED_OVER.items():
        blocks = data.get(section)
        if not isinstance(blocks, dict):
            raise where.error((section,), "missing or not a mapping")
        for name, block in blocks.items():
            if not isinstance(block, dict):
                raise where.error((section, name), "must be a mapping")
            for key in TOTAL_KEYS:
                if key in block:
                    _number(where, (section, name, key), block[key], present=True)
        for key in keys:
            if not blocks or not all(key in b for b in blocks.values()):
                continue
            total = float(totals[key])
            summed = math.fsum(float(b[key]) for b in blocks.values())
            if not math.isclose(summed, total, rel_tol=REL_TOL, abs_tol=ABS_TOL):
                raise where.error(
                    ("totals", key),
                    f"inconsistent: {total!r} but the {section} add up to {summed!r}",
                )
    records = data.get("records")
    if isinstance(records, RecordRows):
        _check_rows(where, records)
        # Decoded rows hold only finite numbers (the decoder refuses the rest): walk the others.
        _finite_everywhere(where, {k: v for k, v in data.items() if k != "records"}, ())
        return
    if not isinstance(records, list):
        raise where.error(("records",), "missing or not a list")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise where.error(("records", i), "must be a mapping")
        _check_record(where, i, record)
    _finite_everywhere(where, data, ())


def _check_record(where: _Locator, i: int, record: dict[str, Any]) -> None:
    for key in RECORD_KEYS:
        if key in record:
            _number(where, ("records", i, key), record[key], present=True)
    for key in RECORD_FIGURES:
        value = record.get(key)
        if isinstance(value, float) and abs(value) > INT_LIMIT:
            raise where.error(("records", i, key), f"out of range, got {value!r}")
    if not isinstance(record.get("id"), str):
        raise where.error(("records", i, "id"), f"must be a string, got {_shown(record.get('id'))}")
    for key in RECORD_TEXTS:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise where.error(("records", i, key), f"must be a string, got {_shown(value)}")
    for key in RECORD_FLAGS:
        value = record.get(key)
        if value is not None and not isinstance(value, bool):
            raise where.error(("records", i, key), f"must be true or false, got {_shown(value)}")
    cache = record.get("cache")
    if cache is not None:
        outcome = cache.get("outcome") if isinstance(cache, dict) else cache
        if outcome is not None and not isinstance(outcome, str):
            raise where.error(
                ("records", i, "cache", "outcome"), f"must be a string, got {_shown(outcome)}"
            )


def _check_rows(where: _Locator, rows: RecordRows) -> None:
    """Every row decoded once (and let go): a mapping whose record numbers are numbers."""
    index = 0
    try:
        for index, record in enumerate(rows):
            _check_record(where.at_line(rows.line_of(index)), index, record)
    except RowError as exc:
        raise where.at_line(rows.line_of(exc.index)).error(
            ("records", exc.index), str(exc)
        ) from None


def _number(where: _Locator, loc: tuple[Any, ...], value: Any, *, present: bool) -> None:
    if not present or value is None:
        raise where.error(loc, "missing: a report without it cannot be gated on")
    if not is_number(value):
        raise where.error(loc, f"must be a finite number, got {_shown(value)}")
    if value < 0:
        raise where.error(loc, f"must not be negative, got {value!r}")


def _numbers_within(where: _Locator, loc: tuple[Any, ...], node: Any, depth: int) -> None:
    """A mapping whose values are numbers (depth 1) or such mappings (depth 2)."""
    if not isinstance(node, dict):
        raise where.error(loc, f"must be a mapping, got {_shown(node)}")
    for key, value in node.items():
        if depth > 1:
            _numbers_within(where, (*loc, key), value, depth - 1)
        else:
            _number(where, (*loc, key), value, present=True)


def _finite_everywhere(where: _Locator, node: Any, loc: tuple[Any, ...], depth: int = 0) -> None:
    """No NaN/infinity anywhere (they can only come from a non-JSON writer)."""
    if depth > 64:
        raise where.error(loc, "nested too deeply")
    if isinstance(node, float) and not math.isfinite(node):
        raise where.error(loc, f"must be a finite number, got {node!r}")
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, (dict, list, float)):
                _finite_everywhere(where, v, (*loc, k), depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, (dict, list, float)):
                _finite_everywhere(where, v, (*loc, i), depth + 1)


def _shown(value: Any) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Locator:
    """Finds the line of a key path in the JSON text (the first match walking down the path)."""

    def __init__(self, path: str | Path, text: str | None, fixed_line: int | None = None) -> None:
        self.path = path
        self.text = text
        self.fixed_line = fixed_line

    def at_line(self, line: int | None) -> _Locator:
        """A locator for one record row whose line is known (None: search as usual)."""
        return self if line is None else _Locator(self.path, self.text, line)

    def line(self, loc: tuple[Any, ...]) -> int | None:
        if self.fixed_line is not None:
            return self.fixed_line
        if self.text is None:  # read only when there is an error to locate
            try:
                self.text = Path(self.path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self.text = ""
        if not self.text:
            return None
        pos = 0
        found = None
        for part in loc:
            if isinstance(part, int):
                continue
            m = re.compile(re.escape(_json_key(part)) + r"\s*:").search(self.text, pos)
            if m is None:
                break
            pos, found = m.end(), m.start()
        return None if found is None else self.text.count("\n", 0, found) + 1

    def error(self, loc: tuple[Any, ...], message: str) -> ConfigError:
        from costguard.model.yamlio import format_loc

        return ConfigError(message, file=self.path, line=self.line(loc), key=format_loc(loc))


def _json_key(key: Any) -> str:
    import json

    return json.dumps(str(key), ensure_ascii=False)
