"""The cyclic garbage collector's pace during large loads and projections.

A projection keeps nearly everything it allocates (fixtures, token counts, planned calls,
records) until its report is built, so CPython's collector, which starts a young pass every 700
new containers and a full pass every hundred of those, walks the same live heap over and over
for garbage it does not hold. On 100k fixtures that was a quarter of a warm run.
"""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# A young pass every 50k new containers instead of 700; the older generations keep their
# ratios (and CPython's own rule that a full pass waits for a quarter more long-lived objects).
PACED_THRESHOLD = (50_000, 20, 100)


@contextmanager
def collector_paced() -> Iterator[None]:
    """Collections far apart while the block runs (garbage cycles are still collected, later);
    the previous thresholds come back after it."""
    previous = gc.get_threshold()
    gc.set_threshold(*(max(p, n) for p, n in zip(previous, PACED_THRESHOLD, strict=True)))
    try:
        yield
    finally:
        gc.set_threshold(*previous)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection while the block runs: for loads that allocate a few containers per
    item, keep them all and make no cycles (after it, one pass takes them in)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system, where the C library can (glibc's
    `malloc_trim`). Python returns its own arenas when they empty, but buffers above its small
    object size (token id arrays, cached blobs: about a kilobyte each) come from malloc, whose
    freed pages stay with the process; the records built after them are small objects that
    never reuse those pages, so without this a run's peak memory holds both."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# glibc's mallopt parameter for the most malloc arenas a process may have (malloc.h).
_M_ARENA_MAX = -8


@functools.cache
def share_malloc_arenas() -> None:
    """Let this process's threads share at most two C heaps (glibc's M_ARENA_MAX), once.

    A tokenizer pool's result thread unpickles the token id blobs a run keeps (about a kilobyte
    each, so from malloc, not Python's allocator); in an arena of that thread's own, what is
    freed after the prefix simulation left scattered pages `release_freed_memory` could not give
    back, and some cold 100k runs peaked 15-25 MB higher than others (507-517 MB against
    491-495). With the limit, 14 cold runs out of 14 stayed at 490-497 MB."""
    mallopt = _libc("mallopt", "c_int", "c_int")
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 2)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another C library, another system)."""
    return _libc("malloc_trim", "c_size_t")


def _libc(name: str, *argtypes: str) -> Any:
    """The C library's function `name` (taking the ctypes types named, returning int), or None
    off Linux or where it lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None)[name]
    except (OSError, AttributeError):
        return None
    function.argtypes = [getattr(ctypes, t) for t in argtypes]
    function.restype = ctypes.c_int
    return function
