"""Custom scorers: a Python function named by dotted path in a fixture's `custom:` assertion.

```yaml
expect:
  assertions:
    - custom: checks.refunds:mentions_policy      # module:function (or module.function)
```
The module is imported with the project root (the directory of costguard.yaml) first on
`sys.path`. The function receives a `costguard.engine.quality.scorers.Response` (`.text`, `.output_tokens`,
`.tier`, `.fixture`) and returns one of:

- `True` / `False`;
- `(passed, message)`;
- a mapping `{"passed": bool, "score": 0..1 (optional, default 1 or 0), "message": str (optional)}`.

A bare number is refused (is 0.6 a pass?): return `{"passed": ..., "score": 0.6}`. A scorer that
raises, or returns anything else, stops the run with an error naming the fixture: a broken scorer
is not a quality measurement.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from costguard.engine.quality.scorers import AssertionScore, Response
from costguard.errors import ConfigError
from costguard.model.fixtures import Assertion

CustomScorer = Callable[[Response], Any]


def split_path(path: str) -> tuple[str, str]:
    """`pkg.mod:func` or `pkg.mod.func` -> (module, attribute)."""
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    if (
        not module
        or not attr
        or not all(part.isidentifier() for part in [*module.split("."), *attr.split(".")])
    ):
        raise ValueError(f"{path!r} is not a dotted path to a function (package.module:function)")
    return module, attr


def load_scorer(path: str, *, root: Path) -> CustomScorer:
    """Import the scorer function named by `path` (ValueError with the reason when impossible)."""
    module_name, attr = split_path(path)
    root_str = str(root.resolve())
    added = root_str not in sys.path
    if added:
        sys.path.insert(0, root_str)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported as the scorer's problem
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    finally:
        if added:
            sys.path.remove(root_str)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    return target


def run_custom(scorer: CustomScorer, assertion: Assertion, response: Response) -> AssertionScore:
    """Call a custom scorer and turn its answer into an AssertionScore."""
    fx = response.fixture
    try:
        outcome = scorer(response)
    except Exception as exc:  # noqa: BLE001 - user code; reported with the fixture's location
        raise ConfigError(
            f"custom scorer {assertion.custom} raised {type(exc).__name__}: {exc}",
            file=fx.file,
            line=fx.line,
            key="expect.assertions",
        ) from None
    try:
        return _interpret(assertion, outcome)
    except ValueError as exc:
        raise ConfigError(
            f"custom scorer {assertion.custom} returned {outcome!r}: {exc}",
            file=fx.file,
            line=fx.line,
            key="expect.assertions",
        ) from None


def _interpret(assertion: Assertion, outcome: Any) -> AssertionScore:
    name = assertion.custom or "custom"
    if isinstance(outcome, bool):
        return AssertionScore.check(
            assertion, outcome, f"{name}: {'passed' if outcome else 'failed'}"
        )
    if isinstance(outcome, tuple) and len(outcome) == 2 and isinstance(outcome[0], bool):
        return AssertionScore.check(assertion, outcome[0], f"{name}: {outcome[1]}")
    if isinstance(outcome, dict):
        passed = outcome.get("passed")
        if not isinstance(passed, bool):
            raise ValueError("a mapping needs `passed: true|false`")
        score = outcome.get("score", 1.0 if passed else 0.0)
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
            raise ValueError("`score` must be a number from 0 to 1")
        message = str(outcome.get("message") or ("passed" if passed else "failed"))
        return AssertionScore.graded(
            assertion, float(score), passed, f"{name}: {message}", float(score)
        )
    if isinstance(outcome, int | float):
        raise ValueError('a bare number is ambiguous; return {"passed": bool, "score": number}')
    raise ValueError("expected True/False, (passed, message) or {passed, score, message}")
