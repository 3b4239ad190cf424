"""One function run in a forked process while this one goes on: a run's second core.

`Forked(fn)` forks at once (Linux, `fork` available, two or more usable cores, and
COSTGUARD_WORKERS not 1); the child computes `fn()`, pickles the result into a pipe and exits
without running exit handlers. `.result()` reads it and reaps the child. Whatever goes wrong in
the child (an exception, a signal, a result that does not pickle) makes `.result()` call `fn()`
here instead, so errors surface exactly as they would have without the fork. `fn` must only read
what it was given: the child works on a copy-on-write snapshot, and nothing it changes comes back.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def fork_usable() -> bool:
    """Whether a second process can take work: Linux with `fork`, 2+ cores, not switched off."""
    if os.environ.get("COSTGUARD_WORKERS", "").strip() == "1":
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return False


class Forked(Generic[T]):
    """`fn()` computed in a forked child (or, where that is not possible, here on `.result()`)."""

    def __init__(self, fn: Callable[[], T], *, fork: bool = True) -> None:
        self._fn = fn
        self._pid: int | None = None
        self._read: int | None = None
        self.forked = False  # whether the result came from the child
        if fork and fork_usable():
            self._start()

    def _start(self) -> None:
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            return
        if pid == 0:  # the child: compute, send, leave (no exit handlers, no flushed buffers)
            code = 1
            try:
                os.close(read)
                # Ctrl-C reaches the whole process group: the parent decides what happens.
                for name in ("SIGINT", "SIGHUP"):
                    if hasattr(signal, name):
                        signal.signal(getattr(signal, name), signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                gc.disable()  # a collection would touch (and so copy) every shared page
                data = pickle.dumps(self._fn(), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write, "wb") as out:
                    out.write(data)
                code = 0
            except BaseException:  # noqa: BLE001 - the parent computes it again and reports
                code = 1
            finally:
                os._exit(code)
        os.close(write)
        self._pid, self._read = pid, read

    def result(self) -> T:
        """The child's result (waiting for it), or `fn()` computed here."""
        if self._pid is None:
            return self._fn()
        assert self._read is not None
        try:
            with os.fdopen(self._read, "rb") as pipe:
                self._read = None
                data = pipe.read()
            _, status = os.waitpid(self._pid, 0)
            self._pid = None
            if os.waitstatus_to_exitcode(status) == 0 and data:
                value: T = pickle.loads(data)
                self.forked = True
                return value
        finally:
            self.close()
        return self._fn()

    def close(self) -> None:
        """Stop and reap the child if it is still there (an error or interrupt in this process)."""
        if self._read is not None:
            with contextlib.suppress(OSError):
                os.close(self._read)
            self._read = None
        if self._pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(self._pid, 0)
            self._pid = None

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
