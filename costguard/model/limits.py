"""Resource limits for untrusted inputs (README "Reliability", docs/limits.md).

Fixture files, policies, configs and templates come from pull requests, so a hostile or careless
change must end in a one-line error, not a stalled or killed CI job. Every limit can be raised
with an environment variable for a user whose legitimate inputs need more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from costguard.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    yaml_max_bytes: int = 256 * 1024 * 1024
    """Largest YAML/JSON input file (COSTGUARD_YAML_MAX_BYTES)."""
    yaml_max_alias_nodes: int = 1_000_000
    """Extra nodes YAML aliases may add when expanded (COSTGUARD_YAML_MAX_ALIAS_NODES): an
    anchor reused a few times costs little; a "billion laughs" alias bomb is refused."""
    yaml_max_depth: int = 100
    """Deepest nesting of mappings and lists (COSTGUARD_YAML_MAX_DEPTH)."""
    template_max_seconds: float = 5.0
    """Wall-clock time one template render may take (COSTGUARD_TEMPLATE_MAX_SECONDS)."""
    template_max_output: int = 2_000_000
    """Characters one render may produce, and the largest string/list a template may build
    (COSTGUARD_TEMPLATE_MAX_OUTPUT)."""
    template_max_iterations: int = 1_000_000
    """Items all `range()` calls of one render may yield together (COSTGUARD_TEMPLATE_MAX_ITERATIONS)."""


_ENV = {
    "yaml_max_bytes": "COSTGUARD_YAML_MAX_BYTES",
    "yaml_max_alias_nodes": "COSTGUARD_YAML_MAX_ALIAS_NODES",
    "yaml_max_depth": "COSTGUARD_YAML_MAX_DEPTH",
    "template_max_seconds": "COSTGUARD_TEMPLATE_MAX_SECONDS",
    "template_max_output": "COSTGUARD_TEMPLATE_MAX_OUTPUT",
    "template_max_iterations": "COSTGUARD_TEMPLATE_MAX_ITERATIONS",
}


def limits() -> Limits:
    """The limits in force: the defaults, overridden by the environment variables above."""
    values: dict[str, float | int] = {}
    defaults = Limits()
    for name, var in _ENV.items():
        raw = os.environ.get(var)
        if raw is None or not raw.strip():
            continue
        kind = type(getattr(defaults, name))
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a number") from None
        if not (value > 0) or value != value or value == float("inf"):
            raise ConfigError(f"{var}={raw!r} must be a finite number above 0")
        values[name] = value
    return Limits(**values)  # type: ignore[arg-type]
