"""Recorded responses: what live runs measured, so that later offline runs are measured too.

Every live reply is stored under a key of the request (messages, sampling parameters and
requested model, i.e. the fixture's content hash) and the tier's model: a changed prompt,
template, sampling parameter or model simply stops matching, and the old entry is reported
stale. The store is one JSON Lines file (`responses.jsonl`, sorted by key, one reply per line:
diffable, so teams commit it next to the fixtures) plus `throughput.json`, the prefill/decode
throughput each tier sustained during the replay, for GPU-time pricing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from costguard.errors import ConfigError
from costguard.model.config import StackConfig, TierConfig
from costguard.model.fixtures import Fixture
from costguard.model.yamlio import is_number

RESPONSES_FILE = "responses.jsonl"
THROUGHPUT_FILE = "throughput.json"
JUDGE_MARK = "#judge-"  # a judge request's id: FIXTURE_ID#judge-ASSERTION_INDEX


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def recording_key(fixture: Fixture, model: str) -> str:
    """The request (messages + sampling + requested model) on one model."""
    return hashlib.sha256(f"{fixture.content_hash}\0{model}".encode()).hexdigest()[:32]


def confidence_from_reply(text: str) -> float | None:
    """The `confidence` of a structured reply `{"answer": ..., "confidence": x}` (0..1), if any."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    value = data.get("confidence") if isinstance(data, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


@dataclass
class Recording:
    """One recorded reply of one tier to one request."""

    key: str
    fixture_id: str
    content_hash: str
    tier: str
    model: str  # the tier's model (checkpoint) when recorded
    reply_model: str  # the `model` field of the reply
    text: str
    finish_reason: str | None
    prompt_tokens: int  # includes cached_tokens
    cached_tokens: int
    completion_tokens: int
    e2el_s: float
    ttft_s: float | None = None
    tpot_s: float | None = None
    confidence: float | None = None
    route: str | None = None  # "external:<model>" when an external router chose the tier
    backend: str = "endpoint"
    recorded_at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recording:
        """A recording line; counts are non-negative integers and times finite non-negative
        numbers (the one numeric rule), or ValueError naming the key."""
        if not isinstance(data, dict):
            raise TypeError("expected a JSON object")
        for key in ("key", "fixture_id", "content_hash", "tier", "model", "reply_model", "text"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"{key} must be a string, got {data.get(key)!r}"[:120])
        for key in ("finish_reason", "route", "backend", "recorded_at"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string, got {data[key]!r}"[:120])
        for key in ("prompt_tokens", "cached_tokens", "completion_tokens"):
            value = data.get(key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
        for key in ("e2el_s", "ttft_s", "tpot_s", "confidence"):
            value = data.get(key)
            if (key != "e2el_s" and value is None) or (is_number(value) and value >= 0):
                continue
            raise ValueError(f"{key} must be a finite non-negative number, got {value!r}")
        if data["cached_tokens"] > data["prompt_tokens"]:
            raise ValueError("cached_tokens exceeds prompt_tokens")
        return cls(**data)


@dataclass
class RecordingAudit:
    """How the store relates to the current fixtures and tiers."""

    entries: int
    current: int  # match a fixture x tier of the current config
    stale: list[
        tuple[str, str, str]
    ]  # (fixture id, tier, why): the fixture or the tier's model changed
    orphaned: list[tuple[str, str]]  # (fixture id, tier): the fixture no longer exists
    per_tier: dict[str, int]  # current entries per tier
    judge: int = 0  # of the current entries: LLM-judge replies on current recorded answers

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "current": self.current,
            "judge": self.judge,
            "stale": len(self.stale),
            "orphaned": len(self.orphaned),
            "per_tier": self.per_tier,
            "stale_fixtures": sorted({f for f, _, _ in self.stale})[:20],
        }


class RecordingStore:
    """The recorded responses of one project (`recordings.path`), loaded lazily."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / RESPONSES_FILE
        self._entries: dict[str, Recording] | None = None
        self._routes: dict[tuple[str, str], str] | None = None
        self._keys: dict[tuple[str, str], str] = {}  # (content hash, model) -> recording key
        self._append: IO[str] | None = None
        self.added = 0

    # -- reading ------------------------------------------------------------------------
    @property
    def entries(self) -> dict[str, Recording]:
        if self._entries is None:
            self._entries = self._load()
        return self._entries

    def _load(self) -> dict[str, Recording]:
        out: dict[str, Recording] = {}
        try:
            handle = self.path.open(encoding="utf-8")
        except FileNotFoundError:
            return out
        with handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    rec = Recording.from_dict(json.loads(line, parse_constant=_no_constant))
                except (ValueError, TypeError, RecursionError) as exc:
                    raise ConfigError(
                        f"not a recorded response ({exc}); fix or delete the line",
                        file=self.path,
                        line=lineno,
                    ) from None
                out[rec.key] = rec  # later lines win (appended during a run)
        return out

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, fixture: Fixture, tier: TierConfig) -> Recording | None:
        entries = self.entries
        if not entries:  # nothing recorded: no key to derive
            return None
        # Each fixture x model key is derived once per store, however many passes ask for it
        # (the served call, the routing alternatives, the counterfactual, escalations).
        ref = (fixture.content_hash, tier.model)
        key = self._keys.get(ref)
        if key is None:
            key = self._keys[ref] = recording_key(fixture, tier.model)
        return entries.get(key)

    def external_route(self, fixture: Fixture, router_model: str) -> str | None:
        """The tier an external router chose for this request when it was recorded."""
        if self._routes is None:
            self._routes = {}
            for rec in self.entries.values():
                if rec.route:
                    self._routes[(rec.content_hash, rec.route)] = rec.tier
        return self._routes.get((fixture.content_hash, f"external:{router_model}"))

    # -- writing ------------------------------------------------------------------------
    def put(self, rec: Recording) -> None:
        """Add a reply; appended to the file at once, so an interrupted run keeps what it measured."""
        self.entries[rec.key] = rec
        if rec.route and self._routes is not None:
            self._routes[(rec.content_hash, rec.route)] = rec.tier
        if self._append is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._append = self.path.open("a", encoding="utf-8")
        self._append.write(rec.to_json() + "\n")
        self._append.flush()
        self.added += 1

    def save(self) -> None:
        """Rewrite the file deduplicated and sorted by key (stable diffs), atomically."""
        from costguard.model.files import write_atomic

        self.close()
        if self._entries is None:
            return
        text = "".join(self._entries[k].to_json() + "\n" for k in sorted(self._entries))
        write_atomic(self.path, text)

    def close(self) -> None:
        if self._append is not None:
            self._append.close()
            self._append = None

    def merge_from(self, other: RecordingStore) -> int:
        """Take the other store's entries that are new here or recorded later (sharded CI jobs
        each record their part); returns how many were taken. Call `save` after."""
        taken = 0
        for key, rec in other.entries.items():
            mine = self.entries.get(key)
            if mine is None or rec.recorded_at > mine.recorded_at:
                self.entries[key] = rec
                taken += 1
        self._routes = None
        return taken

    # -- housekeeping -------------------------------------------------------------------
    def current_keys(
        self,
        fixtures: Sequence[Fixture],
        config: StackConfig,
        judge_keys: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Keys the current fixtures x tiers use (key -> tier), and those of the LLM-judge replies
        that the recorded answers to them need (`judge_keys`, from
        `costguard.engine.quality.scorers.judge.recorded_judge_keys`)."""
        keys = {recording_key(fx, t.model): t.name for fx in fixtures for t in config.tiers}
        return keys, dict(judge_keys or {})

    def audit(
        self,
        fixtures: Sequence[Fixture],
        config: StackConfig,
        judge_keys: Mapping[str, str] | None = None,
    ) -> RecordingAudit:
        by_id = {fx.id: fx for fx in fixtures}
        models = {t.name: t.model for t in config.tiers}
        current_keys, judge_keys = self.current_keys(fixtures, config, judge_keys)
        stale: list[tuple[str, str, str]] = []
        orphaned: list[tuple[str, str]] = []
        per_tier: dict[str, int] = {}
        current = judged = 0
        for rec in self.entries.values():
            tier = current_keys.get(rec.key) or judge_keys.get(rec.key)
            if tier is not None:
                current += 1
                judged += rec.key in judge_keys
                per_tier[tier] = per_tier.get(tier, 0) + 1
                continue
            if JUDGE_MARK in rec.fixture_id and rec.fixture_id.split(JUDGE_MARK)[0] in by_id:
                stale.append(
                    (
                        rec.fixture_id,
                        rec.tier,
                        "judged an answer or rubric that is no longer current",
                    )
                )
                continue
            fx = by_id.get(rec.fixture_id)
            if fx is None:
                orphaned.append((rec.fixture_id, rec.tier))
            elif fx.content_hash != rec.content_hash:
                stale.append(
                    (rec.fixture_id, rec.tier, "fixture or template changed since recording")
                )
            elif rec.tier not in models:
                stale.append((rec.fixture_id, rec.tier, "tier no longer in the config"))
            else:
                stale.append(
                    (
                        rec.fixture_id,
                        rec.tier,
                        f"tier model changed ({rec.model} -> {models[rec.tier]})",
                    )
                )
        return RecordingAudit(len(self.entries), current, stale, orphaned, per_tier, judged)

    def prune(
        self,
        fixtures: Sequence[Fixture],
        config: StackConfig,
        judge_keys: Mapping[str, str] | None = None,
        *,
        keep_orphaned: bool = False,
    ) -> int:
        """Drop entries no current fixture x tier (or judge of a current answer, `judge_keys`) uses;
        returns how many were dropped."""
        keys, judge_keys = self.current_keys(fixtures, config, judge_keys)
        current_keys = set(keys) | set(judge_keys)
        ids = {fx.id for fx in fixtures} | {
            f"{fx.id}{JUDGE_MARK}{i}" for fx in fixtures for i in range(len(fx.expect.assertions))
        }
        drop = [
            k for k, rec in self.entries.items()
            if k not in current_keys and not (keep_orphaned and rec.fixture_id not in ids)
        ]  # fmt: skip
        for k in drop:
            del self.entries[k]
        self._routes = None
        if drop:
            self.save()
        return len(drop)


# --------------------------------------------------------------------------------------------
# Throughput profiles (GPU-time pricing)
# --------------------------------------------------------------------------------------------


def hardware_signature(tier: TierConfig) -> dict[str, Any]:
    """What a measured throughput depends on: a profile is reused only while these stay equal."""
    return {
        "model": tier.model,
        "quantization": tier.quantization,
        "gpu": tier.hardware.gpu,
        "gpus": tier.hardware.gpus,
        "tensor_parallel_size": tier.serve.tensor_parallel_size,
        "pipeline_parallel_size": tier.serve.pipeline_parallel_size,
    }


def load_throughput(directory: Path) -> dict[str, dict[str, Any]]:
    path = directory / THROUGHPUT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"not a throughput profile ({exc})", file=path) from None
    tiers = data.get("tiers") if isinstance(data, dict) else None
    if not isinstance(tiers, dict):
        raise ConfigError("not a throughput profile (no 'tiers' object)", file=path)
    return tiers


def measured_throughput(
    profiles: dict[str, dict[str, Any]], tier: TierConfig
) -> tuple[float, float] | None:
    """(prefill, decode) tokens/s recorded for this tier on the same model and hardware."""
    entry = profiles.get(tier.name)
    if not isinstance(entry, dict) or entry.get("hardware") != hardware_signature(tier):
        return None
    prefill, decode = entry.get("prefill_tokens_per_s"), entry.get("decode_tokens_per_s")
    if not (is_number(prefill) and is_number(decode) and prefill > 0 and decode > 0):
        return None
    return float(prefill), float(decode)


def save_throughput(directory: Path, updates: dict[str, dict[str, Any]]) -> Path:
    """Merge measured profiles into `throughput.json` (tiers not measured this time are kept)."""
    from costguard.model.files import write_atomic

    tiers = load_throughput(directory)
    tiers.update(updates)
    text = json.dumps({"version": 1, "tiers": dict(sorted(tiers.items()))}, indent=2) + "\n"
    return write_atomic(directory / THROUGHPUT_FILE, text)


def merge_throughput(directory: Path, others: Sequence[Path]) -> int:
    """Fold other `throughput.json` files into this one: per tier, the profile measured over
    the most requests wins. Returns how many tiers changed."""
    mine = load_throughput(directory)
    changed: dict[str, dict[str, Any]] = {}
    for other in others:
        for tier, entry in load_throughput(other).items():
            current = changed.get(tier) or mine.get(tier)
            if current is None or entry.get("requests", 0) > current.get("requests", 0):
                changed[tier] = entry
    if changed:
        save_throughput(directory, changed)
    return len(changed)


def describe(audit: RecordingAudit) -> Iterable[str]:
    """Warnings for a report: what in the store no longer matches."""
    if audit.stale:
        ids = sorted({f for f, _, _ in audit.stale})
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        yield (
            f"{len(audit.stale)} recorded response(s) are stale ({audit.stale[0][2]}; fixtures {shown}): "
            "re-record them with a live backend, or `costguard recordings prune`"
        )
