"""Quality scoring at scale: deterministic checks, the report section, `similar` (cold and warm
embedding cache) and `costguard frontier` on the bundled example.

Prints a table of figures. Targets (2-core machine): checks + section for 100k answers well under
the 100k projection itself (seconds); warm `similar` costs a hash and a dict lookup per text.

    python benchmarks/quality.py [--answers 100000] [--similar 500]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from costguard.engine.quality.assess import Answer, QualityScorer, quality_section  # noqa: E402
from costguard.engine.quality.scorers import Response  # noqa: E402
from costguard.engine.records import RequestRecord  # noqa: E402
from costguard.model.config import StackConfig  # noqa: E402
from costguard.model.fixtures import Expect, Fixture, Sampling  # noqa: E402

CONFIG = StackConfig.model_validate(
    {
        "tiers": [
            {
                "name": "small",
                "model": "b/8b",
                "tokenizer": {"hf": "unused"},
                "pricing": {"input_per_mtok": 1, "output_per_mtok": 1},
            }
        ],
        "traffic": {"requests_per_month": 1_000_000},
    }
)
ASSERTIONS = [
    {"contains": "refund"},
    {"icontains": "RETURN window"},
    {"not_contains": "$6.95"},
    {"regex": r"\b\d+ days\b"},
    {
        "json": {
            "schema": {
                "type": "object",
                "properties": {"order_number": {"type": ["string", "null"]}},
            }
        }
    },
    {"equals": "positive"},
    {"max_output_tokens": 200},
]
ANSWERS = [
    "You can get a full refund within the 30 days return window.",
    '{"order_number": "CW-4418207"}',
    "positive",
    "Return shipping costs $6.95 unless the item is defective.",
]


def fixtures(n: int, rng: random.Random) -> list[Fixture]:
    out = []
    for i in range(n):
        picked = rng.sample(ASSERTIONS, k=rng.randint(1, 3))
        out.append(
            Fixture(
                id=f"f{i}",
                suite=rng.choice(["support", "rag", "extraction"]),
                weight=1.0,
                messages=[{"role": "user", "content": f"question {i}"}],
                sampling=Sampling(),
                expect=Expect.model_validate({"assertions": picked}),
                file="bench.yaml",
                line=i + 1,
            )
        )
    return out


def bench_checks(n: int) -> list[tuple[str, str]]:
    rng = random.Random(5)
    fxs = fixtures(n, rng)
    answers = [
        Answer(fx, Response(fx, rng.choice(ANSWERS), rng.randint(5, 300), "small"), "small")
        for fx in fxs
    ]
    scorer = QualityScorer(CONFIG, root=REPO)
    start = time.perf_counter()
    scores = scorer.score_many(answers)
    t_score = time.perf_counter() - start
    records = [
        RequestRecord(
            fixture_id=fx.id,
            suite=fx.suite,
            location="",
            content_hash="",
            weight=1.0,
            monthly_requests=10.0,
            arrival_index=i,
            route_tier="small",
            route_reason="",
            quality=q,
        )
        for i, (fx, q) in enumerate(zip(fxs, scores, strict=True))
    ]
    start = time.perf_counter()
    quality_section(records)
    t_section = time.perf_counter() - start
    return [
        (f"score {n:,} answers (checks, JSON Schema)", f"{t_score:.2f} s ({n / t_score:,.0f}/s)"),
        (f"quality section over {n:,} records", f"{t_section:.2f} s"),
    ]


def bench_similar(n: int) -> list[tuple[str, str]]:
    from costguard.text.embeddings import Embedder, EmbeddingCache

    rng = random.Random(9)
    fxs = []
    for i in range(n):
        expect = Expect.model_validate(
            {
                "reference": f"Refunds take {i % 11 + 2} business days after inspection.",
                "assertions": [{"similar": {"threshold": 0.7}}],
            }
        )
        fxs.append(
            Fixture(
                id=f"s{i}",
                suite="support",
                weight=1.0,
                messages=[{"role": "user", "content": "q"}],
                sampling=Sampling(),
                expect=expect,
                file="b.yaml",
                line=i + 1,
            )
        )
    answers = [
        Answer(
            fx,
            Response(
                fx, f"Your refund arrives {rng.randint(1, 30)} days after we inspect item {i}."
            ),
            "small",
        )
        for i, fx in enumerate(fxs)
    ]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("cold cache", "warm cache (a new cache object reading the shards)"):
            embedder = Embedder(cache=EmbeddingCache(directory=Path(tmp)))
            scorer = QualityScorer(CONFIG, root=REPO, embedder=lambda e=embedder: e)
            start = time.perf_counter()
            scorer.score_many(answers)
            seconds = time.perf_counter() - start
            out.append(
                (
                    f"similar on {n} answers, {label}",
                    f"{seconds:.2f} s ({embedder.misses} texts encoded)",
                )
            )
    return out


def bench_frontier() -> list[tuple[str, str]]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "costguard", "frontier", "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    seconds = time.perf_counter() - start
    import json

    variants = len(json.loads(proc.stdout)["variants"]) if proc.returncode in (0, 1) else 0
    return [
        (
            f"costguard frontier, bundled example ({variants} variants x 316 fixtures)",
            f"{seconds:.2f} s",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=100_000)
    parser.add_argument("--similar", type=int, default=500)
    args = parser.parse_args()
    rows = bench_checks(args.answers) + bench_similar(args.similar) + bench_frontier()
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark'.ljust(width)}  figure")
    for name, figure in rows:
        print(f"{name.ljust(width)}  {figure}")


if __name__ == "__main__":
    main()
