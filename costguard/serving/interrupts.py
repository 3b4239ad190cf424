"""SIGINT, SIGTERM and SIGHUP all mean "stop now, cleanly" (README "Reliability").

GitHub Actions cancels a job with SIGINT, then SIGTERM about 7.5 s later, then SIGKILL about
2.5 s after that; a closed terminal sends SIGHUP. `installed()` (around every CLI command) makes SIGTERM
and SIGHUP raise KeyboardInterrupt exactly as SIGINT does, so every `finally`/`except
BaseException` that cleans up after Ctrl-C -- stopping the `vllm serve` process groups a run or
`stack up` started, writing an interrupted run's incomplete report -- also runs on them.

While a clean-up that must not be cut short is running (`shielded()`), a further signal is only
recorded: the clean-up sees it through `received()` and hurries (SIGKILL instead of waiting).
What no handler can do: SIGKILL kills costguard at once, so process groups it started keep
running; `costguard stack down` (an `if: always()` step in CI) stops them from the state file.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_received: list[str] = []
_shield = 0


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def reason(signum: int) -> str:
    """The incomplete_reason an interrupted run records."""
    return (
        "interrupted (Ctrl-C)"
        if signum == signal.SIGINT
        else f"interrupted ({signal_name(signum)})"
    )


def _handler(signum: int, frame: Any) -> None:
    _received.append(signal_name(signum))
    if _shield:
        return
    raise KeyboardInterrupt(reason(signum))


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Within: SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (main thread only). The
    previous handlers come back afterwards, so an in-process CLI call leaves no trace."""
    previous: dict[signal.Signals, Any] = {}
    seen = len(_received)
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            with contextlib.suppress(OSError, ValueError):
                previous[sig] = signal.signal(sig, _handler)
    try:
        yield
    finally:
        interrupted = len(_received) > seen
        for sig, handler in previous.items():
            # Once interrupted the process is on its way out: a further signal (Actions sends
            # SIGTERM after SIGINT) must not kill it between here and its exit code, so default
            # handlers become "ignore"; a caller's own handlers come back as they were.
            if interrupted and handler in (signal.SIG_DFL, signal.default_int_handler):
                handler = signal.SIG_IGN
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, handler)


def received() -> list[str]:
    """Names of the interrupting signals received so far, oldest first."""
    return list(_received)


def note(signum: int) -> None:
    """Record a signal that another handler (e.g. the replay's event loop) took."""
    _received.append(signal_name(signum))


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Signals inside only get recorded, never interrupt (for clean-up code)."""
    global _shield
    _shield += 1
    try:
        yield
    finally:
        _shield -= 1
