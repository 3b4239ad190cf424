"""What the Action's step scripts share: how a failure is reported.

A failure is one line on stderr (as the CLI prints it) plus an `::error` annotation, so it shows
on the run's summary page, and the step's exit code: 1, or the CostguardError's own (2: bad input).
Standard library only at import time (install.py runs before costguard is installed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import NoReturn


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def fail(message: str, code: int = 1, *, title: str = "costguard") -> NoReturn:
    print(f"costguard: error: {message}", file=sys.stderr, flush=True)
    print(f"::error title={title}::{_escape(message)}", flush=True)
    sys.exit(code)


def guarded(main: Callable[[], None]) -> None:
    """Run `main`; a CostguardError becomes one line, an annotation and its exit code."""
    from costguard.errors import CostguardError

    try:
        main()
    except CostguardError as exc:
        fail(str(exc), exc.exit_code)


COMMENT_MODES = ("update", "new", "hide-and-new", "delete-and-new", "off")


def flag(env: Mapping[str, str], name: str, default: str = "false") -> bool:
    """A true/false input; anything else is bad input (exit 2)."""
    value = (env.get(name) or default).strip().lower()
    if value not in ("true", "false"):
        input_name = name.removeprefix("INPUT_").lower().replace("_", "-")
        fail(f"input {input_name} must be true or false, got {value!r}", 2)
    return value == "true"


def comment_mode(env: Mapping[str, str]) -> str:
    """The comment-mode input, checked (bad input fails before anything runs)."""
    mode = (env.get("INPUT_COMMENT_MODE") or "update").strip()
    if mode not in COMMENT_MODES:
        fail(f"input comment-mode must be one of {', '.join(COMMENT_MODES)}, got {mode!r}", 2)
    return mode
