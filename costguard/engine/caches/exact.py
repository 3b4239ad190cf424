"""The exact result cache: an identical request (model, sampling, messages) is served from cache.

Only near-deterministic requests are cacheable: temperature must be set and at most the
configured maximum (an unset temperature means the server's default, usually 1.0). Entries live
`ttl_s` seconds of simulated traffic time (the arrival times of the traffic model), and message
text is normalised before keying (configurable: what counts as "the same request").
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from costguard.model.fixture_record import SHARED_ROLES
from costguard.model.fixtures import Fixture, canonical_json, message_text, tool_fields

DEFAULT_NORMALIZE = ("whitespace",)


@dataclass(frozen=True)
class CacheOutcome:
    outcome: str  # "miss" | "exact" | "semantic" | "bypass"
    detail: str | None = None
    source_index: int | None = None  # on a hit: the fixture whose answer is served


_MISS = CacheOutcome("miss")  # (immutable: every plain miss is this one)


def normalize_text(text: str, steps: Sequence[str]) -> str:
    """Apply the configured normalisations (strip, whitespace, case, unicode) to one message."""
    if "unicode" in steps:
        text = unicodedata.normalize("NFKC", text)
    if "whitespace" in steps:
        text = " ".join(text.split())
    elif "strip" in steps:
        text = text.strip()
    if "case" in steps:
        text = text.casefold()
    return text


MEMO_MAX_ENTRIES = 4096
MEMO_MIN_CHARS = 1024  # texts this long (system prompts, documents) tend to repeat across requests
_ROLE_KEYS = {r: r for r in ("system", "developer", "user", "assistant", "tool")}  # already normal


def exact_key(
    fixture: Fixture,
    normalize: Sequence[str] = DEFAULT_NORMALIZE,
    memo: dict[str, str] | None = None,
) -> bytes:
    """Normalised key (a sha256 digest): requested model, sampling parameters, the full message
    list (tool calls and results never normalised away) and the request's tools.

    Each part is length-prefixed and every message gives three parts, so no two different
    requests share a key; the sampling parameters come from the fixture's canonical JSON
    (serialised once per fixture). `memo` keeps the normalised form of long texts across calls
    with the same `normalize` (a system prompt shared by many requests is normalised once).
    """
    # Each part framed as f"{len(part)}:{part}" as it is made (this runs for every request of
    # 100k-request runs).
    model, sampling = fixture.model or "", fixture.sampling_json
    framed = [f"{len(model)}:{model}", f"{len(sampling)}:{sampling}"]
    append = framed.append
    for m in fixture.messages:
        role = m["role"]
        role_key = _ROLE_KEYS.get(role) or role.strip().lower()
        append(f"{len(role_key)}:{role_key}")
        content = m.get("content")
        text = content if type(content) is str else message_text(m)
        # System prompts and long texts (documents) repeat across requests: normalised once.
        if memo is not None and (role in SHARED_ROLES or len(text) >= MEMO_MIN_CHARS):
            normalized = memo.get(text)
            if normalized is None:
                normalized = normalize_text(text, normalize)
                if len(memo) < MEMO_MAX_ENTRIES:  # distinct documents per request: bounded
                    memo[text] = normalized
        else:
            normalized = normalize_text(text, normalize)
        append(f"{len(normalized)}:{normalized}")
        if len(m) == 2 and "content" in m:  # {"role", "content"}: no tool fields
            append("0:")
            continue
        extras = {k: m[k] for k in ("tool_calls", "tool_call_id", "name") if k in m}
        extra = canonical_json(extras) if extras else ""
        append(f"{len(extra)}:{extra}")
    tools = tool_fields(fixture.tools, fixture.tool_choice)
    tools_json = canonical_json(tools) if tools else ""
    append(f"{len(tools_json)}:{tools_json}")
    # The raw digest (33 bytes less than its hex form, per cached request held).
    return hashlib.sha256("".join(framed).encode("utf-8", "surrogatepass")).digest()


def temperature_gate(fixture: Fixture, max_temperature: float) -> str | None:
    """Why a request may not be cached because of its sampling (None: it may)."""
    temperature = fixture.sampling.temperature
    if temperature is None:
        return "temperature unset (server default is sampled)"
    if temperature > max_temperature:
        return f"temperature {temperature:g} > {max_temperature:g}"
    return None


class ExactResultCache:
    def __init__(
        self,
        *,
        max_temperature: float = 0.1,
        ttl_s: float | None = None,
        normalize: Sequence[str] = DEFAULT_NORMALIZE,
    ) -> None:
        self.max_temperature = max_temperature
        self.ttl_s = ttl_s
        self.normalize = tuple(normalize)
        self._entries: dict[
            bytes, tuple[int, str, float]
        ] = {}  # key -> (index, fixture id, stored at)
        self.expired = 0  # lookups that found an entry older than the TTL
        self._normalized: dict[str, str] = {}  # long message text -> its normalised form

    def key(self, fixture: Fixture) -> bytes | None:
        """The request's key in this cache, or None when its sampling keeps it out."""
        if temperature_gate(fixture, self.max_temperature) is not None:
            return None
        return exact_key(fixture, self.normalize, self._normalized)

    def lookup(
        self, fixture: Fixture, *, index: int = -1, now: float = 0.0, key: bytes | None = None
    ) -> CacheOutcome:
        """Look the request up at traffic time `now`; on a miss its answer is stored.

        Requests are replayed in arrival order, so "stored" means: the next identical request
        within `ttl_s` is served from this one's answer. An expired entry is a miss and is
        refreshed by the request that found it. `key`: the request's `key()`, where it was
        derived beforehand.
        """
        gate = temperature_gate(fixture, self.max_temperature)
        if gate is not None:
            return CacheOutcome("bypass", gate)
        if key is None:
            key = exact_key(fixture, self.normalize, self._normalized)
        entry = self._entries.get(key)
        if entry is not None:
            first_index, first_id, stored_at = entry
            if self.ttl_s is None or now - stored_at <= self.ttl_s:
                return CacheOutcome("exact", f"same request as {first_id}", first_index)
            self.expired += 1
            self._entries[key] = (index, fixture.id, now)
            return CacheOutcome(
                "miss",
                f"expired: {first_id}'s entry was {now - stored_at:,.0f} s old (ttl {self.ttl_s:g} s)",
            )
        self._entries[key] = (index, fixture.id, now)
        return _MISS
