"""`load_tokenizer`: a tier's `tokenizer:` spec -> its ChatTokenizer (or a labelled approximation
when the user opted in)."""

from __future__ import annotations

from pathlib import Path

from costguard.errors import TokenizerError
from costguard.model.tokenizer import TokenizerSpec
from costguard.text.tokenization.chat_tokenizer import ChatTokenizer, _load_approximate
from costguard.text.tokenization.hub import _load_hf
from costguard.text.tokenization.tiktoken_files import _load_tiktoken


def load_tokenizer(spec: TokenizerSpec, *, base_dir: Path, where: str) -> ChatTokenizer:
    """Load the tokenizer and chat template a spec names, from local files only.

    `where` locates the spec for error messages (e.g. "costguard.yaml:14: tiers[0].tokenizer").
    Raises TokenizerError (one line, says how to fix it) unless `approximate_fallback` is set,
    in which case a ChatTokenizer with `exact=False` is returned.
    """
    base_dir = Path(base_dir)
    try:
        if spec.hf is not None:
            return _load_hf(spec, base_dir, where)
        return _load_tiktoken(spec, base_dir, where)
    except TokenizerError as exc:
        if not spec.approximate_fallback:
            raise
        return _load_approximate(spec, base_dir, where, why=exc.message)
