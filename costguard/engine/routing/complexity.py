"""Embedding routers: a 0-10 complexity score from sentence embeddings, then thresholds -> tier.

- `ComplexityRouter` compares each prompt with calibration exemplars written in the config
  (`simple:` / `complex:`, or one list per tier): per class, the mean of the top-k cosine
  similarities; a softmax over the classes; the score is 10 x the expected class position
  (0 = simplest class, 1 = most complex).
- `KnnRouter` lets the k most similar labelled fixtures vote (similarity-weighted mean of their
  label's position). A prompt never votes for itself: neighbours with the same text are skipped,
  so scoring the training fixtures is a leave-one-out estimate, not a lookup.

The scoring math (`exemplar_scores`, `knn_scores`, `tier_for_score`) is pure numpy over
L2-normalised vectors, so it is tested without a model. Embeddings come from
`costguard.text.embeddings.Embedder` (on-disk cache shared with the semantic cache): a warm run
imports neither torch nor sentence-transformers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costguard.engine.routing.router import RouteDecision, RouteInput, RouterOverhead
from costguard.errors import ConfigError
from costguard.model.config import (
    ComplexityRouterConfig,
    EmbeddingRouterConfig,
    KnnRouterConfig,
    ScoreThreshold,
)
from costguard.model.fixtures import Fixture, message_text

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from costguard.text.embeddings import Embedder, EmbeddingCache

SCORE_MAX = 10.0
_CHUNK = 2048  # query rows per similarity block: bounds memory for 100k-fixture runs
OVERHEAD_MIN_PROBES = 8
OVERHEAD_BUDGET_S = 3.0  # probes stop after this (at least OVERHEAD_MIN_PROBES are taken)


def _np() -> Any:
    import numpy

    return numpy


# -- pure scoring math --------------------------------------------------------------------------


def class_positions(n_classes: int) -> list[float]:
    """Each class's place on the 0..1 complexity axis, simplest first."""
    return [i / (n_classes - 1) for i in range(n_classes)]


def exemplar_scores(
    vectors: Any, exemplars: Sequence[Any], *, top_k: int = 3, temperature: float = 0.05
) -> np.ndarray:
    """Scores 0..10 for `vectors` (n, d) against exemplar matrices per class (simplest first).

    Per class: the mean of the `top_k` highest cosine similarities (fewer when the class has
    fewer exemplars). A softmax over the classes at `temperature` turns them into weights; the
    score is 10 x the weighted mean class position.
    """
    np = _np()
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (n, d), got shape {x.shape}")
    if len(exemplars) < 2:
        raise ValueError("need at least two exemplar classes")
    positions = np.asarray(class_positions(len(exemplars)), dtype=np.float64)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK):
        block = x[start : start + _CHUNK]
        sims = np.empty((block.shape[0], len(exemplars)), dtype=np.float64)
        for c, ex in enumerate(exemplars):
            s = block @ np.asarray(ex, dtype=np.float32).T
            k = min(top_k, s.shape[1])
            top = (
                np.partition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k :]
                if k < s.shape[1]
                else s
            )
            sims[:, c] = top.mean(axis=1)
        logits = sims / temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        out[start : start + block.shape[0]] = SCORE_MAX * (weights @ positions)
    return out


def knn_scores(
    vectors: Any,
    train_vectors: Any,
    train_positions: Sequence[float],
    *,
    k: int = 7,
    query_keys: Sequence[Any] | None = None,
    train_keys: Sequence[Any] | None = None,
) -> np.ndarray:
    """Scores 0..10: the similarity-weighted mean position (0..1) of each vector's k nearest
    training vectors. Where keys are given, a training row with the query's key is skipped."""
    np = _np()
    x = np.asarray(vectors, dtype=np.float32)
    t = np.asarray(train_vectors, dtype=np.float32)
    pos = np.asarray(train_positions, dtype=np.float64)
    if t.shape[0] != pos.shape[0]:
        raise ValueError("one position per training vector")
    if t.shape[0] == 0:
        raise ValueError("no training vectors")
    same: dict[Any, list[int]] = {}
    if query_keys is not None and train_keys is not None:
        for j, key in enumerate(train_keys):
            same.setdefault(key, []).append(j)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK):
        block = x[start : start + _CHUNK]
        sims = (block @ t.T).astype(np.float64)
        if same:
            assert query_keys is not None
            for r in range(block.shape[0]):
                own = same.get(query_keys[start + r])
                if own:
                    sims[r, own] = -np.inf
        kk = min(k, t.shape[0])
        idx = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(sims, idx, axis=1)
        valid = np.isfinite(top)
        # Similarity weights: nearer neighbours count more; a floor keeps every neighbour's vote.
        w = np.where(valid, np.clip(top, 1e-3, None), 0.0)
        total = w.sum(axis=1)
        votes = (w * pos[idx]).sum(axis=1)
        out[start : start + block.shape[0]] = np.where(
            total > 0, SCORE_MAX * votes / np.maximum(total, 1e-12), SCORE_MAX / 2
        )
    return out


def tier_for_score(
    score: float, thresholds: Sequence[ScoreThreshold], default_tier: str
) -> tuple[str, str]:
    """(tier, reason) for a score: the first threshold it does not exceed, else the default tier."""
    for t in thresholds:
        if score <= t.max_score:
            return t.tier, f"score {score:.2f} <= {t.max_score:g}"
    return default_tier, f"score {score:.2f} above every threshold"


# -- routers --------------------------------------------------------------------------------------


def routed_text(fixture: Fixture, mode: str, max_chars: int | None = None) -> str:
    """The text an embedding router scores: the last user message, or the whole conversation.

    Past `max_chars`, the first and last halves are kept: the encoder reads only its first ~256
    tokens, and a long prompt's instruction (top) or question (bottom, after RAG context) would
    otherwise be cut off.
    """
    if mode == "last_user":
        text = fixture.last_user_text
    else:
        text = "\n\n".join(
            message_text(m) for m in fixture.messages if m["role"] not in ("system", "developer")
        )
    if max_chars is not None and len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + "\n...\n" + text[-half:]
    return text


def model_name(config: EmbeddingRouterConfig, root: Path) -> str:
    """The router's model as the Embedder takes it: a relative model path is relative to the config file."""
    local = Path(config.model).expanduser()
    if not local.is_absolute() and (root / local).is_dir():
        return str(root / local)
    return config.model


def make_embedder(
    config: EmbeddingRouterConfig, *, root: Path, cache: EmbeddingCache | None
) -> Embedder:
    """An Embedder for a router config without a project (a project shares its own: `Project.embedder`)."""
    from costguard.text.embeddings import Embedder

    return Embedder(model_name(config, root), cache=cache, precision=config.precision)


@dataclass
class OverheadStore:
    """Single-request scoring latencies measured in an earlier run, per embedding model.

    Measuring needs the model loaded (torch imported); a warm run, which never loads it,
    reports the last measurement for the same model instead, labelled as such.
    """

    directory: Path | None

    def _path(self, model_id: str) -> Path | None:
        if self.directory is None:
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_.@+" else "_" for ch in model_id)
        return self.directory / f"{safe}.json"

    def load(self, model_id: str) -> dict[str, Any] | None:
        path = self._path(model_id)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if (
            not isinstance(data, dict)
            or data.get("model_id") != model_id
            or not isinstance(data.get("samples_s"), list)
        ):
            return None
        return data

    def save(self, model_id: str, data: dict[str, Any]) -> None:
        path = self._path(model_id)
        if path is None:
            return
        from costguard.model.files import write_atomic

        try:
            write_atomic(path, json.dumps({"model_id": model_id, **data}))
        except OSError:
            pass  # a read-only cache directory only loses the stored measurement


class EmbeddingRouter:
    """Embed -> score -> thresholds; subclasses provide `_score(vectors, texts)`."""

    kind = "embedding"
    score_range = (0.0, SCORE_MAX)

    def __init__(
        self, config: EmbeddingRouterConfig, embedder: Embedder, *, overhead_dir: Path | None = None
    ) -> None:
        self.config = config
        self.embedder = embedder
        self.overhead_store = OverheadStore(overhead_dir)

    @property
    def description(self) -> str:
        return f"{self.kind} router on {self.embedder.model_id}"

    def texts(self, batch: Sequence[RouteInput]) -> list[str]:
        return [
            routed_text(item.fixture, self.config.text, self.config.max_chars) for item in batch
        ]

    def scores(self, texts: Sequence[str]) -> list[float]:
        """0..10 scores for texts (embeddings through the cache; the model loads only on a miss)."""
        if not texts:
            return []
        vectors = self.embedder.embed(list(texts))
        return [float(s) for s in self._score(vectors, list(texts))]

    def _score(self, vectors: Any, texts: list[str]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def route(self, batch: Sequence[RouteInput]) -> list[RouteDecision]:
        scores = self.scores(self.texts(batch))
        out = []
        for s in scores:
            tier, reason = tier_for_score(s, self.config.thresholds, self.config.default_tier)
            out.append(RouteDecision(tier, reason, s))
        return out

    # -- overhead -----------------------------------------------------------------------------
    def measure_overhead(self, batch: Sequence[RouteInput]) -> RouterOverhead | None:
        """Latency of scoring one request as a deployed router would: embed it alone, then score.

        Measured only when this run loaded the model anyway (a cold run); otherwise the last
        measurement stored for this model is reported, labelled with when it was taken.
        """
        model_id = self.embedder.model_id
        if getattr(self.embedder, "_model", None) is None:
            stored = self.overhead_store.load(model_id)
            if stored is None:
                return RouterOverhead(
                    samples_s=[],
                    source="not_measured",
                    method="the embedding model was not loaded in this run (every prompt was cached) and no "
                    "earlier measurement is stored; a run with an empty embedding cache measures it",
                )
            if stored.get("cpus") != os.cpu_count() or stored.get("precision") not in (
                None,
                self.embedder.precision,
            ):
                return RouterOverhead(
                    samples_s=[],
                    source="not_measured",
                    method=f"the stored measurement was taken under other conditions "
                    f"({stored.get('cpus', '?')} CPUs, {stored.get('precision', '?')}; here "
                    f"{os.cpu_count()} CPUs, {self.embedder.precision}) and is not reused; a run "
                    "with an empty embedding cache measures it",
                )
            conditions = dict(stored.get("conditions") or {})
            conditions.setdefault("cpus", stored.get("cpus"))
            conditions.setdefault("measured_at", stored.get("measured_at"))
            return RouterOverhead(
                samples_s=[float(x) for x in stored["samples_s"]],
                source="stored",
                method=f"{stored.get('method', 'single-request embedding + scoring')}; measured earlier "
                f"({stored.get('measured_at', '?')}, {stored.get('cpus', '?')} CPUs, load average "
                f"{conditions.get('load_average_1m', '?')}) and stored with the embedding cache, "
                "not under this run's conditions",
                cpu_samples_s=[float(x) for x in stored.get("cpu_samples_s") or []],
                repeats=int(stored.get("repeats") or 1),
                conditions=conditions,
            )
        texts = self.texts(batch)
        if not texts:
            return None
        from costguard.engine.routing.router import (
            OVERHEAD_REPEATS,
            machine_conditions,
            time_probe,
        )

        samples: list[float] = []
        cpu_samples: list[float] = []
        begun = time.perf_counter()
        for text in texts:
            # A busy machine makes single requests slow: bound what the measurement adds to a run.
            if (
                len(samples) >= OVERHEAD_MIN_PROBES
                and time.perf_counter() - begun > OVERHEAD_BUDGET_S
            ):
                break

            def work(text: str = text) -> None:
                self._score(self.embedder.encode_uncached([text]), [text])

            wall_s, cpu_s = time_probe(work, OVERHEAD_REPEATS)
            samples.append(wall_s)
            cpu_samples.append(cpu_s)
        method = (
            f"single-request embedding + scoring, {len(samples)} probe prompts, one at a time, "
            f"min of {OVERHEAD_REPEATS} runs each, {self.embedder.precision} on {os.cpu_count()} CPUs"
        )
        conditions = machine_conditions()
        self.overhead_store.save(
            model_id,
            {
                "samples_s": samples,
                "cpu_samples_s": cpu_samples,
                "repeats": OVERHEAD_REPEATS,
                "method": method,
                "cpus": os.cpu_count(),
                "precision": self.embedder.precision,
                "measured_at": conditions["measured_at"],
                "conditions": conditions,
            },
        )
        return RouterOverhead(
            samples_s=samples,
            source="measured",
            method=method,
            cpu_samples_s=cpu_samples,
            repeats=OVERHEAD_REPEATS,
            conditions=conditions,
        )


class ComplexityRouter(EmbeddingRouter):
    kind = "complexity"

    def __init__(
        self,
        config: ComplexityRouterConfig,
        embedder: Embedder,
        *,
        overhead_dir: Path | None = None,
    ) -> None:
        super().__init__(config, embedder, overhead_dir=overhead_dir)
        self.complexity = config
        self.classes = config.classes
        self._exemplar_vectors: list[Any] | None = None

    def _exemplars(self) -> list[Any]:
        if self._exemplar_vectors is None:
            lists = [self.complexity.exemplars[c] for c in self.classes]
            flat = [t for texts in lists for t in texts]
            vectors = self.embedder.embed(flat)
            out, at = [], 0
            for texts in lists:
                out.append(vectors[at : at + len(texts)])
                at += len(texts)
            self._exemplar_vectors = out
        return self._exemplar_vectors

    def _score(self, vectors: Any, texts: list[str]) -> Any:
        return exemplar_scores(
            vectors,
            self._exemplars(),
            top_k=self.complexity.top_k,
            temperature=self.complexity.temperature,
        )


class KnnRouter(EmbeddingRouter):
    kind = "knn"

    def __init__(
        self,
        config: KnnRouterConfig,
        embedder: Embedder,
        training: Sequence[Fixture],
        *,
        overhead_dir: Path | None = None,
    ) -> None:
        super().__init__(config, embedder, overhead_dir=overhead_dir)
        self.knn = config
        positions = dict(zip(config.classes, class_positions(len(config.classes)), strict=True))
        texts, pos = [], []
        for fx in training:
            if fx.label is None:
                continue
            if fx.label not in positions:
                raise ConfigError(
                    f"label {fx.label!r} is not one of the kNN router's classes ({', '.join(config.classes)})",
                    file=fx.file,
                    line=fx.line,
                    key="label",
                )
            texts.append(routed_text(fx, config.text, config.max_chars))
            pos.append(positions[fx.label])
        if len(set(pos)) < 2:
            raise ConfigError(
                "the kNN router needs labelled training fixtures of at least two classes "
                f"({', '.join(config.classes)}); found {len(texts)} labelled fixture(s)",
                key="router.train",
            )
        self.train_texts = texts
        self.train_positions = pos
        self._train_vectors: Any = None
        self._train_keys: list[bytes] | None = None

    def _score(self, vectors: Any, texts: list[str]) -> Any:
        from costguard.text.embeddings import text_key

        if self._train_vectors is None:
            self._train_vectors = self.embedder.embed(self.train_texts)
            self._train_keys = [text_key(t) for t in self.train_texts]
        return knn_scores(
            vectors,
            self._train_vectors,
            self.train_positions,
            k=self.knn.k,
            query_keys=[text_key(t) for t in texts],
            train_keys=self._train_keys,
        )
