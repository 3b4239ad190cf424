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
    monkeypatch.setattr(tokenization.cache, "_PARALLEL_MIN", 64)
    monkeypatch.setattr(tokenization.cache, "_ENCODE_CHUNK", 50)
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
    monkeypatch.setattr(tokenization.cache, "_PARALLEL_MIN", 64)
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
    monkeypatch.setattr(tokenization.cache, "_PARALLEL_MIN", 64)
    monkeypatch.setattr(tokenization.cache, "_ENCODE_CHUNK", 50)
    monkeypatch.setenv("COSTGUARD_TOKENIZER_WORKERS", "2")
    with interrupts.installed():
        for _ in range(8):
            encode_packed(tokenizer, convs, [None] * len(convs), range(len(convs)))
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
