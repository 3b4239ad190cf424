"""`load_tokenizer`: a tier's `tokenizer:` spec -> its ChatTokenizer (or a labelled approximation
when the user opted in)."""

from __future__ import annotations

from pathlib import Path

from costguard.errors import TokenizerError
from costguard.model.tokenizer import TokenizerSpec
from costguard.text.tokenization.chat_tokenizer import (
    ChatTokenizer,
    _load_approximate,
    _resolve_path,
)
from costguard.text.tokenization.hub import _load_hf
from costguard.text.tokenization.templates import _error
from costguard.text.tokenization.tiktoken_files import _load_tiktoken


def load_tokenizer(
    spec: TokenizerSpec, *, base_dir: Path, where: str, allowed: tuple[Path, ...] | None = None
) -> ChatTokenizer:
    """Load the tokenizer and chat template a spec names, from local files only.

    `where` locates the spec for error messages (e.g. "costguard.yaml:14: tiers[0].tokenizer").
    Raises TokenizerError (one line, says how to fix it) unless `approximate_fallback` is set,
    in which case a ChatTokenizer with `exact=False` is returned. With `allowed` (a project's
    `allowed_paths:`), a `chat_template:` file must be inside `base_dir` (the project root) or
    one of those directories.
    """
    base_dir = Path(base_dir)
    if spec.chat_template and allowed is not None:
        from costguard.model.paths import within

        tpl = _resolve_path(spec.chat_template, base_dir)
        if not within(tpl, base_dir, allowed):
            raise _error(
                where,
                f"chat_template {tpl} is outside the project root {base_dir}; costguard only "
                "reads files inside it (list the directory under `allowed_paths:` in "
                "costguard.yaml if it is meant)",
            )
    try:
        if spec.hf is not None:
            tok = _load_hf(spec, base_dir, where)
        else:
            tok = _load_tiktoken(spec, base_dir, where)
    except TokenizerError as exc:
        if not spec.approximate_fallback:
            raise
        return _load_approximate(spec, base_dir, where, why=exc.message)
    own = spec.exact if spec.exact is not None else spec.hf is not None
    if not own:
        tok.exactness = "stand-in"
        tok.description += " (a stand-in for the model's own tokenizer: approximate counts)"
    return tok
