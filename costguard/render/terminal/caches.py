"""The cache tables of a run: the layers, the simulated prefix caches per tier, and the semantic
cache's threshold sweep."""

from __future__ import annotations

from typing import Any

from costguard.render.terminal.tables import plain, table
from costguard.report import format as fmt
from costguard.report.model import (
    Cache,
    CacheBypass,
    ExactCache,
    PrefixCache,
    PrefixTier,
    SemanticCache,
)
from costguard.report.run_report import RunReport


def cache_tables(report: RunReport) -> list[Any]:
    """Cache layers (hit rates in requests and tokens, $ saved), prefix caches per tier, and the
    semantic threshold sweep."""
    cache: Cache = report.model.cache
    est = report.model.totals.estimated
    out: list[Any] = []
    layers = _layers_table(cache, est)
    if layers.row_count:
        out.append(layers)
    if cache.prefix.enabled:
        out.append(_prefix_table(cache.prefix, est))
    if cache.semantic.sweep:
        out.append(_sweep_table(cache.semantic))
    return out


def _layers_table(cache: Cache, est: bool) -> Any:
    layers = table(
        "Cache layers",
        ("layer", "hit rate (requests)", "hit rate (tokens)", "saved $/month", "notes"),
        left=("layer", "notes"),
    )
    exact, semantic, prefix = cache.exact, cache.semantic, cache.prefix
    if exact.enabled:
        layers.add_row(*_layer("exact", exact, exact.hit_rate, est), _exact_notes(exact))
    if semantic.enabled:
        layers.add_row(
            *_layer("semantic", semantic, semantic.hit_rate, est), _semantic_note(semantic)
        )
    if prefix.enabled:
        layers.add_row(
            *_layer("prefix (KV)", prefix, prefix.hit_rate_requests, est),
            f"simulated vLLM automatic prefix caching, replicas {prefix.replica_routing}",
        )
    if cache.bypass.requests_per_month:
        layers.add_row(
            "bypassed",
            fmt.tokens(cache.bypass.requests_per_month) + "/mo",
            "",
            "",
            plain(_bypass_reasons(cache.bypass)),
        )
    return layers


def _layer(
    name: str, layer: ExactCache | SemanticCache | PrefixCache, hit_rate: float, est: bool
) -> tuple[str, str, str, str]:
    """A cache layer's row up to its notes: name, hit rates (requests, tokens), saving."""
    return (
        name,
        fmt.percent(hit_rate),
        fmt.percent(layer.hit_rate_tokens),
        fmt.money(layer.saved_per_month, est),
    )


def _exact_notes(exact: ExactCache) -> str:
    notes = [
        f"temperature <= {exact.max_temperature:g}",
        f"ttl {exact.ttl_s:g} s" if exact.ttl_s else "no ttl",
    ]
    return ", ".join(notes)


def _semantic_note(semantic: SemanticCache) -> str:
    note = (
        f"threshold {semantic.threshold:g}; {semantic.wrong_hits} wrong of {semantic.hits} hits "
        f"(false-hit rate {fmt.percent(semantic.false_hit_rate)})"
    )
    if semantic.unjudged_hits:
        note += f", {semantic.unjudged_hits} unjudged"
    return note


def _bypass_reasons(bypass: CacheBypass) -> str:
    reasons = _counts(bypass.reasons)
    detectors = bypass.pii.requests_per_month
    if detectors:
        reasons += " (PII: " + _counts(detectors) + ")"
    return reasons


def _counts(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {fmt.tokens(v)}" for k, v in sorted(counts.items()))


def _capacity(block: PrefixTier) -> str:
    if block.num_gpu_blocks is None:
        return "unbounded"
    return f"{fmt.tokens(block.capacity_tokens)} tok, {block.capacity_source}"


def _prefix_table(prefix: PrefixCache, est: bool) -> Any:
    tiers = table(
        "Prefix caches (simulated, per tier)",
        (
            "tier",
            "replicas",
            "capacity each",
            "prompt tok/mo",
            "cached tok/mo",
            "token hit rate",
            "request hit rate",
            "evicted",
            "saved $/month",
        ),  # fmt: skip
        left=("tier", "capacity each"),
    )
    for name, block in prefix.tiers.items():
        if not block.simulated:
            tiers.add_row(plain(name), "", "prefix caching off", "", "", "", "", "", "")
            continue
        tiers.add_row(
            plain(name),
            fmt.count(block.instances),
            _capacity(block),
            fmt.tokens(block.input_tokens_per_month),
            fmt.tokens(block.cached_tokens_per_month),
            fmt.percent(block.hit_rate_tokens),
            fmt.percent(block.hit_rate_requests),
            fmt.count(block.evicted_blocks),
            fmt.money(block.saved_per_month, est),
        )
    return tiers


def _sweep_table(semantic: SemanticCache) -> Any:
    sweep = table(
        "Semantic cache: threshold sweep",
        ("threshold", "hits", "wrong hits", "unjudged", "hit rate", "false-hit rate"),
    )
    for row in semantic.sweep:
        mark = " (shipped)" if row.shipped else ""
        sweep.add_row(
            f"{row.threshold:g}{mark}",
            fmt.count(row.hits),
            fmt.count(row.wrong_hits),
            fmt.count(row.unjudged_hits),
            fmt.percent(row.hit_rate),
            fmt.percent(row.false_hit_rate),
        )
    return sweep
