"""The result of `costguard verify`: offline prompt token counts against a live server's.

One row per fixture and tier; per tier the exact-match rate and the worst offenders. A single
mismatch fails the check: the projection promises the counts the server bills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERIFY_SCHEMA_VERSION = 1
WORST = 5  # offenders listed per tier


@dataclass
class VerifyRow:
    fixture: str
    location: str
    tier: str
    offline: int
    offline_source: str  # "exact" | "approximate": how the tier's tokenizer counts
    server: int | None  # None: the server gave no count (error)
    via: str | None  # "tokenize" | "completion"
    cached_tokens: int | None = None  # completion only; None when not reported
    error: str | None = None

    @property
    def match(self) -> bool:
        return self.server is not None and self.server == self.offline

    @property
    def delta(self) -> int | None:
        return None if self.server is None else self.offline - self.server

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fixture": self.fixture,
            "location": self.location,
            "tier": self.tier,
            "offline": self.offline,
            "offline_source": self.offline_source,
            "server": self.server,
            "via": self.via,
            "match": self.match,
            "delta": self.delta,
            "delta_pct": (
                None
                if self.server is None or not self.server
                else round(100.0 * (self.offline - self.server) / self.server, 3)
            ),
        }
        if self.via == "completion":
            out["cached_tokens"] = self.cached_tokens
            out["cached_tokens_reported"] = self.cached_tokens is not None
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class VerifyReport:
    stack: str
    rows: list[VerifyRow]
    servers: dict[str, str]  # tier -> server URL checked
    warnings: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> list[VerifyRow]:
        return [r for r in self.rows if not r.match]

    @property
    def passed(self) -> bool:
        return bool(self.rows) and not self.mismatches

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def tiers(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for tier in dict.fromkeys(r.tier for r in self.rows):
            rows = [r for r in self.rows if r.tier == tier]
            matched = sum(r.match for r in rows)
            answered = [r for r in rows if r.server is not None]
            worst = sorted(
                (r for r in rows if not r.match),
                key=lambda r: (r.server is not None, -abs(r.delta or 0), r.fixture),
            )[:WORST]
            completion = [r for r in rows if r.via == "completion"]
            out[tier] = {
                "server": self.servers.get(tier),
                "fixtures": len(rows),
                "matched": matched,
                "exact_match_rate": matched / len(rows) if rows else None,
                "errors": sum(r.server is None for r in rows),
                "offline_tokens": sum(r.offline for r in answered),
                "server_tokens": sum(r.server or 0 for r in answered),
                "offline_source": rows[0].offline_source if rows else None,
                "via": sorted({r.via for r in rows if r.via}),
                "cached_tokens_reported": (
                    None if not completion else all(r.cached_tokens is not None for r in completion)
                ),
                "worst": [r.to_dict() for r in worst],
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        matched = sum(r.match for r in self.rows)
        return {
            "kind": "verify",
            "schema_version": VERIFY_SCHEMA_VERSION,
            "stack": self.stack,
            "passed": self.passed,
            "fixtures": len({r.fixture for r in self.rows}),
            "checks": len(self.rows),
            "matched": matched,
            "exact_match_rate": matched / len(self.rows) if self.rows else None,
            "tiers": self.tiers(),
            "warnings": list(self.warnings),
            "rows": [r.to_dict() for r in self.rows],
        }
