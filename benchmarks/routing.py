"""Benchmark the complexity router: cold and warm routing throughput, per-prompt routing latency.

    python benchmarks/routing.py                    # cold 1000 prompts, warm 20k and 100k
    python benchmarks/routing.py --cold 500 --warm-sizes 20000
    python benchmarks/routing.py --skip-cold        # warm rows only (never imports torch)

The router is the bundled example's (costguard.yaml: all-MiniLM-L6-v2, its exemplars and
thresholds). Prompts are the bundled fixtures followed by generated short and medium chat
prompts (benchmarks/embeddings.py), so lengths are realistic.

Cold rows route prompts none of which is cached (a fresh on-disk cache each time), after the
model is loaded (import and load times are printed separately): `ComplexityRouter.route` with
the default float32 (token-bucketed batches) and with bf16 autocast where the CPU has native
bf16 units, plus a plain `SentenceTransformer.encode` + scoring baseline. The bf16 row also
reports whether its decisions on the bundled fixtures are identical to float32's.

Warm rows run in a fresh interpreter, as a warm CI run would: every prompt's vector is in the
on-disk cache (synthetic unit vectors: the routing math does not care), and the child times
`route()` over all of them including the cache load, a repeat, and `route([one])` latency
percentiles; it also reports whether torch got imported (it must not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_prompts(n: int, seed: int = 0) -> list[str]:
    """Realistic short and medium chat prompts from benchmarks/embeddings.py; without it, the
    bundled fixtures' user messages, each with a distinguishing suffix (said in the output)."""
    try:
        from benchmarks.embeddings import make_prompts as generated
    except ImportError:
        from costguard import api

        print(
            "(benchmarks/embeddings.py not found: extra prompts are bundled fixtures with a suffix)",
            file=sys.stderr,
        )
        base = [fx.last_user_text for fx in api.load_project(ROOT / "costguard.yaml").fixtures]
        return [f"{base[(seed + k) % len(base)]} (ref {seed}-{k})" for k in range(n)]
    return generated(n, seed=seed)


def _pcts(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))]

    return {"p50": q(0.50), "p99": q(0.99), "max": s[-1]}


def _bundled() -> tuple[object, list[object]]:
    from costguard import api

    project = api.load_project(ROOT / "costguard.yaml")
    return project, list(project.fixtures)


def _inputs(texts: list[str]) -> list[object]:
    from costguard.engine.routing.router import RouteInput
    from costguard.model.fixtures import Expect, Fixture, Sampling

    return [
        RouteInput(
            Fixture(
                f"p{i}",
                "bench",
                1.0,
                [{"role": "user", "content": t}],
                Sampling(),
                Expect(),
                "bench",
                None,
            ),
            0,
        )
        for i, t in enumerate(texts)
    ]


def _router(config: object, cache_dir: str | None, precision: str | None = None) -> object:
    from costguard.engine.routing.factory import build_router
    from costguard.text.embeddings import EmbeddingCache

    if precision is not None:
        config = config.model_copy(
            update={"router": config.router.model_copy(update={"precision": precision})}
        )  # type: ignore[attr-defined]
    cache = EmbeddingCache(directory=cache_dir) if cache_dir else EmbeddingCache.memory()
    return build_router(config, root=ROOT, embedding_cache=cache)


def bench_cold(n: int, repeats: int) -> tuple[list[dict], list[str]]:
    from costguard.engine.routing.complexity import routed_text
    from costguard.engine.routing.router import RouteInput

    project, fixtures = _bundled()
    config = project.config  # type: ignore[attr-defined]
    notes = []
    bundled = [RouteInput(fx, 0) for fx in fixtures]
    extra = _inputs(make_prompts(max(0, n - len(bundled)), seed=11))
    batch = (bundled + extra)[:n]

    t0 = time.perf_counter()
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401

    notes.append(f"import torch + sentence_transformers: {time.perf_counter() - t0:.1f} s")
    warm_up = _router(config, None)
    t0 = time.perf_counter()
    warm_up.route(_inputs(["warm up the model and its kernels"] * 4))  # type: ignore[attr-defined]
    notes.append(f"model load + first batch: {time.perf_counter() - t0:.1f} s")

    rows = []
    decisions: dict[str, list[str]] = {}
    variants = [("float32 (default), token-bucketed batches", "float32")]
    from costguard.text.embeddings import _cpu_has_native_bf16

    if _cpu_has_native_bf16():
        variants.append(("bfloat16 autocast (precision: auto on this CPU)", "bfloat16"))
    for label, precision in variants:
        rates = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as d:
                router = _router(config, d, precision)
                t0 = time.perf_counter()
                out = router.route(batch)  # type: ignore[attr-defined]
                rates.append(len(batch) / (time.perf_counter() - t0))
        decisions[precision] = [d.tier for d in out[: len(bundled)]]
        rows.append(
            {
                "path": f"ComplexityRouter.route, {label}",
                "best": max(rates),
                "median": statistics.median(rates),
            }
        )
    if "bfloat16" in decisions:
        same = sum(a == b for a, b in zip(decisions["float32"], decisions["bfloat16"], strict=True))
        rows[-1]["identical"] = f"{same}/{len(bundled)} bundled decisions as float32"

    # plain encode baseline: one SentenceTransformer.encode over the batch (batch 32), then the same scoring
    router = _router(config, None, "float32")
    model = router.embedder._load()  # type: ignore[attr-defined]
    texts = [routed_text(item.fixture, "last_user", config.router.max_chars) for item in batch]  # type: ignore[attr-defined]
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        vectors = model.encode(
            texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
        )
        router._score(vectors, texts)  # type: ignore[attr-defined]
        rates.append(len(texts) / (time.perf_counter() - t0))
    rows.append(
        {
            "path": "plain SentenceTransformer.encode (batch 32) + scoring",
            "best": max(rates),
            "median": statistics.median(rates),
        }
    )

    # per-prompt latency of a cold single request (what the report's router overhead measures)
    lat = []
    for item in batch[:64]:
        text = routed_text(item.fixture, "last_user", config.router.max_chars)  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        router._score(router.embedder.encode_uncached([text]), [text])  # type: ignore[attr-defined]
        lat.append(time.perf_counter() - t0)
    rows.append({"latency": _pcts(lat), "path": "cold single request (embed + score), float32"})
    return rows, notes


_CHILD = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
from costguard import api
from costguard.text.embeddings import EmbeddingCache
from costguard.engine.routing.factory import build_router
sys.path.insert(0, cfg["root"])
from benchmarks.routing import _inputs
texts = json.load(open(cfg["texts"]))
batch = _inputs(texts)
config = api.load_project(cfg["config"]).config
t1 = time.perf_counter()
router = build_router(config, root=cfg["root"], embedding_cache=EmbeddingCache(directory=cfg["cache"]))
first = router.route(batch)
t2 = time.perf_counter()
router.route(batch)
t3 = time.perf_counter()
lat = []
for item in batch[: cfg["latency_samples"]]:
    a = time.perf_counter()
    router.route([item])
    lat.append(time.perf_counter() - a)
heavy = [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules]
print(json.dumps({"first_s": t2 - t1, "repeat_s": t3 - t2, "lat": lat, "n": len(first),
                  "misses": router.embedder.misses, "heavy": heavy}))
"""


def bench_warm(sizes: list[int], latency_samples: int) -> list[dict]:
    import numpy as np

    from costguard.engine.routing.complexity import routed_text
    from costguard.text.embeddings import EmbeddingCache

    project, _ = _bundled()
    config = project.config  # type: ignore[attr-defined]
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as d:
            texts = make_prompts(size, seed=5)
            router = _router(config, None)
            model_id = router.embedder.model_id  # type: ignore[attr-defined]
            cache = EmbeddingCache(directory=d)
            keys = [
                routed_text(item.fixture, "last_user", config.router.max_chars)
                for item in _inputs(texts)
            ]
            exemplars = [t for ts in config.router.exemplars.values() for t in ts]
            rng = np.random.default_rng(0)
            for chunk in (keys, exemplars):
                vecs = rng.standard_normal((len(chunk), 384), dtype=np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                cache.put_many(model_id, chunk, vecs)
            texts_file = os.path.join(d, "texts.json")
            with open(texts_file, "w", encoding="utf-8") as fh:
                json.dump(texts, fh)
            cfg = {
                "root": str(ROOT),
                "config": str(ROOT / "costguard.yaml"),
                "texts": texts_file,
                "cache": d,
                "latency_samples": latency_samples,
            }
            best = None
            for _ in range(3):
                proc = subprocess.run(
                    [sys.executable, "-c", _CHILD, json.dumps(cfg)],
                    capture_output=True,
                    text=True,
                    cwd=str(ROOT),
                )
                if proc.returncode:
                    raise SystemExit(f"warm child failed:\n{proc.stderr}")
                res = json.loads(proc.stdout)
                if best is None or res["first_s"] < best["first_s"]:
                    best = res
            assert best is not None and best["misses"] == 0 and best["n"] == size, best
            rows.append(
                {
                    "size": size,
                    "first": size / best["first_s"],
                    "first_s": best["first_s"],
                    "repeat": size / best["repeat_s"],
                    "latency": _pcts(best["lat"]),
                    "heavy": best["heavy"],
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cold", type=int, default=1000, help="prompts in the cold rows (default 1000)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warm-sizes", default="20000,100000")
    ap.add_argument("--latency-samples", type=int, default=2000)
    ap.add_argument("--skip-cold", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# costguard complexity router benchmark: {os.cpu_count()} CPUs, load average {load:.1f}\n"
    )
    if not args.skip_cold:
        rows, notes = bench_cold(args.cold, args.repeats)
        print(
            f"## Cold: {args.cold} uncached prompts (bundled fixtures first), best (median) of {args.repeats}\n"
        )
        for note in notes:
            print(f"- {note}")
        print("\n| path | prompts/s best | prompts/s median | decisions |\n|---|---:|---:|---|")
        for r in rows:
            if "best" in r:
                print(
                    f"| {r['path']} | {r['best']:.0f} | {r['median']:.0f} | {r.get('identical', '')} |"
                )
        for r in rows:
            if "latency" in r:
                lat = r["latency"]
                print(
                    f"\n{r['path']}: p50 {lat['p50'] * 1000:.1f} ms, p99 {lat['p99'] * 1000:.1f} ms, max {lat['max'] * 1000:.1f} ms"
                )
        print()
    sizes = [int(s) for s in args.warm_sizes.split(",") if s.strip()]
    if sizes:
        rows = bench_warm(sizes, args.latency_samples)
        print("## Warm: every prompt cached, fresh interpreter (best of 3)\n")
        print(
            "| prompts | route() incl. cache load: prompts/s (s) | repeat route(): prompts/s | route([one]) p50 / p99 µs | torch imported |"
        )
        print("|---:|---:|---:|---:|---|")
        for r in rows:
            lat = r["latency"]
            print(
                f"| {r['size']:,} | {r['first']:,.0f} ({r['first_s']:.2f}) | {r['repeat']:,.0f} | "
                f"{lat['p50'] * 1e6:.0f} / {lat['p99'] * 1e6:.0f} | {'yes: ' + ', '.join(r['heavy']) if r['heavy'] else 'no'} |"
            )


if __name__ == "__main__":
    main()
