"""Where a Hugging Face tokenizer always splits a text, so that the pieces can be tokenized alone.

Rendered prompts repeat most of their text: the template's markers and, above all, the system
prompt shared by a suite's requests. `tokenizers` itself cuts a text at its non-normalized added
tokens first and normalizes and pre-tokenizes each piece on its own; a whitespace-splitting
pre-tokenizer (BERT's, `Whitespace`, `WhitespaceSplit`) also never lets a token cross a line
break. Cut at those places, the ids of a text are the concatenation of the ids of its pieces, so
a batch tokenizes each distinct piece once (`encode_batch_segmented`).

The rules are read from the tokenizer's own JSON and only the configurations proven equal (by
the property tests against whole-text encoding) are segmented; anything else, e.g. SentencePiece
`Metaspace` (whose "first" prepend depends on where a piece starts), added tokens that strip
neighbouring whitespace, or truncation, is tokenized whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Normalizers that act on each character on its own (NFC's composition never crosses a line
# break or an added token: both are starters).
_LOCAL_NORMALIZERS = frozenset(
    {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}
)
# Pre-tokenizers that split on whitespace and drop it: no token spans a line break.
_WHITESPACE_SPLITTERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
# Pre-tokenizers that only split a piece further, looking at single characters.
_CHAR_SPLITTERS = frozenset({"Punctuation", "Digits"})

# Below this share of repeated text, tokenizing the texts whole is as quick.
_MIN_SAVING = 0.2


def _types(node: Any, key: str) -> list[dict] | None:
    """The flattened steps of a normalizer/pre-tokenizer config; None for an unknown shape."""
    if node is None:
        return []
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return None
    if node["type"] == "Sequence":
        steps: list[dict] = []
        for child in node.get(key) or []:
            inner = _types(child, key)
            if inner is None:
                return None
            steps.extend(inner)
        return steps
    return [node]


def _pre_tokenizer_kind(config: Any) -> str | None:
    """ "lines" (cut at line breaks too), "pieces" (only at added tokens) or None (never)."""
    steps = _types(config, "pretokenizers")
    if steps is None:
        return None
    kinds = {step["type"] for step in steps}
    if kinds & _WHITESPACE_SPLITTERS and kinds <= _WHITESPACE_SPLITTERS | _CHAR_SPLITTERS:
        return "lines"
    for step in steps:
        # Each piece is pre-tokenized on its own either way; only a step that looks at where a
        # piece starts (Metaspace's "first" prepend, ByteLevel's prefix space) could differ.
        if step["type"] == "ByteLevel" and step.get("add_prefix_space", True):
            return None
        if step["type"] not in _WHITESPACE_SPLITTERS | _CHAR_SPLITTERS | {"ByteLevel", "Split"}:
            return None
    return "pieces"


@dataclass(frozen=True)
class Segmenter:
    """Where to cut: at line breaks (dropped) if `lines`, and around the added tokens `specials`
    matches (kept as pieces); `starts` holds their first characters, a quick test before the
    regex."""

    lines: bool
    specials: re.Pattern[str] | None
    starts: tuple[str, ...]

    def pieces(self, text: str) -> list[str]:
        parts = text.split("\n") if self.lines else [text]
        if self.specials is None:
            return [p for p in parts if p]
        out: list[str] = []
        split, starts = self.specials.split, self.starts
        for part in parts:
            if not part:
                continue
            if any(start in part for start in starts):
                out.extend(p for p in split(part) if p)
            else:
                out.append(part)
        return out


def segmenter_for(tokenizer: Any) -> Segmenter | None:
    """Where texts may be cut for this `tokenizers.Tokenizer`, or None to tokenize them whole."""
    try:
        if tokenizer.truncation or tokenizer.padding:
            return None
        added = list(tokenizer.get_added_tokens_decoder().values())
        steps = [
            None if part is None else json.loads(part.__getstate__())
            for part in (tokenizer.pre_tokenizer, tokenizer.normalizer)
        ]
    except Exception:
        return None
    if any(t.lstrip or t.rstrip or t.single_word for t in added):
        return None
    kind = _pre_tokenizer_kind(steps[0])
    normalizers = _types(steps[1], "normalizers")
    if kind is None or normalizers is None:
        return None
    if any(step["type"] not in _LOCAL_NORMALIZERS for step in normalizers):
        return None
    literal = sorted(
        {t.content for t in added if not t.normalized and t.content}, key=len, reverse=True
    )
    # Longest first: at one position the regex takes the first alternative that matches, as
    # `tokenizers` takes the longest (both take the leftmost position).
    specials = re.compile("(" + "|".join(map(re.escape, literal)) + ")") if literal else None
    # A normalized added token with a space could match across a line break (BERT's normalizer
    # turns "\n" into " ").
    lines = kind == "lines" and not any(
        "\n" in t.content or (t.normalized and any(c.isspace() for c in t.content)) for t in added
    )
    if not lines and specials is None:
        return None
    return Segmenter(lines, specials, tuple(sorted({content[0] for content in literal})))


def encode_batch_segmented(
    segmenter: Segmenter,
    texts: Sequence[str],
    encode_batch: Callable[[list[str]], list[list[int]]],
) -> list[list[int]]:
    """The ids of each text, tokenizing each distinct piece (cut by `segmenter`) once.

    Falls back to whole texts when fewer than a fifth of the characters repeat."""
    cut = segmenter.pieces
    pieces_of: list[list[str]] = []
    distinct: dict[str, None] = {}
    for text in texts:
        pieces = cut(text)
        pieces_of.append(pieces)
        for piece in pieces:
            distinct[piece] = None
    total = sum(map(len, texts))
    if not total or sum(map(len, distinct)) > (1.0 - _MIN_SAVING) * total:
        return encode_batch(list(texts))
    ids_of = dict(zip(distinct, encode_batch(list(distinct)), strict=True))
    out: list[list[int]] = []
    for pieces in pieces_of:
        if len(pieces) == 1:
            out.append(list(ids_of[pieces[0]]))
            continue
        ids: list[int] = []
        for piece in pieces:
            ids += ids_of[piece]
        out.append(ids)
    return out
