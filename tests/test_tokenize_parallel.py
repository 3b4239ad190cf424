"""Tokenizing on every core gives the ids the serial path gives, in the same order."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from costguard.text import tokenization
from costguard.text.tokenization import (
    TokenCountCache,
    TokenizerSpec,
    encode_chat_cached,
    encode_packed,
    load_tokenizer,
)
from tests.conftest import CHAT_TEMPLATE, minilm_dir


@pytest.fixture
def tokenizer(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    spec = TokenizerSpec(hf=minilm_dir(), chat_template="chat.jinja")
    return load_tokenizer(spec, base_dir=tmp_path, where="test")


def conversations(n: int) -> list[list[dict]]:
    rng = random.Random(5)
    words = ["refund", "order", "naïve", "日本語", "x" * 40, "Ünïcode", "42", "?", "\n"]
    return [
        [
            {"role": "system", "content": "You are terse." * rng.randint(0, 3)},
            {
                "role": "user",
                "content": " ".join(rng.choice(words) for _ in range(rng.randint(1, 80))),
            },
        ]
        for _ in range(n)
    ]


def test_worker_processes_give_the_serial_ids(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    convs = conversations(600)
    positions = list(range(len(convs)))[::-1]  # any order of positions is kept
    tools = [None] * len(convs)
    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "1")
    serial = encode_packed(tokenizer, convs, tools, positions)
    monkeypatch.setattr(tokenization.workers, "_PARALLEL_MIN", 64)
    monkeypatch.setattr(tokenization.workers, "_ENCODE_CHUNK", 50)
    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "2")
    parallel = encode_packed(tokenizer, convs, tools, positions)
    assert parallel == serial
    # and both are what the tokenizer says, one conversation at a time
    for pos, blob in zip(positions[:50], serial, strict=False):
        assert np.frombuffer(blob, "<u4").tolist() == tokenizer.encode_chat(convs[pos])


def test_cold_cache_filled_in_parallel_reads_back_like_a_serial_one(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    convs = conversations(400) * 2  # duplicates are tokenized once
    monkeypatch.setattr(tokenization.workers, "_PARALLEL_MIN", 64)
    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "2")
    cold = encode_chat_cached(tokenizer, convs, TokenCountCache(tmp_path / "a"), compact=True)
    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "1")
    serial = encode_chat_cached(tokenizer, convs, TokenCountCache(tmp_path / "b"), compact=True)
    warm = encode_chat_cached(tokenizer, convs, TokenCountCache(tmp_path / "a"), compact=True)
    assert [a.tolist() for a in cold] == [b.tolist() for b in serial] == [w.tolist() for w in warm]


def test_worker_processes_do_not_inherit_the_clis_signal_handlers(
    tokenizer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """The CLI turns SIGTERM into KeyboardInterrupt; a forked tokenizer worker that inherited that
    would print a traceback when the pool shuts it down after a clean run."""
    from costguard.serving import interrupts

    convs = conversations(300)
    monkeypatch.setattr(tokenization.workers, "_PARALLEL_MIN", 64)
    monkeypatch.setattr(tokenization.workers, "_ENCODE_CHUNK", 50)
    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "2")
    with interrupts.installed():
        for _ in range(8):
            encode_packed(tokenizer, convs, [None] * len(convs), range(len(convs)))
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_a_background_write_is_read_back_by_the_next_cache_of_the_file(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A run's new ids are written by a forked process; a later run in this process waits for
    it and finds every one of them (no tokenizing again)."""
    convs = conversations(300)
    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "2")
    cache = TokenCountCache(tmp_path / "c")
    first = encode_chat_cached(tokenizer, convs, cache, compact=True, background_write=True)
    cache.close()
    path = tmp_path / "c" / "tokens.sqlite"
    assert path in tokenization.cache._WRITERS  # the writer was forked, not run here
    calls: list[int] = []
    real = tokenizer.encode_chat_many

    def counting(messages, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(messages))
        return real(messages, **kwargs)

    monkeypatch.setattr(tokenizer, "encode_chat_many", counting)
    again = TokenCountCache(tmp_path / "c")
    assert path not in tokenization.cache._WRITERS  # reaped by the new cache of the same file
    second = encode_chat_cached(tokenizer, convs, again, compact=True)
    assert calls == [] and len(again) == len({str(c) for c in convs})
    assert [a.tolist() for a in first] == [b.tolist() for b in second]


def test_a_process_does_not_exit_before_its_background_write(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import os, sys
        os.environ["COSTGUARD_TOKENIZER_WORKERS"] = "2"
        from costguard.text.tokenization import TokenCountCache
        cache = TokenCountCache(sys.argv[1])
        rows = [(f"k{i:06d}", bytes(4000)) for i in range(20000)]
        cache.put_packed_in_background("fp", rows)
        print(len(__import__("costguard.text.tokenization.cache").text.tokenization.cache._WRITERS))
        """
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "c")],
        env={**__import__("os").environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "1", out.stderr  # forked, and pending when the script ended
    with TokenCountCache(tmp_path / "c") as cache:
        assert len(cache) == 20000


def test_finished_background_writers_are_reaped_by_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived process (a pytest session) keeps no zombie writers."""
    import time

    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "2")
    first = TokenCountCache(tmp_path / "a")
    first.put_packed_in_background("fp", [("k", bytes(8))])
    pid = tokenization.cache._WRITERS[first.path]
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":  # until it is done
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = TokenCountCache(tmp_path / "b")
    second.put_packed_in_background("fp", [("k", bytes(8))])
    assert first.path not in tokenization.cache._WRITERS
    assert not Path(f"/proc/{pid}").exists()  # reaped
    assert TokenCountCache(tmp_path / "a").get_many("fp", ["k"], raw=True) == {"k": bytes(8)}
