"""The replay driver: send many completion requests with bounded concurrency, as `vllm bench serve` does.

A fixed pool of `concurrency` workers pulls requests in order (no task per request, so the
driver's own cost stays small beside a bare aiohttp loop); with `request_rate_per_s` a
producer releases them at seeded Poisson arrival times and they queue while every worker is
busy. Each request streams (TTFT/ITL/TPOT/E2EL measured by `openai_client`) and is retried
with backoff on 429/5xx/connection errors.

A request that still fails, or Ctrl-C, stops the replay: nothing new is sent, the requests in
flight are cancelled, and the outcome says why, with every reply received so far. Callers turn
that into a report marked incomplete; no result is ever made up for a request that got none.
"""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from costguard.model.stats import percentile
from costguard.serving.openai_client import (
    BackendCallError,
    CompletionResult,
    RetryPolicy,
    call_with_retries,
    chat_completion,
)

Progress = Callable[[str, int, int], None]
PROGRESS_EVERY_S = 0.1


@dataclass
class ReplayRequest:
    """One request: where it goes and the OpenAI chat-completions body."""

    base_url: str
    payload: Mapping[str, Any]
    api_key: str | None = None


@dataclass
class ReplayOutcome:
    """What came back. `results[i]` / `spans[i]` belong to `requests[i]`; None: no reply."""

    results: list[CompletionResult | None]
    spans: list[tuple[float, float] | None]  # (sent, finished) seconds since the replay started
    duration_s: float
    retries: int = 0
    failures: list[tuple[int, BackendCallError]] = field(default_factory=list)
    stopped: str | None = None  # why the replay stopped early (None: every request answered)

    @property
    def completed(self) -> int:
        return sum(r is not None for r in self.results)


def poisson_arrivals(n: int, rate_per_s: float, seed: int | str) -> list[float]:
    """Seconds after the start at which each of n requests arrives (exponential gaps, seeded).

    Shared by the replay driver and the pipeline's simulated arrival clock (each with its own seed)."""
    rng = random.Random(f"{seed}:replay-arrivals" if isinstance(seed, int) else seed)
    now = 0.0
    out = []
    for _ in range(n):
        now += rng.expovariate(rate_per_s)
        out.append(now)
    return out


async def replay(
    requests: Sequence[ReplayRequest],
    *,
    concurrency: int,
    timeout_s: float,
    retry: RetryPolicy | None = None,
    request_rate_per_s: float | None = None,
    seed: int = 0,
    stream: bool = True,
    progress: Progress | None = None,
    handle_sigint: bool = True,
) -> ReplayOutcome:
    """Replay `requests`; returns when all are answered or the replay stopped early."""
    import aiohttp

    n = len(requests)
    results: list[CompletionResult | None] = [None] * n
    spans: list[tuple[float, float] | None] = [None] * n
    outcome = ReplayOutcome(results, spans, 0.0)
    policy = retry or RetryPolicy()
    workers: list[asyncio.Task[None]] = []
    done = 0
    last_progress = 0.0

    def stop(reason: str) -> None:
        if outcome.stopped is None:
            outcome.stopped = reason
            current = asyncio.current_task()
            for task in workers:
                if task is not current:
                    task.cancel()

    def on_retry(attempt: int, error: BackendCallError, delay: float) -> None:
        outcome.retries += 1

    started = time.perf_counter()
    if request_rate_per_s is None:
        pending: Any = iter(range(n))
    else:
        pending = asyncio.Queue()

    async def produce() -> None:
        assert request_rate_per_s is not None  # the producer runs only at a request rate
        for i, at in enumerate(poisson_arrivals(n, request_rate_per_s, seed)):
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.put_nowait(i)
        for _ in range(concurrency):
            pending.put_nowait(None)

    async def work(session: aiohttp.ClientSession) -> None:
        nonlocal done, last_progress
        while outcome.stopped is None:
            if request_rate_per_s is None:
                i = next(pending, None)
            else:
                i = await pending.get()
            if i is None:
                return
            req = requests[i]
            sent = time.perf_counter()
            try:
                result = await call_with_retries(
                    functools.partial(
                        chat_completion,
                        session,
                        req.base_url,
                        req.payload,
                        api_key=req.api_key,
                        timeout_s=timeout_s,
                        stream=stream,
                    ),
                    policy,
                    on_retry=on_retry,
                )
            except BackendCallError as error:
                outcome.failures.append((i, error))
                stop(f"request {i + 1} of {n} failed: {error}")
                return
            finished = time.perf_counter()
            results[i] = result
            spans[i] = (sent - started, finished - started)
            done += 1
            if progress is not None and finished - last_progress >= PROGRESS_EVERY_S:
                last_progress = finished
                progress("replay", done, n)

    loop = asyncio.get_running_loop()
    sigint = handle_sigint and threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}
    if sigint:
        from costguard.serving import interrupts

        def on_signal(signum: int) -> None:
            interrupts.note(signum)
            stop(interrupts.reason(signum))

        for sig in interrupts.SIGNALS:  # SIGTERM and SIGHUP stop the replay like Ctrl-C
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal, sig)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            workers.extend(
                asyncio.create_task(work(session)) for _ in range(min(concurrency, max(n, 1)))
            )
            producer = asyncio.create_task(produce()) if request_rate_per_s is not None else None
            await asyncio.gather(*workers, return_exceptions=True)
            if producer is not None:
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)  # asyncio would leave SIG_DFL: restore ours
    outcome.duration_s = time.perf_counter() - started
    if progress is not None:
        progress("replay", done, n)
    return outcome


def run_replay(requests: Sequence[ReplayRequest], **kwargs: Any) -> ReplayOutcome:
    """`replay` from synchronous code (its own event loop)."""
    return asyncio.run(replay(requests, **kwargs))


# --------------------------------------------------------------------------------------------
# Statistics, named as `vllm bench serve` names them
# --------------------------------------------------------------------------------------------


def latency_summary(results: Sequence[CompletionResult]) -> dict[str, float | None]:
    """mean/median/p99 of TTFT, TPOT, ITL and E2EL in milliseconds (vllm bench serve's keys)."""
    series = {
        "ttft": [r.ttft_s for r in results if r.ttft_s is not None],
        "tpot": [r.tpot_s for r in results if r.tpot_s is not None],
        "itl": [x for r in results for x in r.itl_s],
        "e2el": [r.e2el_s for r in results],
    }
    out: dict[str, float | None] = {}
    for name, values in series.items():
        values = sorted(values)
        if not values:
            out.update({f"mean_{name}_ms": None, f"median_{name}_ms": None, f"p99_{name}_ms": None})
            continue
        out[f"mean_{name}_ms"] = 1000 * sum(values) / len(values)
        out[f"median_{name}_ms"] = 1000 * percentile(values, 0.5)
        out[f"p99_{name}_ms"] = 1000 * percentile(values, 0.99)
    return out


DISTRIBUTION_POINTS = (0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 100)


def latency_distribution(results: Sequence[CompletionResult]) -> dict[str, dict[str, float] | None]:
    """Percentiles (ms) of TTFT, TPOT, ITL and E2EL, for the HTML report's distribution plots:
    `count`, `mean` and `p0` ... `p100` (linear interpolation, as `latency_summary`); None for a
    metric without samples (TTFT, TPOT and ITL need streaming)."""
    series = {
        "ttft": [r.ttft_s for r in results if r.ttft_s is not None],
        "tpot": [r.tpot_s for r in results if r.tpot_s is not None],
        "itl": [x for r in results for x in r.itl_s],
        "e2el": [r.e2el_s for r in results],
    }
    out: dict[str, dict[str, float] | None] = {}
    for name, values in series.items():
        values = sorted(values)
        if not values:
            out[name] = None
            continue
        block = {"count": float(len(values)), "mean": 1000 * sum(values) / len(values)}
        for q in DISTRIBUTION_POINTS:
            block[f"p{q}"] = 1000 * percentile(values, q / 100)
        out[name] = block
    return out


def throughput_profile(
    results: Sequence[CompletionResult], spans: Sequence[tuple[float, float]]
) -> dict[str, float] | None:
    """Prefill and decode tokens/s one tier sustained during the replay, for GPU-time pricing.

    The tier was busy for its window T (first request sent to last reply). T is split between
    prefill and decode in the ratio of summed TTFT to summed (E2EL - TTFT); then
    prefill = uncached prompt tokens / (its share of T) and decode = output tokens / (the rest).
    Priced with these figures at utilisation 1, the replay's calls cost exactly T of GPU time.
    None without streamed TTFTs or tokens of both kinds.
    """
    if not results or any(r.ttft_s is None for r in results):
        return None
    window = max(end for _, end in spans) - min(start for start, _ in spans)
    prefill_time = sum(r.ttft_s or 0.0 for r in results)
    decode_time = sum(max(r.e2el_s - (r.ttft_s or 0.0), 0.0) for r in results)
    uncached = sum(r.prompt_tokens - r.cached_tokens for r in results)
    output = sum(r.completion_tokens for r in results)
    if window <= 0 or prefill_time <= 0 or decode_time <= 0 or uncached <= 0 or output <= 0:
        return None
    share = prefill_time / (prefill_time + decode_time)
    return {
        "prefill_tokens_per_s": uncached / (share * window),
        "decode_tokens_per_s": output / ((1 - share) * window),
        "window_s": window,
        "requests": float(len(results)),
    }
