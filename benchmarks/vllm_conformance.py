"""The prefix-cache simulator beside vLLM's real V1 KVCacheManager: agreement and speed.

Long seeded streams (tests/conformance/kv_streams.py: shared system prompts, multi-turn
follow-ups, resends, block multiples) run through both, one request at a time, in several
settings: plain, EAGLE with lookahead block hashes, EAGLE dropping the last block, requests with
prompt_logprobs; roomy and eviction-forcing pools. The oracle (vLLM's own code, on CPU) comes
from .ci/conformance-oracle; its time excludes importing vLLM. Exits non-zero when any request
differs or a run fails.

    python benchmarks/vllm_conformance.py [--requests 20000] [--oracle PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conformance.kv_streams import Stream, blocks_needed, generate  # noqa: E402


def settings(n: int) -> list[Stream]:
    bs = 16
    plain = generate(101, n, block_size=bs)
    logprobs = generate(102, n, block_size=bs, prompt_logprobs=0.15)
    peak = blocks_needed(plain, bs, 4)
    out = []
    # Roomy: room for every block of every request, so nothing is ever evicted.
    roomy = sum(blocks_needed([r], bs, 4) for r in [*plain, *logprobs]) + 2
    for pool_name, pool in (("roomy", roomy), ("tight", peak * 4)):
        out += [
            Stream(f"plain, {pool_name} pool", bs, pool, plain),
            Stream(f"EAGLE lookahead hashes, {pool_name}", bs, pool, plain, 1, False, 3),
            Stream(f"EAGLE dropping the last block, {pool_name}", bs, pool, plain, 0, True, 3),
            Stream(f"15% prompt_logprobs, {pool_name}", bs, pool, logprobs),
        ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--oracle", default=os.environ.get("COSTGUARD_VLLM_ORACLE"))
    args = parser.parse_args()
    oracle = args.oracle
    if not oracle:
        oracle = subprocess.run(
            [str(ROOT / ".ci" / "conformance-oracle")], capture_output=True, text=True, check=True
        ).stdout.strip()
    matrix = settings(args.requests)
    script = ROOT / "tests" / "conformance" / "oracle" / "vllm_oracle.py"
    # One oracle process for every run (vLLM is imported once; each run times itself).
    done = subprocess.run(
        [oracle, str(script)],
        input=json.dumps({"op": "kv", "runs": [s.payload() for s in matrix]}) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
    )
    if done.returncode != 0 or not done.stdout.strip():
        print(f"the oracle failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return 1
    failed = False
    rows = []
    for stream, vllm in zip(matrix, json.loads(done.stdout), strict=True):
        started = time.perf_counter()
        hits, sim = stream.simulate()
        sim_s = time.perf_counter() - started
        differ = sum(a != b for a, b in zip(hits, vllm["hits"], strict=True))
        failed |= differ > 0
        v_rate = vllm["stat_hits"] / vllm["queries"] if vllm["queries"] else 0.0
        rows.append(
            (stream.name, len(hits), f"{sim.hit_rate:.4f}", f"{v_rate:.4f}", differ,
             sim.evictions, f"{sim_s:.2f}", f"{vllm['seconds']:.2f}", f"{vllm['seconds'] / sim_s:.0f}x")
        )  # fmt: skip
    header = ("setting", "requests", "hit rate costguard", "hit rate vLLM", "requests differing",
              "evicted blocks", "costguard s", "vLLM s", "speed-up")  # fmt: skip
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"load average: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
