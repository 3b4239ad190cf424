"""A live run's tables: latency per tier (vllm bench serve's figures) and the check of the
servers' /metrics against the replies."""

from __future__ import annotations

from typing import Any

from costguard.render.terminal.tables import plain, table
from costguard.report import format as fmt
from costguard.report.model import ReplayLatency, ServerMetrics
from costguard.report.run_report import RunReport

REPLAY_TERMS = (
    "Terms (vllm bench serve's): TTFT = time to first token, TPOT = time per output token after "
    "the first, ITL = inter-token latency, E2EL = end-to-end request latency; p99 = 99th percentile"
)


def replay_tables(report: RunReport) -> list[Any]:
    """A live run's latency per tier (vllm bench serve's figures) and the server-metrics check."""
    replay = report.model.replay
    if replay is None:
        return []
    req = replay.requests
    latency = table(
        f"Replay: {req.completed} of {req.sent} requests in {replay.duration_s:.1f} s "
        f"at concurrency {replay.concurrency} ({fmt.rate(replay.request_throughput, 'req/s')}, "
        f"{req.retries} retries, {req.answered_by_cache} answered by cache)",
        ("tier", "TTFT mean", "p99", "TPOT mean", "p99", "ITL mean", "E2EL mean", "p99"),
        left=("tier",),
    )
    for tier, lat in replay.latency.items():
        latency.add_row(plain(tier), *(fmt.duration_ms(v) for v in _latencies(lat)))
    out = [latency]
    metrics = report.model.server_metrics
    if metrics:
        out.append(_metrics_table(metrics))
    return out


def _latencies(lat: ReplayLatency) -> tuple[float | None, ...]:
    return (
        lat.mean_ttft_ms, lat.p99_ttft_ms, lat.mean_tpot_ms, lat.p99_tpot_ms,
        lat.mean_itl_ms, lat.mean_e2el_ms, lat.p99_e2el_ms,
    )  # fmt: skip


def _metrics_table(metrics: dict[str, ServerMetrics]) -> Any:
    check = table(
        "Server /metrics vs replies",
        ("tier", "prompt tok (server/replies)", "generated", "prefix hits", "result"),
        left=("tier", "result"),
    )
    for tier, sm in metrics.items():
        if not sm.available or sm.server is None or sm.client is None:
            check.add_row(plain(tier), "", "", "", plain(f"not scraped: {sm.reason}"))
            continue
        srv, cli = sm.server, sm.client
        check.add_row(
            plain(tier),
            f"{fmt.count(srv.prompt_tokens)} / {fmt.count(cli.prompt_tokens)}",
            f"{fmt.count(srv.generation_tokens)} / {fmt.count(cli.completion_tokens)}",
            f"{fmt.count(srv.prefix_cache_hits)} / {fmt.count(cli.cached_tokens)}",
            "agree" if not sm.discrepancies else plain("; ".join(sm.discrepancies)),
        )
    return check
