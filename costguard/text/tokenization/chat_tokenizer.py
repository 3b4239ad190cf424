"""`ChatTokenizer`: a chat template plus a tokenizer, counting prompts as vLLM does; the Hugging
Face, tiktoken and labelled chars/4 approximate kinds."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costguard.errors import TokenizerError
from costguard.model.limits import limits
from costguard.model.tokenizer import TokenizerSpec
from costguard.text.tokenization.segments import encode_batch_segmented, segmenter_for
from costguard.text.tokenization.templates import (
    _ChatTemplate,
    _read_template_file,
    _template_variables,
)

logger = logging.getLogger("costguard.text.tokenization")


# Bump when rendering/normalisation semantics change: it is part of every fingerprint, so
# cached token ids computed by an older costguard are not reused.
RENDER_VERSION = "2"


_APPROX_HINT = "or set approximate_fallback: true to accept approximate counts"


class ChatTokenizer:
    """A loaded tokenizer plus chat template, ready to count (see `load_tokenizer`)."""

    fingerprint: str
    """Stable id (sha256 over tokenizer file bytes, chat template text and kind): a cache key."""
    description: str
    exactness: str = "exact"
    """"exact": the model's own tokenizer and chat template; "stand-in": another encoding or a
    hand-written layout (counts are approximate); "fallback": chars/4 (approximate)."""
    kind: str = ""
    sources: tuple[Path, ...] = ()
    """The files it was loaded from (tokenizer, its config, the chat template): what a cached
    projection depends on beyond the fixtures and the config."""

    @property
    def exact(self) -> bool:
        """Counts equal the server's only with the model's own tokenizer and template."""
        return self.exactness == "exact"

    @property
    def input_source(self) -> str:
        """How a prompt count from this tokenizer is labelled in reports."""
        return "exact" if self.exact else "approximate"

    def __init__(self, *, template: _ChatTemplate, fingerprint: str, description: str):
        self._template = template
        self.fingerprint = fingerprint
        self.description = description

    def __repr__(self) -> str:
        return f"<ChatTokenizer {self.description}>"

    # -- to implement ------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        return [self._encode(t) for t in texts]

    # -- public ------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], *, tools: list | None = None) -> str:
        """The prompt text vLLM would tokenize for these chat messages."""
        return self._template.render(messages, tools)

    def encode_chat(self, messages: list[dict], *, tools: list | None = None) -> list[int]:
        return self._encode(self.render_chat(messages, tools=tools))

    def encode_chat_many(
        self,
        messages_list: Sequence[list[dict]],
        *,
        tools_list: Sequence[list | None] | None = None,
    ) -> list[list[int]]:
        """encode_chat for many conversations, tokenized in one batch."""
        tools_seq = tools_list if tools_list is not None else [None] * len(messages_list)
        bounds = limits()
        render = self._template.render
        texts = [render(m, t, bounds) for m, t in zip(messages_list, tools_seq, strict=True)]
        return self._encode_many(texts) if texts else []

    def count_chat(self, messages: list[dict], *, tools: list | None = None) -> int:
        return len(self.encode_chat(messages, tools=tools))

    def encode_text(self, text: str) -> list[int]:
        """Plain text (e.g. completion text): no special tokens added."""
        return self._encode(text)

    def count_text(self, text: str) -> int:
        return len(self._encode(text))


class _HFChatTokenizer(ChatTokenizer):
    kind = "hf"

    def __init__(self, tokenizer: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self._tok = tokenizer
        self._batch = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
        self._segments = segmenter_for(tokenizer)

    def _encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def _encode_whole(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._batch(texts, add_special_tokens=False)]

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        if self._segments is None:
            return self._encode_whole(texts)
        return encode_batch_segmented(self._segments, texts, self._encode_whole)


class _TiktokenChatTokenizer(ChatTokenizer):
    kind = "tiktoken"

    def __init__(self, encoding: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self._enc = encoding

    def _encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special="all")

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_batch(texts, allowed_special="all")


class _ApproxChatTokenizer(ChatTokenizer):
    """~chars/4. Ids are stable pseudo-ids (a hash of each 4-character chunk), so equal
    prefixes still give equal id prefixes for the prefix-cache simulation."""

    kind = "approximate"
    exactness = "fallback"

    def _encode(self, text: str) -> list[int]:
        return [
            zlib.crc32(text[i : i + 4].encode("utf-8", "surrogatepass")) & 0x7FFFFFFF
            for i in range(0, len(text), 4)
        ]

    def count_text(self, text: str) -> int:
        return math.ceil(len(text) / 4)


# A generic ChatML template for the approximate fallback when no template can be read.
_FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _resolve_path(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(base_dir) / path


def _load_approximate(
    spec: TokenizerSpec, base_dir: Path, where: str, *, why: str
) -> ChatTokenizer:
    source, name = _FALLBACK_TEMPLATE, "(built-in ChatML)"
    if spec.chat_template:
        try:
            path = _resolve_path(spec.chat_template, base_dir)
            source, name = _read_template_file(path, where=where), str(path)
        except TokenizerError:
            pass
    try:
        template = _ChatTemplate(source, name=name, where=where, variables=_template_variables({}))
    except TokenizerError:
        template = _ChatTemplate(
            _FALLBACK_TEMPLATE,
            name="(built-in ChatML)",
            where=where,
            variables=_template_variables({}),
        )
    fingerprint = _sha256("approximate", RENDER_VERSION, template.source)
    logger.warning("%s: using approximate token counts (chars/4): %s", where, why)
    return _ApproxChatTokenizer(
        template=template,
        fingerprint=fingerprint,
        description=f"approximate (chars/4): {why}",
    )
