"""Tier prices and the cost of one model call.

Two kinds of tier (README, "Inputs"):
- token-priced: $/1M input, $/1M cached input, $/1M output (inline, or a key of a pinned
  LiteLLM-format price table: a versioned input, never fetched at run time);
- GPU-time: $/GPU-hour x GPUs per replica, turned into $/token through prefill and decode
  throughput at a target utilisation; cached prefix tokens skip prefill compute.

Cached tokens are a part of the prompt tokens and are billed once, at the cached rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from costguard.errors import ConfigError
from costguard.model.yamlio import StrictModel, is_number

BUNDLED_PRICE_TABLE = Path(__file__).parent / "data" / "litellm_prices.json"


class PricingConfig(StrictModel):
    """One of three forms; exactly one must be given."""

    # token-priced, inline
    input_per_mtok: float | None = Field(
        default=None, ge=0, description="$ per 1M uncached input tokens"
    )
    cached_input_per_mtok: float | None = Field(
        default=None, ge=0, description="$ per 1M cached input tokens (default: the input price)"
    )
    output_per_mtok: float | None = Field(default=None, ge=0, description="$ per 1M output tokens")
    # token-priced, from a LiteLLM-format price table
    litellm: str | None = Field(default=None, description="model key in the price table")
    price_table: str | None = Field(
        default=None,
        description="path to a LiteLLM-format JSON price table (default: the bundled pinned copy)",
    )
    # GPU-time
    gpu_hour_usd: float | None = Field(default=None, gt=0, description="$ per GPU-hour")
    prefill_tokens_per_s: float | None = Field(
        default=None, gt=0, description="replica prefill throughput (tokens/s) at full batch"
    )
    decode_tokens_per_s: float | None = Field(
        default=None, gt=0, description="replica decode throughput (tokens/s) at full batch"
    )
    utilization: float = Field(
        default=0.6, gt=0, le=1, description="share of paid GPU time doing useful work"
    )

    @model_validator(mode="after")
    def _one_form(self) -> PricingConfig:
        token = self.input_per_mtok is not None or self.output_per_mtok is not None
        gpu = any(
            v is not None
            for v in (self.gpu_hour_usd, self.prefill_tokens_per_s, self.decode_tokens_per_s)
        )
        forms = [
            name
            for name, on in (
                ("token prices", token),
                ("litellm", self.litellm is not None),
                ("GPU-time", gpu),
            )
            if on
        ]
        if len(forms) != 1:
            raise ValueError(
                "give exactly one pricing form: input_per_mtok + output_per_mtok, litellm: KEY, or "
                "gpu_hour_usd + prefill_tokens_per_s + decode_tokens_per_s"
                + (f" (got {' and '.join(forms)})" if forms else "")
            )
        if token and (self.input_per_mtok is None or self.output_per_mtok is None):
            raise ValueError("token pricing needs both input_per_mtok and output_per_mtok")
        if gpu and None in (self.gpu_hour_usd, self.prefill_tokens_per_s, self.decode_tokens_per_s):
            raise ValueError(
                "GPU-time pricing needs gpu_hour_usd, prefill_tokens_per_s and decode_tokens_per_s"
            )
        if self.price_table is not None and self.litellm is None:
            raise ValueError("price_table goes with litellm: KEY")
        return self

    @property
    def kind(self) -> Literal["token", "gpu_time"]:
        return "gpu_time" if self.gpu_hour_usd is not None else "token"


@dataclass(frozen=True)
class TierPrice:
    """A resolved price: enough to cost any call on the tier, and to say where it came from."""

    tier: str
    kind: Literal["token", "gpu_time"]
    source: (
        str  # "inline", "litellm:KEY (table VERSION)", "declared throughput", "measured throughput"
    )
    input_per_token: float = 0.0
    cached_input_per_token: float = 0.0
    output_per_token: float = 0.0
    usd_per_second: float = 0.0  # GPU-time: $/GPU-hour x GPUs / 3600
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    utilization: float = 1.0
    measured_throughput: bool = False

    @property
    def estimated(self) -> bool:
        """GPU-time costs rest on throughput figures; declared (not measured) ones make them estimates."""
        return self.kind == "gpu_time" and not self.measured_throughput

    @property
    def basis(self) -> str:
        if self.kind == "token":
            return "token price"
        return (
            "GPU-time, measured throughput"
            if self.measured_throughput
            else "GPU-time, declared throughput (estimated)"
        )

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """Cost in $ of one call. `input_tokens` includes `cached_tokens` (as vLLM's usage does)."""
        if cached_tokens > input_tokens:
            raise ValueError(
                f"cached tokens ({cached_tokens}) exceed prompt tokens ({input_tokens})"
            )
        uncached = input_tokens - cached_tokens
        if self.kind == "token":
            return (
                uncached * self.input_per_token
                + cached_tokens * self.cached_input_per_token
                + output_tokens * self.output_per_token
            )
        busy_s = uncached / self.prefill_tokens_per_s + output_tokens / self.decode_tokens_per_s
        return self.usd_per_second * busy_s / self.utilization

    def cached_saving(self, cached_tokens: int) -> float:
        """What the cached tokens would have cost uncached (the prefix cache's saving)."""
        if self.kind == "token":
            return cached_tokens * (self.input_per_token - self.cached_input_per_token)
        return self.usd_per_second * (cached_tokens / self.prefill_tokens_per_s) / self.utilization


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


@lru_cache(maxsize=8)
def _load_table(path: str) -> tuple[dict, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_no_constant)
    except FileNotFoundError:
        raise ConfigError("price table not found", file=path) from None
    except IsADirectoryError:
        raise ConfigError("price table is a directory", file=path) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"price table is not valid JSON: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise ConfigError("price table must be a JSON object keyed by model", file=path)
    meta = data.get("_costguard", {})
    version = meta.get("version", "unversioned") if isinstance(meta, dict) else "unversioned"
    return data, version


def resolve_price(
    tier: str,
    pricing: PricingConfig,
    *,
    gpus: int,
    base_dir: Path,
    where: str,
    measured_throughput: tuple[float, float] | None = None,
    allowed: tuple[Path, ...] = (),
) -> TierPrice:
    """Turn a tier's pricing config into a TierPrice; `where` locates errors in the config."""
    if pricing.kind == "gpu_time":
        prefill, decode = pricing.prefill_tokens_per_s, pricing.decode_tokens_per_s
        source = "declared throughput"
        if measured_throughput is not None:
            prefill, decode = measured_throughput
            source = "measured throughput"
        return TierPrice(
            tier=tier,
            kind="gpu_time",
            source=source,
            usd_per_second=pricing.gpu_hour_usd * gpus / 3600.0,
            prefill_tokens_per_s=prefill,
            decode_tokens_per_s=decode,
            utilization=pricing.utilization,
            measured_throughput=measured_throughput is not None,
        )
    if pricing.litellm is not None:
        table_path = (
            (base_dir / pricing.price_table) if pricing.price_table else BUNDLED_PRICE_TABLE
        )
        if pricing.price_table:
            from costguard.model.paths import require_inside

            require_inside(table_path, base_dir, allowed, what="price table", key=where)
        table, version = _load_table(str(table_path))
        entry = table.get(pricing.litellm)
        if not isinstance(entry, dict):
            raise ConfigError(
                f"model {pricing.litellm!r} is not in the price table {table_path.name} (version {version}); "
                "give inline prices or add the model to a table of your own (price_table:)",
                key=where,
            )
        for key in ("input_cost_per_token", "output_cost_per_token"):
            if key not in entry:
                raise ConfigError(
                    f"price table entry {pricing.litellm!r} lacks input_cost_per_token/output_cost_per_token",
                    file=table_path,
                    key=f"{pricing.litellm}.{key}",
                )
        for key in ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost"):
            value = entry.get(key)
            if key in entry and (key != "cache_read_input_token_cost" or value is not None):
                if not (is_number(value) and value >= 0):
                    raise ConfigError(
                        f"must be a finite non-negative number, got {value!r}",
                        file=table_path,
                        key=f"{pricing.litellm}.{key}",
                    )
        inp = float(entry["input_cost_per_token"])
        out = float(entry["output_cost_per_token"])
        cached = entry.get("cache_read_input_token_cost")
        return TierPrice(
            tier=tier,
            kind="token",
            source=f"litellm:{pricing.litellm} (table {version})",
            input_per_token=inp,
            cached_input_per_token=float(cached) if cached is not None else inp,
            output_per_token=out,
        )
    inp = pricing.input_per_mtok / 1e6
    cached = (
        pricing.cached_input_per_mtok / 1e6 if pricing.cached_input_per_mtok is not None else inp
    )
    return TierPrice(
        tier=tier,
        kind="token",
        source="inline",
        input_per_token=inp,
        cached_input_per_token=cached,
        output_per_token=pricing.output_per_mtok / 1e6,
    )
