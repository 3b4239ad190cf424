"""The collector's pace and the C heap's freed pages during large runs (costguard.model.heap)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest

from costguard.model.heap import PACED_THRESHOLD, collector_paced, collector_paused


def test_paced_collector_raises_thresholds_and_restores_them_even_on_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), collector_paced():
        assert gc.get_threshold() == tuple(
            max(p, n) for p, n in zip(before, PACED_THRESHOLD, strict=True)
        )
        assert gc.isenabled()
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_paused_collector_leaves_a_disabled_collector_disabled() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_releasing_freed_memory_gives_freed_kilobyte_buffers_back() -> None:
    # In a fresh interpreter: 80 MB of 2 KB buffers (malloc, not Python's small-object arenas),
    # every 64th kept so the heap's top is never free and plain free() cannot shrink it.
    script = textwrap.dedent(
        """
        import os
        from costguard.model.heap import release_freed_memory

        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        buffers = [os.urandom(2048) for _ in range(40_000)]
        kept = buffers[::64]
        del buffers
        freed = rss()
        release_freed_memory()
        print(freed - rss(), len(kept))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
    ).stdout.split()  # fmt: skip
    released = int(out[0])
    assert released > 40 * 2**20, f"only {released / 2**20:.1f} MB released"
