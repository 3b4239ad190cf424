"""Tokenizing on every core: large batches of prompts rendered and tokenized in forked worker
processes (`encode_packed`), ids packed as little-endian uint32 bytes."""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from costguard.text.tokenization.chat_tokenizer import ChatTokenizer


def pack_ids(ids: Sequence[int]) -> bytes:
    """Token ids as little-endian uint32 bytes: what the cache stores and workers send back."""
    arr = array("I", ids)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tobytes()


_ENCODE_CHUNK = 1024  # prompts tokenized per batch when ids are kept compactly


_PARALLEL_MIN = 2048  # prompts to tokenize before a process pool pays for itself


_FORKED: tuple[Any, Sequence[Any], Sequence[Any]] | None = None  # what forked workers inherit


def tokenizer_workers() -> int:
    """Processes to tokenize with: the cores this process may use (COSTGUARD_TOKENIZER_WORKERS
    overrides; 1 = in this process). Pools need `fork` (the workers inherit the loaded tokenizer)."""
    import multiprocessing

    # fork only where it is the platform's safe default (macOS's system libraries are not fork-safe).
    if (
        not sys.platform.startswith("linux")
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    configured = os.environ.get("COSTGUARD_TOKENIZER_WORKERS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_signals() -> None:
    """In a new worker: the parent's handlers (which turn SIGTERM into KeyboardInterrupt) do not
    apply. Ctrl-C and a closed terminal reach the whole process group: the parent handles them
    and stops the pool; a SIGTERM from the pool ends the worker quietly."""
    import signal

    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _encode_range(bounds: tuple[int, int]) -> list[bytes]:
    """In a forked worker: render and tokenize positions[start:stop] of the inherited work."""
    assert _FORKED is not None
    tokenizer, messages, tools = _FORKED
    out: list[bytes] = []
    for start in range(bounds[0], bounds[1], _ENCODE_CHUNK):
        stop = min(start + _ENCODE_CHUNK, bounds[1])
        encoded = tokenizer.encode_chat_many(messages[start:stop], tools_list=tools[start:stop])
        out.extend(pack_ids(ids) for ids in encoded)
    return out


def encode_packed(
    tokenizer: ChatTokenizer,
    messages_list: Sequence[list[dict]],
    tools_seq: Sequence[list | None],
    positions: Sequence[int],
) -> list[bytes]:
    """Packed token ids (little-endian uint32) of the conversations at `positions`.

    Rendering a chat template and turning encodings into ids hold the GIL, so large batches are
    split over forked worker processes (each renders and tokenizes its share single-threaded);
    small ones, and machines with one core, tokenize here in chunks. Both paths give the same
    ids: the workers run this very tokenizer on the same conversations.
    """
    global _FORKED
    messages = [messages_list[i] for i in positions]
    tools = [tools_seq[i] for i in positions]
    workers = min(tokenizer_workers(), max(1, len(positions) // (_PARALLEL_MIN // 2)))
    if workers <= 1 or len(positions) < _PARALLEL_MIN:
        _FORKED = (tokenizer, messages, tools)
        try:
            return _encode_range((0, len(messages)))
        finally:
            _FORKED = None
    import multiprocessing

    from costguard.model.heap import share_malloc_arenas

    share_malloc_arenas()  # the pool's result thread unpickles the blobs this process keeps
    # Several slices per worker, so a slow slice (long prompts) does not leave a core idle.
    step = max(_ENCODE_CHUNK, -(-len(messages) // (workers * 4)))
    bounds = [(start, min(start + step, len(messages))) for start in range(0, len(messages), step)]
    _FORKED = (tokenizer, messages, tools)
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: workers fill the cores
    try:
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=worker_signals)
        try:
            parts = pool.map(_encode_range, bounds, chunksize=1)
            pool.close()  # done: the workers exit on their own
        except BaseException:
            pool.terminate()  # an error or an interrupt: stop them now
            raise
        finally:
            pool.join()
    finally:
        _FORKED = None
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    return [blob for part in parts for blob in part]
