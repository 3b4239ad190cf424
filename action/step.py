"""What the Action's step scripts share: how a failure is reported.

A failure is one line on stderr (as the CLI prints it) plus an `::error` annotation, so it shows
on the run's summary page, and the step's exit code: 1, or the CostguardError's own (2: bad input).
Standard library only at import time (install.py runs before costguard is installed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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
