"""The PII guard in front of the result caches: a request carrying personal data is never cached.

A cached answer is replayed to whoever sends the same (or a similar) request next, so a request
whose text holds an e-mail address, a phone number or a card number must neither be stored nor
served from cache. Matches are reported by detector name only; the matched text never leaves
this module (it would put the personal data into reports and PR comments).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from costguard.model.fixtures import Fixture, message_text

# Built-in detectors. Deliberately simple, high-recall patterns: a false positive only costs a
# cache bypass, a false negative can replay someone's data to another user.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# North American numbers with separators or brackets ("(775) 555-0143", "604.555.0187",
# "1 775 555 0199", "+1-416-555-0126") and international numbers written with a leading "+".
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
    r"|\+\d{1,3}[\s.-]?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}"
    r")(?!\w)"
)
# 13 to 19 digits, optionally grouped by single spaces or dashes; confirmed by the Luhn check.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# Runs of digits and separators long enough to hold a phone or card number: one cheap pass finds
# them, the exact patterns then run only there (about 5x faster on long retrieved documents).
# Each run is `[+(]?\d[\d\s().-]{6,}\d`; the pattern starts at the digit (a leading character
# class that may be empty makes the regex engine try every position, twice as slow) and the
# run's "+" or "(" is added back by `_numbers`.
_NUMBERISH = re.compile(r"\d[\d\s().-]{6,}\d")
# Fewer digits than the shortest phone number (an international one: 6) means neither can occur.
_MIN_DIGITS = 6
_DROP_DIGITS = str.maketrans("", "", "0123456789")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _numbers(text: str, phone: bool, card: bool) -> list[str]:
    """Which of phone / card numbers occur in `text`."""
    found_phone = found_card = False
    if len(text) - len(text.translate(_DROP_DIGITS)) < _MIN_DIGITS:
        return []
    previous_end = 0
    for run in _NUMBERISH.finditer(text):
        start, end = run.span()
        if start > previous_end and text[start - 1] in "+(":
            start -= 1  # the run's optional leading "+" or "("
        previous_end = end
        if phone and not found_phone:
            # The character after the run stays visible to the pattern's look-ahead.
            found_phone = _PHONE.search(text, start, min(end + 1, len(text))) is not None
        if card and not found_card:
            for match in _CARD.finditer(text, start, min(end + 1, len(text))):
                digits = match.group().replace(" ", "").replace("-", "")
                if luhn_valid(digits):
                    found_card = True
                    break
        if found_phone == phone and found_card == card:
            break
    return [name for name, hit in (("phone", found_phone), ("card", found_card)) if hit]


@dataclass(frozen=True)
class PiiGuard:
    """Scans the text of the configured message roles; `allow` strings are removed first."""

    detectors: Sequence[str] = ("email", "phone", "card")
    custom: dict[str, str] | None = None
    allow: Sequence[str] = ()
    roles: Sequence[str] = ("user",)

    def __post_init__(self) -> None:
        unknown = set(self.detectors) - {"email", "phone", "card"}
        if unknown:
            raise ValueError(f"unknown PII detector(s): {', '.join(sorted(unknown))}")
        compiled = {name: re.compile(pattern) for name, pattern in (self.custom or {}).items()}
        object.__setattr__(self, "_custom", compiled)

    def scan_text(self, text: str) -> list[str]:
        """Names of the detectors that match `text` (built-in ones first, then custom ones)."""
        for allowed in self.allow:
            text = text.replace(allowed, " ")
        found = []
        if "email" in self.detectors and "@" in text and _EMAIL.search(text):
            found.append("email")
        phone, card = "phone" in self.detectors, "card" in self.detectors
        if phone or card:
            found.extend(_numbers(text, phone, card))
        found.extend(name for name, regex in self._custom.items() if regex.search(text))  # type: ignore[attr-defined]
        return found

    def scan(self, fixture: Fixture) -> list[str]:
        """Detector names matching any scanned message of the request (empty: no PII found)."""
        return self.scan_text(
            _joined(message_text(m) for m in fixture.messages if m["role"] in self.roles)
        )


def _joined(parts: Iterable[str]) -> str:
    # A separator no detector matches across, so two messages never combine into one match.
    return "\n\x00\n".join(parts)
