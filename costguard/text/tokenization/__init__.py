"""Exact prompt token counts, the way vLLM computes `usage.prompt_tokens`.

vLLM renders the model's chat template (jinja2, Hugging Face `apply_chat_template` semantics)
with `add_generation_prompt=True` and tokenizes the rendered text with
`add_special_tokens=False`; special tokens written in the template text (`<|begin_of_text|>`,
`<|im_start|>`, ...) are still matched as single special tokens. This package does the same
offline, from local files only:

- `hf:`       a Hugging Face fast tokenizer (`tokenizer.json`, plus `tokenizer_config.json`
              for the chat template and bos/eos), from a directory, a file, or the local HF cache;
- `tiktoken:` a tiktoken BPE file, by encoding name through `TIKTOKEN_CACHE_DIR` (tiktoken's own
              cache layout) or by path, with a chat template file.

Nothing here downloads. A tokenizer that cannot be loaded is a `TokenizerError` that says how to
fix it, or, if the user opted in with `approximate_fallback: true`, a clearly labelled
chars/4 approximation.

`tokenizers`, `tiktoken` and `jinja2` are imported lazily (inside functions) so that importing
this package stays cheap for the CLI.

`TokenCountCache` keeps prompt token ids in SQLite keyed by (tokenizer fingerprint, hash of the
messages) so that a re-run only tokenizes what changed.
"""

from __future__ import annotations

from costguard.model.tokenizer import TokenizerSpec
from costguard.text.tokenization.cache import TokenCountCache, encode_chat_cached, messages_key
from costguard.text.tokenization.chat_tokenizer import RENDER_VERSION, ChatTokenizer, logger
from costguard.text.tokenization.hub import (
    HUB_TOKENIZER_FILES,
    fetch_hub_tokenizer,
    hf_hub_cache_dir,
    hub_tokenizer_cached,
    hub_tokenizer_id,
)
from costguard.text.tokenization.loading import load_tokenizer
from costguard.text.tokenization.templates import vllm_conversation, vllm_tool_dicts
from costguard.text.tokenization.workers import encode_packed, tokenizer_workers

__all__ = [
    "TokenizerSpec",
    "ChatTokenizer",
    "HUB_TOKENIZER_FILES",
    "RENDER_VERSION",
    "TokenCountCache",
    "encode_chat_cached",
    "encode_packed",
    "fetch_hub_tokenizer",
    "hf_hub_cache_dir",
    "hub_tokenizer_cached",
    "hub_tokenizer_id",
    "load_tokenizer",
    "logger",
    "messages_key",
    "tokenizer_workers",
    "vllm_conversation",
    "vllm_tool_dicts",
]
