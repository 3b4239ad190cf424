"""Replay-driver overhead: costguard's driver vs a bare aiohttp loop, same server, same requests.

The server is the vLLM test double with zero latency (`python -m tests.doubles.fake_vllm`) in its
own process; the client side runs in this process. Both clients stream the same chat requests at
the same concurrency and parse every SSE chunk with json.loads, as `vllm bench serve` does; the
bare loop does only that, costguard's driver (`costguard.serving.replay.replay`) also measures
TTFT/ITL/TPOT/E2EL, validates usage, wraps retries and reports progress. Rounds alternate
(bare, costguard, bare, ...) so that load from other processes on a shared machine hits both
alike; the table shows every round and the ratio of the medians. Goal: >= 90%.

    python benchmarks/replay.py [--requests 3000] [--concurrency 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costguard.serving.replay import ReplayRequest, replay  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.fake_vllm", "--model", "bench", "--port", str(port),
         "--no-record-requests", "--enable-prompt-tokens-details"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()  # "serving ... on http://..."
    return proc


def payloads(n: int) -> list[dict]:
    return [
        {"model": "bench", "temperature": 0, "max_tokens": 32,
         "messages": [{"role": "system", "content": "You are a support agent for Acme."},
                      {"role": "user", "content": f"Question number {i % 500}: where is my order?"}]}
        for i in range(n)
    ]  # fmt: skip


async def bare_loop(url: str, bodies: list[dict], concurrency: int) -> tuple[float, float]:
    """A bare aiohttp client in the manner of vllm bench serve (endpoint_request_func.py): read
    whatever bytes arrive (iter_any), cut SSE messages at blank lines, json.loads each one."""
    import aiohttp

    it = iter(bodies)

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in it:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                buffer = ""
                async for chunk in resp.content.iter_any():
                    buffer += chunk.decode("utf-8")
                    while "\n\n" in buffer:
                        message, buffer = buffer.split("\n\n", 1)
                        message = message.strip().removeprefix("data: ")
                        if message and message != "[DONE]":
                            json.loads(message)

    started, cpu = time.perf_counter(), time.process_time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - started), (time.process_time() - cpu) / len(bodies)


async def costguard_driver(url: str, bodies: list[dict], concurrency: int) -> tuple[float, float]:
    requests = [ReplayRequest(url, body) for body in bodies]
    ticks = []
    started, cpu = time.perf_counter(), time.process_time()
    outcome = await replay(
        requests,
        concurrency=concurrency,
        timeout_s=60,
        progress=lambda *a: ticks.append(a),
        handle_sigint=False,
    )
    assert outcome.stopped is None and outcome.completed == len(bodies), outcome.stopped
    return outcome.completed / (time.perf_counter() - started), (time.process_time() - cpu) / len(
        bodies
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    port = free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}"
    bodies = payloads(args.requests)
    try:
        asyncio.run(bare_loop(url, bodies[:200], args.concurrency))  # warm up both sides
        asyncio.run(costguard_driver(url, bodies[:200], args.concurrency))
        bare, ours = [], []
        print(f"{args.requests} streamed requests per round, concurrency {args.concurrency}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        print(f"{'':>6} {'requests/s':^33} {'client CPU us/request':^33}")
        print(
            f"{'round':>6} {'bare':>10} {'costguard':>10} {'ratio':>11} {'bare':>10} {'costguard':>10} {'ratio':>11}"
        )
        for r in range(args.rounds):
            if r % 2:  # ABBA order: neither client always runs first
                c = asyncio.run(costguard_driver(url, bodies, args.concurrency))
                b = asyncio.run(bare_loop(url, bodies, args.concurrency))
            else:
                b = asyncio.run(bare_loop(url, bodies, args.concurrency))
                c = asyncio.run(costguard_driver(url, bodies, args.concurrency))
            bare.append(b)
            ours.append(c)
            print(
                f"{r + 1:>6} {b[0]:>10,.0f} {c[0]:>10,.0f} {c[0] / b[0]:>11.1%} "
                f"{b[1] * 1e6:>10,.0f} {c[1] * 1e6:>10,.0f} {b[1] / c[1]:>11.1%}"
            )
        mb = [statistics.median(x[k] for x in bare) for k in (0, 1)]
        mc = [statistics.median(x[k] for x in ours) for k in (0, 1)]
        print(
            f"{'median':>6} {mb[0]:>10,.0f} {mc[0]:>10,.0f} {mc[0] / mb[0]:>11.1%} "
            f"{mb[1] * 1e6:>10,.0f} {mc[1] * 1e6:>10,.0f} {mb[1] / mc[1]:>11.1%}"
        )
        paired = statistics.median(c[0] / b[0] for b, c in zip(bare, ours, strict=True))
        paired_cpu = statistics.median(b[1] / c[1] for b, c in zip(bare, ours, strict=True))
        print(f"median of the per-round ratios: throughput {paired:.1%}, CPU {paired_cpu:.1%}")
        print(
            "ratio = costguard's throughput / the bare loop's (CPU: bare cost / costguard cost); goal >= 90%"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
