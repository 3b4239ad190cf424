"""The `router:` and `cascade:` sections of costguard.yaml: rules, length, complexity, kNN and
external routers, their thresholds and pricing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from costguard.model.yamlio import StrictModel, check_regex


class RuleCondition(StrictModel):
    tier: str
    suites: list[str] | None = None
    regex: str | None = Field(default=None, description="matched against the last user message")
    min_prompt_tokens: int | None = Field(default=None, ge=0)
    max_prompt_tokens: int | None = Field(default=None, ge=0)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            check_regex(value)
        return value


class RulesRouterConfig(StrictModel):
    kind: Literal["rules"]
    default_tier: str
    rules: list[RuleCondition] = Field(default_factory=list)
    tokenizer_tier: str | None = Field(
        default=None,
        description="tier whose tokenizer measures prompt length (default: first tier)",
    )


class LengthThreshold(StrictModel):
    max_prompt_tokens: int = Field(ge=0)
    tier: str


class LengthRouterConfig(StrictModel):
    """The known-bad baseline: route by prompt length only."""

    kind: Literal["length"]
    thresholds: list[LengthThreshold] = Field(min_length=1)
    default_tier: str
    tokenizer_tier: str | None = None


BINARY_CLASSES = ("simple", "complex")  # fixture labels / exemplar classes, simplest first


class ScoreThreshold(StrictModel):
    max_score: float = Field(ge=0, le=10, description="requests scoring at most this go to `tier`")
    tier: str


class RouterPricing(StrictModel):
    """What scoring a request costs (the router's own host), for the router-overhead figure."""

    per_million_requests_usd: float | None = Field(
        default=None, ge=0, description="a declared price per 1M routed requests"
    )
    instance_hour_usd: float | None = Field(
        default=None,
        ge=0,
        description="$/hour of the router's host; cost = measured scoring time x rate (estimated)",
    )

    @model_validator(mode="after")
    def _one(self) -> RouterPricing:
        if (self.per_million_requests_usd is None) == (self.instance_hour_usd is None):
            raise ValueError("give exactly one of per_million_requests_usd or instance_hour_usd")
        return self


class EmbeddingRouterConfig(StrictModel):
    """Settings shared by the embedding routers: the model, what is embedded, score thresholds."""

    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="sentence-transformers model: a name resolved offline (bundled MiniLM, local HF cache) or a local path",
    )
    precision: Literal["float32", "auto", "bfloat16"] = Field(
        default="float32",
        description="float32 (default): the same scores on every machine and cache state; auto/bfloat16: bf16 "
        "autocast on CPUs with native bf16 units, faster, but scores move by ~0.01 with batch composition",
    )
    text: Literal["last_user", "conversation"] = Field(
        default="last_user",
        description="what is embedded: the last user message, or every non-system message",
    )
    max_chars: int | None = Field(
        default=1000,
        ge=64,
        description="longer texts are embedded from their first and last max_chars/2 characters, where "
        "instructions and questions sit (the model reads only ~256 tokens); null: the whole text",
    )
    thresholds: list[ScoreThreshold] = Field(
        min_length=1,
        description="score (0-10) cut points in non-decreasing order; above the last: default_tier",
    )
    default_tier: str
    tokenizer_tier: str | None = Field(
        default=None,
        description="tier whose tokenizer counts prompt length (for the length baseline)",
    )
    pricing: RouterPricing | None = None

    @model_validator(mode="after")
    def _increasing(self) -> EmbeddingRouterConfig:
        scores = [t.max_score for t in self.thresholds]
        if any(b < a for a, b in zip(scores, scores[1:], strict=False)):
            raise ValueError(
                f"thresholds: max_score values must not decrease (got {', '.join(f'{s:g}' for s in scores)})"
            )
        return self


class ComplexityRouterConfig(EmbeddingRouterConfig):
    """Similarity to calibration exemplars -> a 0-10 complexity score -> a tier."""

    kind: Literal["complexity"]
    exemplars: dict[str, list[str]] = Field(
        description="`simple:` and `complex:` example prompts, or one list per tier name from the cheapest tier up"
    )
    top_k: int = Field(default=3, ge=1, description="similarities averaged per exemplar class")
    temperature: float = Field(
        default=0.05, gt=0, description="softmax temperature over the class similarities"
    )

    @model_validator(mode="after")
    def _exemplars(self) -> ComplexityRouterConfig:
        if len(self.exemplars) < 2:
            raise ValueError(
                "exemplars: give at least two classes (simple and complex, or two tiers)"
            )
        if set(self.exemplars) & set(BINARY_CLASSES) and set(self.exemplars) != set(BINARY_CLASSES):
            raise ValueError(
                "exemplars: use either `simple` and `complex`, or tier names, not a mix"
            )
        for name, texts in self.exemplars.items():
            if not texts or any(not t.strip() for t in texts):
                raise ValueError(f"exemplars.{name}: give at least one non-empty example prompt")
        return self

    @property
    def classes(self) -> list[str]:
        """Exemplar classes from the simplest to the most complex."""
        if set(self.exemplars) == set(BINARY_CLASSES):
            return list(BINARY_CLASSES)
        return list(self.exemplars)


class KnnRouterConfig(EmbeddingRouterConfig):
    """Nearest labelled fixtures vote: the mean complexity of the k most similar -> a 0-10 score."""

    kind: Literal["knn"]
    train: list[str] | None = Field(
        default=None,
        description="labelled fixture files/dirs (relative to this file); default: the run's fixtures",
    )
    k: int = Field(default=7, ge=1)
    classes: list[str] = Field(
        default_factory=lambda: list(BINARY_CLASSES),
        min_length=2,
        description="label values from the simplest to the most complex (simple, complex, or tier names)",
    )

    @model_validator(mode="after")
    def _classes(self) -> KnnRouterConfig:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes: each label once")
        if set(self.classes) & set(BINARY_CLASSES) and self.classes != list(BINARY_CLASSES):
            raise ValueError(
                "classes: use [simple, complex] (in that order) or tier names, not a mix"
            )
        return self


class ExternalRouterConfig(StrictModel):
    """A router the team already runs (vLLM semantic-router, a production-stack router).

    Live backends send every request to `base_url` with `model` (e.g. "auto") and attribute each
    reply to a tier by the reply's `model` field; offline runs replay the recorded attribution.
    """

    kind: Literal["external"]
    base_url: str
    api_key_env: str | None = Field(
        default=None, description="name of the env var holding the API key"
    )
    model: str = Field(default="auto", description="model name sent to the router")
    models: dict[str, str] = Field(
        default_factory=dict,
        description="reply model name -> tier, for names that are not a tier's name, served_model_name or model",
    )
    default_tier: str | None = Field(
        default=None,
        description="offline: tier for fixtures without a recorded route (otherwise an error)",
    )
    tokenizer_tier: str | None = None


RouterConfig = Annotated[
    RulesRouterConfig
    | LengthRouterConfig
    | ComplexityRouterConfig
    | KnnRouterConfig
    | ExternalRouterConfig,
    Field(discriminator="kind"),
]


class CascadeConfig(StrictModel):
    """The small tier answers with a confidence; below `threshold` the request also goes to `to_tier`."""

    enabled: bool = True
    from_tier: str
    to_tier: str
    threshold: float = Field(ge=0, le=1, description="escalate when the confidence is below this")
    estimate: Literal["router_score", "label", "none"] = Field(
        default="router_score",
        description="confidence where no recorded one exists: router_score (logistic fit of the router score "
        "on labelled fixtures), label (simple = 1, complex = 0: an oracle), none (never escalate)",
    )

    @model_validator(mode="after")
    def _distinct(self) -> CascadeConfig:
        if self.from_tier == self.to_tier:
            raise ValueError("cascade: from_tier and to_tier must differ")
        return self
