"""The stack configuration (`costguard.yaml`): tiers, router, caches, suites and traffic.

One typed object, validated strictly (unknown keys are errors), with every error located as
`file:line: key.path: message`. Nothing here talks to a model or a server.

The router and cache sections are typed in `routing_config` and `cache_config`; every name is
importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from costguard.errors import ConfigError
from costguard.model import vllm_facts
from costguard.model.cache_config import (  # noqa: F401 (re-exported)
    CachesConfig,
    ExactCacheConfig,
    PiiDetectorsConfig,
    PrefixCacheConfig,
    SemanticCacheConfig,
)
from costguard.model.pricing import PricingConfig
from costguard.model.routing_config import (  # noqa: F401 (re-exported)
    BINARY_CLASSES,
    CascadeConfig,
    ComplexityRouterConfig,
    EmbeddingRouterConfig,
    ExternalRouterConfig,
    KnnRouterConfig,
    LengthRouterConfig,
    LengthThreshold,
    RouterConfig,
    RouterPricing,
    RuleCondition,
    RulesRouterConfig,
    ScoreThreshold,
)
from costguard.model.tokenizer import TokenizerSpec
from costguard.model.yamlio import StrictModel, line_of, load_yaml, validate

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
                tiers = (
                    [rule.tier for rule in self.router.rules]
                    if isinstance(self.router, RulesRouterConfig)
                    else [threshold.tier for threshold in self.router.thresholds]
                )
                for i, tier_name in enumerate(tiers):
                    check(tier_name, f"router item {i}")
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

    @property
    def cache_dir(self) -> Path:
        """The config's `cache_dir`, relative to the config file unless absolute."""
        path = Path(self.config.cache_dir)
        return path if path.is_absolute() else self.root / path

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
