"""Stack variants: the stack with some settings changed, for `costguard frontier`.

A variant is a set of overrides on the stack config, each a dotted path and a value:

```yaml
frontier:
  variants:
    small-full-precision:                      # quantized vs full precision (record it first)
      tiers.small.model: meta-llama/Llama-3.1-8B-Instruct
      tiers.small.quantization: null
    no-exact-cache: {caches.exact.enabled: false}
  sweeps:                                      # one variant per value
    router.rules[2].min_prompt_tokens: [500, 1000, 3000]
  auto: true                                   # also the standard variants below
```
Paths address list items by index (`rules[2]` or `rules.2`) or, in `tiers`, by name
(`tiers.small`). Every variant is validated like costguard.yaml itself.

The standard variants: the current stack; every tier alone ("only small": tiers on/off);
without each tier that the router sends traffic to, when there are three tiers or more (its
traffic goes to the next tier); the exact cache toggled; the semantic cache toggled and, when it
is on, at every threshold of its `sweep`; the router's thresholds (prompt length, or the embedding
routers' 0-10 score, capped at 10) halved and doubled.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from costguard.errors import ConfigError, UsageError
from costguard.model.config import LoadedStack, StackConfig
from costguard.model.yamlio import line_of, validate

CURRENT = "current"
THRESHOLD_KEYS = (
    "min_prompt_tokens",
    "max_prompt_tokens",
)  # prompt-length thresholds of rules/length routers
SCORE_KEY, SCORE_MAX = "max_score", 10.0  # score thresholds of the embedding routers (0-10)
SCALES = (0.5, 2.0)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    overrides: tuple[tuple[str, Any], ...]
    config: StackConfig

    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)


def _segments(path: str) -> list[str]:
    parts = re.sub(r"\[(\d+)\]", r".\1", path).split(".")
    if not path or any(not p for p in parts):
        raise ValueError(
            f"{path!r} is not a dotted config path (e.g. tiers.small.model or router.rules[0].tier)"
        )
    return parts


def _step(node: Any, segment: str, path: str) -> Any:
    if isinstance(node, list):
        if segment.isdigit():
            index = int(segment)
            if index >= len(node):
                raise ValueError(
                    f"{path}: index {index} is out of range (the list has {len(node)} items)"
                )
            return index
        names = [item.get("name") for item in node if isinstance(item, dict)]
        if segment in names:
            return names.index(segment)
        raise ValueError(f"{path}: no item named {segment!r} (names: {', '.join(map(str, names))})")
    if isinstance(node, dict):
        return segment
    raise ValueError(
        f"{path}: cannot go into {segment!r} (the value there is {node!r}; override the parent instead)"
    )


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set `path` in a config dict (ValueError naming the path when it does not exist)."""
    parts = _segments(path)
    node: Any = data
    for segment in parts[:-1]:
        key = _step(node, segment, path)
        if isinstance(node, dict) and key not in node:
            raise ValueError(f"{path}: there is no {segment!r} here")
        node = node[key]
    node[_step(node, parts[-1], path)] = copy.deepcopy(value)


def apply_overrides(
    config: StackConfig, overrides: Mapping[str, Any], *, file: str, line: int | None, name: str
) -> StackConfig:
    """The config with `overrides` applied, validated like costguard.yaml (ConfigError on a bad path or value)."""
    data = config.model_dump(by_alias=True)
    for path, value in overrides.items():
        try:
            set_path(data, path, value)
        except ValueError as exc:
            raise ConfigError(
                f"variant {name!r}: {exc}", file=file, line=line, key=f"frontier.{path}"
            ) from None
    try:
        return validate(StackConfig, data, file=file)
    except ConfigError as exc:
        raise ConfigError(
            f"variant {name!r}: {exc.message}", file=file, line=line, key=exc.key
        ) from None


def _replace_tier(node: Any, old: str, new: str) -> Any:
    """A router config with every reference to tier `old` pointed at `new` (tokenizer_tier stays)."""
    if isinstance(node, dict):
        return {
            k: (v if k == "tokenizer_tier" else _replace_tier(v, old, new)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_replace_tier(v, old, new) for v in node]
    return new if node == old else node


def _scaled_thresholds(node: Any, factor: float) -> tuple[Any, bool]:
    """The router config with every prompt-length or score threshold scaled; and whether there was any."""
    if isinstance(node, dict):
        found = False
        out: dict[Any, Any] = {}
        for k, v in node.items():
            if k in THRESHOLD_KEYS and isinstance(v, int) and not isinstance(v, bool):
                out[k] = max(0, round(v * factor))
                found = True
            elif k == SCORE_KEY and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = min(SCORE_MAX, max(0.0, round(v * factor, 4)))
                found = True
            else:
                out[k], sub = _scaled_thresholds(v, factor)
                found = found or sub
        return out, found
    if isinstance(node, list):
        items = [_scaled_thresholds(v, factor) for v in node]
        return [v for v, _ in items], any(f for _, f in items)
    return node, False


def standard_variants(config: StackConfig) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(name, description, overrides) of the standard variants of a stack."""
    yield CURRENT, "the stack as configured", {}
    names = [t.name for t in config.tiers]
    router = config.router.model_dump(by_alias=True) if config.router is not None else None
    if len(names) > 1:
        for tier in names:
            yield (
                f"only {tier}",
                f"every request on tier {tier}",
                {"router": {"kind": "rules", "default_tier": tier, "rules": []}},
            )
    if router is not None and len(names) > 2:
        for i, tier in enumerate(names):
            replacement = names[i + 1] if i + 1 < len(names) else names[i - 1]
            changed = _replace_tier(router, tier, replacement)
            if changed != router:
                yield (
                    f"without {tier}",
                    f"tier {tier} off: its traffic goes to {replacement}",
                    {"router": changed},
                )
    exact = config.caches.exact.enabled
    yield (
        f"exact cache {'off' if exact else 'on'}",
        f"the exact result cache {'disabled' if exact else 'enabled'}",
        {"caches.exact.enabled": not exact},
    )
    semantic = config.caches.semantic
    if semantic.enabled:
        yield (
            "semantic cache off",
            "the semantic result cache disabled",
            {"caches.semantic.enabled": False},
        )
        for threshold in semantic.sweep:
            if threshold != semantic.threshold:
                yield (
                    f"semantic threshold {threshold:g}",
                    f"the semantic cache at cosine >= {threshold:g}",
                    {"caches.semantic.threshold": threshold},
                )
    else:
        yield (
            "semantic cache on",
            f"the semantic result cache enabled at cosine >= {semantic.threshold:g}",
            {"caches.semantic.enabled": True},
        )
    if router is not None:
        for factor in SCALES:
            scaled, found = _scaled_thresholds(router, factor)
            if found:
                yield (
                    f"thresholds x{factor:g}",
                    f"the router's thresholds (prompt length or score) x{factor:g}",
                    {"router": scaled},
                )


def _describe(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "no change"


def build_variants(stack: LoadedStack, *, auto: bool | None = None) -> list[Variant]:
    """Every variant of the stack: the standard ones (unless `frontier.auto` is false), the declared
    ones and the sweeps. Variants whose config equals an earlier one are dropped (the first name wins)."""
    config = stack.config
    frontier = config.frontier
    file = str(stack.path)
    specs: list[tuple[str, str, dict[str, Any], int | None]] = []
    if auto if auto is not None else frontier.auto:
        specs += [(n, d, o, None) for n, d, o in standard_variants(config)]
    else:
        specs.append((CURRENT, "the stack as configured", {}, None))
    for name, overrides in frontier.variants.items():
        specs.append(
            (
                name,
                _describe(overrides),
                dict(overrides),
                line_of(stack._raw, ("frontier", "variants", name)),
            )
        )
    for path, values in frontier.sweeps.items():
        line = line_of(stack._raw, ("frontier", "sweeps", path))
        for value in values:
            specs.append((f"{path}={value!r}", f"sweep: {path} = {value!r}", {path: value}, line))
    variants: list[Variant] = []
    seen: dict[str, str] = {}
    for name, description, overrides, line in specs:
        if any(v.name == name for v in variants):
            raise ConfigError(
                f"two variants are called {name!r}", file=file, line=line, key="frontier"
            )
        built = (
            apply_overrides(config, overrides, file=file, line=line, name=name)
            if overrides
            else config
        )
        key = built.model_dump_json()
        if key in seen:
            continue
        seen[key] = name
        variants.append(Variant(name, description, tuple(overrides.items()), built))
    return variants


def select_variants(variants: list[Variant], names: Iterable[str]) -> list[Variant]:
    """The variants called `names`, in their order (UsageError naming the unknown ones)."""
    wanted = list(names)
    known = {v.name for v in variants}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UsageError(
            f"unknown variant(s) {', '.join(map(repr, unknown))} (variants: {', '.join(sorted(known))}; "
            "see `costguard frontier --list`)"
        )
    return [v for v in variants if v.name in wanted]
