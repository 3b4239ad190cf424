"""The `tokenizer:` block of a tier in costguard.yaml (loading it is `costguard.text.tokenization`)."""

from __future__ import annotations

from pydantic import model_validator

from costguard.model.yamlio import StrictModel


class TokenizerSpec(StrictModel):
    """The `tokenizer:` block of a tier in costguard.yaml."""

    hf: str | None = None
    """Local dir holding tokenizer.json (+ tokenizer_config.json), a path to tokenizer.json,
    or an HF model id (`org/name`, optionally `@revision`) resolved from the local HF cache."""
    tiktoken: str | None = None
    """Encoding name resolved via TIKTOKEN_CACHE_DIR, or a path to a .tiktoken BPE file."""
    chat_template: str | None = None
    """Path to a jinja chat template file; overrides the tokenizer's own. Required for tiktoken."""
    special_tokens: dict[str, int] | None = None
    """tiktoken only: extra special tokens (e.g. Llama-3 style `<|begin_of_text|>`)."""
    approximate_fallback: bool = False
    """If the tokenizer cannot be loaded, count ~chars/4 and label every count approximate."""
    exact: bool | None = None
    """Whether these are the model's own tokenizer and chat template, so counts are exact.
    Default: true for `hf:` (the model's tokenizer.json), false for `tiktoken:` (an encoding and a
    hand-written chat layout standing in for the model's). Declare `exact: true` on a tiktoken
    tokenizer only when it is the model's own encoding and template."""

    @model_validator(mode="after")
    def _check(self) -> TokenizerSpec:
        if (self.hf is None) == (self.tiktoken is None):
            raise ValueError("set exactly one of `hf:` or `tiktoken:`")
        if self.tiktoken is not None and not self.chat_template:
            raise ValueError(
                "`tiktoken:` needs `chat_template:` (path to the model's jinja chat template file)"
            )
        if self.hf is not None and self.special_tokens:
            raise ValueError(
                "`special_tokens:` applies to `tiktoken:` only (tokenizer.json declares its own)"
            )
        return self
