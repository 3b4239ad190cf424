"""The cyclic garbage collector's pace during large loads and projections.

A projection keeps nearly everything it allocates (fixtures, token counts, planned calls,
records) until its report is built, so CPython's collector, which starts a young pass every 700
new containers and a full pass every hundred of those, walks the same live heap over and over
for garbage it does not hold. On 100k fixtures that was a quarter of a warm run.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

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
