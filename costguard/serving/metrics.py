"""Scrape vLLM's Prometheus ``/metrics`` and diff two scrapes taken around a replay.

The server's own counters are an independent check on the client's summed ``usage``: over a
replay window, ``vllm:prompt_tokens_total`` grows by the summed ``prompt_tokens`` (cached
tokens included) and ``vllm:prefix_cache_hits_total`` / ``..._queries_total`` give the prefix
cache hit rate in tokens.

The text-format parser here is small and dependency-free (prometheus_client is a dev tool,
not a runtime dependency); ``requests`` is imported only when scraping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from costguard.errors import BackendError

PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
REQUEST_SUCCESS = "vllm:request_success_total"
TTFT = "vllm:time_to_first_token_seconds"
E2E_LATENCY = "vllm:e2e_request_latency_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
CACHE_CONFIG_INFO = "vllm:cache_config_info"

COUNTERS = (
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_HITS,
    REQUEST_SUCCESS,
)
HISTOGRAMS = (TTFT, E2E_LATENCY, INTER_TOKEN_LATENCY)
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class HistogramStat:
    """A histogram's ``_sum`` and ``_count`` (one model, all engines)."""

    sum: float = 0.0
    count: float = 0.0

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def __add__(self, other: HistogramStat) -> HistogramStat:
        return HistogramStat(self.sum + other.sum, self.count + other.count)


@dataclass
class MetricsSnapshot:
    """One scrape: counters and gauges summed per ``model_name`` (over engines and other
    labels such as ``finished_reason``), histogram sums/counts, and the cache config labels.

    Keys are sample names as exposed, e.g. ``vllm:prompt_tokens_total``; the model key is ""
    for samples without a ``model_name`` label.
    """

    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    gauges: dict[str, dict[str, float]] = field(default_factory=dict)
    histograms: dict[str, dict[str, HistogramStat]] = field(default_factory=dict)
    cache_config: dict[str, str] = field(default_factory=dict)

    @property
    def model_names(self) -> list[str]:
        names: set[str] = set()
        for per_model in self.counters.values():
            names.update(per_model)
        names.discard("")
        return sorted(names)

    def counter(self, name: str, model_name: str | None = None) -> float:
        """A counter's value for one model, or summed over all models."""
        return _pick(self.counters.get(name, {}), model_name, 0.0)

    def gauge(self, name: str, model_name: str | None = None) -> float:
        return _pick(self.gauges.get(name, {}), model_name, 0.0)

    def histogram(self, name: str, model_name: str | None = None) -> HistogramStat:
        per_model = self.histograms.get(name, {})
        if model_name is not None:
            return per_model.get(model_name, HistogramStat())
        total = HistogramStat()
        for stat in per_model.values():
            total = total + stat
        return total

    @property
    def block_size(self) -> int | None:
        return _int_or_none(self.cache_config.get("block_size"))

    @property
    def num_gpu_blocks(self) -> int | None:
        return _int_or_none(self.cache_config.get("num_gpu_blocks"))


@dataclass(frozen=True)
class MetricsDelta:
    """What the server counted between two scrapes (tokens, requests, latency sums)."""

    prompt_tokens: float
    generation_tokens: float
    prefix_cache_queries: float
    prefix_cache_hits: float
    requests: float
    ttft: HistogramStat
    e2e_latency: HistogramStat
    inter_token_latency: HistogramStat
    counter_reset: bool = False  # a counter went down: the server restarted in between

    @property
    def prefix_hit_rate(self) -> float | None:
        """Prefix cache hits / queries, in tokens; None when nothing was queried."""
        if self.prefix_cache_queries <= 0:
            return None
        return self.prefix_cache_hits / self.prefix_cache_queries


def diff(
    before: MetricsSnapshot, after: MetricsSnapshot, model_name: str | None = None
) -> MetricsDelta:
    """The change from ``before`` to ``after`` for one model (or all models).

    A counter that went down means the server restarted; as Prometheus' ``increase()`` does,
    its value after the restart is taken as the increase, and ``counter_reset`` is set.
    """
    reset = False

    def counter(name: str) -> float:
        nonlocal reset
        total = 0.0
        old = before.counters.get(name, {})
        new = after.counters.get(name, {})
        models = [model_name] if model_name is not None else sorted(set(old) | set(new))
        for model in models:
            a, b = old.get(model, 0.0), new.get(model, 0.0)
            if b < a:
                reset = True
                total += b
            else:
                total += b - a
        return total

    def histogram(name: str) -> HistogramStat:
        nonlocal reset
        a, b = before.histogram(name, model_name), after.histogram(name, model_name)
        if b.count < a.count:
            reset = True
            return b
        return HistogramStat(b.sum - a.sum, b.count - a.count)

    return MetricsDelta(
        prompt_tokens=counter(PROMPT_TOKENS),
        generation_tokens=counter(GENERATION_TOKENS),
        prefix_cache_queries=counter(PREFIX_CACHE_QUERIES),
        prefix_cache_hits=counter(PREFIX_CACHE_HITS),
        requests=counter(REQUEST_SUCCESS),
        ttft=histogram(TTFT),
        e2e_latency=histogram(E2E_LATENCY),
        inter_token_latency=histogram(INTER_TOKEN_LATENCY),
        counter_reset=reset,
    )


def scrape(base_url: str, *, timeout_s: float = 10.0) -> MetricsSnapshot:
    """GET ``{base_url}/metrics`` (``/v1`` is stripped: vLLM serves metrics at the root)."""
    import requests

    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    url = f"{base}/metrics"
    try:
        resp = requests.get(url, timeout=timeout_s)
    except requests.RequestException as e:
        raise BackendError(f"{url}: cannot scrape metrics: {type(e).__name__}") from None
    if resp.status_code != 200:
        raise BackendError(f"{url}: cannot scrape metrics: HTTP {resp.status_code}")
    return parse_metrics(resp.text, source=url)


# --------------------------------------------------------------------------------------------
# Prometheus text format
# --------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def parse_metrics(text: str, *, source: str = "metrics text") -> MetricsSnapshot:
    """Build a snapshot from Prometheus text exposition (0.0.4) or OpenMetrics text."""
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        try:
            samples.append(_parse_sample(line))
        except ValueError as e:
            raise BackendError(f"{source}: line {lineno}: {e}") from None
    return _snapshot(samples, types)


def _parse_sample(line: str) -> Sample:
    m = _NAME_RE.match(line)
    if not m:
        raise ValueError(f"not a metric sample: {line[:80]!r}")
    name = m.group(0)
    pos = m.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos += 1
        while True:
            while pos < len(line) and line[pos] in " ,":
                pos += 1
            if pos < len(line) and line[pos] == "}":
                pos += 1
                break
            lm = _LABEL_NAME_RE.match(line, pos)
            if not lm:
                raise ValueError(f"bad label set in {name}")
            pos = lm.end()
            value_chars = []
            while True:
                if pos >= len(line):
                    raise ValueError(f"unterminated label value in {name}")
                ch = line[pos]
                if ch == "\\" and pos + 1 < len(line):
                    value_chars.append(_ESCAPES.get(line[pos + 1], "\\" + line[pos + 1]))
                    pos += 2
                elif ch == '"':
                    pos += 1
                    break
                else:
                    value_chars.append(ch)
                    pos += 1
            labels[lm.group(1)] = "".join(value_chars)
    rest = line[pos:].split()
    if not rest:
        raise ValueError(f"{name} has no value")
    try:
        value = float(rest[0])
    except ValueError:
        raise ValueError(f"{name} has a non-numeric value {rest[0]!r}") from None
    return Sample(name, labels, value)


def _family(name: str, types: Mapping[str, str]) -> tuple[str, str]:
    """(family name, type) of a sample name, using the ``# TYPE`` lines when present."""
    if name in types:
        return name, types[name]
    for suffix in ("_total", "_created", "_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in types:
                return base, types[base]
            if base + "_total" in types:  # prometheus_client names counter families *_total
                return base + "_total", types[base + "_total"]
    if name.endswith("_total"):
        return name, "counter"
    for suffix in ("_sum", "_count", "_bucket"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)], "histogram"
    return name, "untyped"


def _snapshot(samples: list[Sample], types: Mapping[str, str]) -> MetricsSnapshot:
    snap = MetricsSnapshot()
    hist_parts: dict[str, dict[str, list[float]]] = {}
    for sample in samples:
        if sample.name == CACHE_CONFIG_INFO:
            snap.cache_config = dict(sample.labels)
            continue
        if math.isnan(sample.value):
            continue
        family, kind = _family(sample.name, types)
        if kind in ("counter", "histogram") and sample.name.endswith("_created"):
            continue  # creation timestamps, not values
        model = sample.labels.get("model_name", "")
        if kind == "counter":
            name = sample.name if sample.name.endswith("_total") else sample.name + "_total"
            per_model = snap.counters.setdefault(name, {})
            per_model[model] = per_model.get(model, 0.0) + sample.value
        elif kind == "gauge":
            per_model = snap.gauges.setdefault(sample.name, {})
            per_model[model] = per_model.get(model, 0.0) + sample.value
        elif kind == "histogram":
            parts = hist_parts.setdefault(family, {}).setdefault(model, [0.0, 0.0])
            if sample.name.endswith("_sum"):
                parts[0] += sample.value
            elif sample.name.endswith("_count"):
                parts[1] += sample.value
    for family, sums_counts in hist_parts.items():
        snap.histograms[family] = {m: HistogramStat(s, c) for m, (s, c) in sums_counts.items()}
    return snap


def _pick(per_model: Mapping[str, float], model_name: str | None, default: float) -> float:
    if model_name is not None:
        return per_model.get(model_name, default)
    return sum(per_model.values()) if per_model else default


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Reconciling the server's counters with the client's summed usage
# --------------------------------------------------------------------------------------------


@dataclass
class ClientUsage:
    """What the replies' ``usage`` added up to for one model over a replay."""

    requests: int = 0
    prompt_tokens: int = 0  # includes cached
    cached_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> None:
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached_tokens
        self.completion_tokens += completion_tokens


def reconcile(delta: MetricsDelta, usage: ClientUsage) -> list[str]:
    """Where the server's counters disagree with the client's usage, in words (empty: they agree).

    Differences have causes worth knowing: other traffic on the same server, retried attempts
    the server had already processed, requests cancelled mid-stream (counted as aborted), or a
    server started without ``--enable-prompt-tokens-details`` (cached tokens then read as 0).
    """
    out = []
    if delta.counter_reset:
        out.append("a counter went down between the scrapes: the server restarted during the run")
    pairs = (
        ("prompt tokens", delta.prompt_tokens, usage.prompt_tokens),
        ("generation tokens", delta.generation_tokens, usage.completion_tokens),
        ("prefix-cache hit tokens", delta.prefix_cache_hits, usage.cached_tokens),
        ("finished requests", delta.requests, usage.requests),
    )
    for what, server, client in pairs:
        if round(server) != client:
            out.append(f"{what}: server counted {server:g}, replies reported {client}")
    if usage.cached_tokens == 0 and delta.prefix_cache_hits > 0:
        out.append(
            "the server hit its prefix cache but no reply reported cached tokens: start vLLM with "
            "--enable-prompt-tokens-details (costguard stack up does)"
        )
    return out
