"""Live backends against real HTTP servers: the vLLM double on 127.0.0.1, the real CLI in subprocesses.

What a live run measures (tokens, latency, cached tokens, confidence) is recorded, and the next
offline run reports those outputs as measured; a run that stops early is marked incomplete and
fails every policy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costguard.engine.recordings import RESPONSES_FILE, THROUGHPUT_FILE
from tests.conftest import REPO, STACK_YAML, minilm_dir, run_cli, write
from tests.doubles.fake_vllm import FakeVLLM
from tests.test_openai_client import tiny_server

POLICY = "rules:\n  spend: {metric: monthly_spend, max: 1000000000}\n"


def configure(project: Path, small_url: str, large_url: str, extra: str = "") -> None:
    """The conftest stack with an endpoint per tier (plus any extra top-level YAML)."""
    text = STACK_YAML.format(tok=minilm_dir())
    text = text.replace(
        "    pricing: {input_per_mtok: 0.10",
        f'    endpoint: {{base_url: "{small_url}"}}\n    pricing: {{input_per_mtok: 0.10',
        1,
    )
    text = text.replace(
        "    serve: {tensor_parallel_size: 4}",
        f'    serve: {{tensor_parallel_size: 4}}\n    endpoint: {{base_url: "{large_url}/v1"}}',
    )
    (project / "costguard.yaml").write_text(text + extra)
    (project / "policy.yaml").write_text(POLICY)


@pytest.fixture
def servers():
    """Start FakeVLLM servers for the small and large tiers (keyword overrides per tier)."""
    handles = []

    def start(small: dict | None = None, large: dict | None = None):
        s = FakeVLLM(
            "test/small-8b", **{"enable_prompt_tokens_details": True, **(small or {})}
        ).start_in_thread()
        handles.append(s)
        big = FakeVLLM(
            "test/large-70b", **{"enable_prompt_tokens_details": True, **(large or {})}
        ).start_in_thread()
        handles.append(big)
        return s, big

    yield start
    for handle in handles:
        handle.stop()


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def recordings(project: Path) -> list[dict]:
    path = project / "recordings" / RESPONSES_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ---- record, then measure offline ----------------------------------------------------------------


def test_endpoint_run_records_responses_and_the_next_offline_run_measures_those_outputs(
    project_dir, servers
):
    small, large = servers()
    configure(project_dir, small.base_url, large.base_url)

    live = run_cli("run", "--backend", "endpoint", "-o", "live.json", cwd=project_dir)
    assert live.returncode == 0, live.stderr
    report = read(project_dir / "live.json")
    assert report["backend"] == "endpoint" and report["complete"] is True
    # reset-password-dup is the exact cache's hit: it never reaches a server
    assert len(small.requests) == 2 and len(large.requests) == 1
    assert all(
        r["stream"] and r["stream_options"] == {"include_usage": True} for r in small.requests
    )
    assert report["replay"]["requests"] == {
        "planned": 4, "answered_by_cache": 1, "sent": 3, "completed": 3, "failed": 0, "retries": 0,
    }  # fmt: skip
    served = [c for r in report["records"] if r["cache"]["outcome"] == "miss" for c in r["calls"]]
    assert (
        {c["input_source"] for c in served} == {c["output_source"] for c in served} == {"measured"}
    )
    assert all(c["latency_source"] == "measured" and c["latency_s"] > 0 for c in served)
    # the server's own counters agree with the summed usage
    assert {t: m["discrepancies"] for t, m in report["server_metrics"].items()} == {
        "small": [],
        "large": [],
    }
    assert report["server_metrics"]["small"]["client"]["requests"] == 2

    recorded = {r["fixture_id"]: r for r in recordings(project_dir)}
    assert set(recorded) == {"reset-password", "order-status", "refactor"}
    assert (
        recorded["refactor"]["tier"] == "large"
        and recorded["refactor"]["model"] == "test/large-70b"
    )
    assert recorded["order-status"]["completion_tokens"] == 16  # what the double generated
    assert "reset-password" in recorded and recorded["reset-password"]["text"]

    offline = run_cli("run", "-o", "offline.json", cwd=project_dir)
    assert offline.returncode == 0, offline.stderr
    again = read(project_dir / "offline.json")
    assert again["backend"] == "offline"
    assert again["provenance"]["output_tokens"] == {"measured": 4, "expected": 0, "prior": 0}
    for record in again["records"]:
        (call,) = record["calls"]
        rec = recorded["reset-password" if record["id"] == "reset-password-dup" else record["id"]]
        assert call["output_source"] == "measured" and call["response_ref"] == rec["key"]
        assert (
            call["output_tokens"] == rec["completion_tokens"]
        )  # not the fixture's expect.output_tokens
        assert call["input_source"] == "exact"  # prompt tokens are still counted here
    assert not any("output tokens are estimated" in w for w in again["warnings"])
    assert again["recordings"]["current"] == 3 and again["recordings"]["stale"] == 0
    # without the recordings the same run estimates
    (project_dir / "recordings" / RESPONSES_FILE).unlink()
    assert run_cli("run", "-o", "estimated.json", cwd=project_dir).returncode == 0
    assert read(project_dir / "estimated.json")["provenance"]["output_tokens"]["measured"] == 0


def test_a_server_failing_mid_run_yields_an_incomplete_report_and_a_failing_check(
    project_dir, servers
):
    small, large = servers(small={"fail_after": 1})
    configure(
        project_dir, small.base_url, large.base_url, "replay: {max_attempts: 2, concurrency: 1}\n"
    )

    out = run_cli("run", "--backend", "endpoint", "-o", "partial.json", cwd=project_dir)
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("costguard: error: run incomplete: request ") and "HTTP 500" in last
    assert "partial report written to partial.json" in last
    report = read(project_dir / "partial.json")
    assert report["complete"] is False and "gave up after 2 attempts" in report["incomplete_reason"]
    assert report["warnings"][0].startswith("INCOMPLETE RUN")
    assert len(report["records"]) < 4  # nothing is made up for the requests without a reply
    assert report["replay"]["requests"]["failed"] == 1

    check = run_cli("check", "-p", "policy.yaml", "partial.json", cwd=project_dir)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "incomplete" in check.stdout
    # the same policy passes a complete run: the check failed because the run is incomplete
    assert run_cli("run", "-o", "full.json", cwd=project_dir).returncode == 0
    assert run_cli("check", "-p", "policy.yaml", "full.json", cwd=project_dir).returncode == 0


def test_429_and_503_are_retried_and_counted(project_dir, servers):
    small, large = servers(small={"error_sequence": [429, 503]})
    configure(project_dir, small.base_url, large.base_url, "replay: {concurrency: 1}\n")
    out = run_cli("run", "--backend", "endpoint", "--no-record", "-o", "r.json", cwd=project_dir)
    assert out.returncode == 0, out.stderr
    report = read(project_dir / "r.json")
    assert report["complete"] is True and report["replay"]["requests"]["retries"] == 2
    assert not recordings(project_dir)  # --no-record


def test_ctrl_c_writes_a_partial_report_marked_incomplete(project_dir, servers):
    small, large = servers(small={"tpot_s": 0.05, "default_output_tokens": 40})
    configure(project_dir, small.base_url, large.base_url, "replay: {concurrency: 1}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "costguard", "run", "--backend", "endpoint", "-o", "cut.json", "-q"],
        cwd=project_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while small.server.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert small.server.completed >= 1
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    report = read(project_dir / "cut.json")
    assert report["complete"] is False and report["incomplete_reason"] == "interrupted (Ctrl-C)"
    assert 1 <= len(report["records"]) < 4
    assert recordings(project_dir)  # what was measured before Ctrl-C is kept


# ---- what the servers say ---------------------------------------------------------------------------

LONG_SYSTEM = " ".join(f"policy{i}" for i in range(60))


def test_prefix_hits_without_prompt_token_details_are_reported(project_dir, servers):
    small, large = servers(small={"enable_prompt_tokens_details": False})
    configure(project_dir, small.base_url, large.base_url, "replay: {concurrency: 1}\n")
    write(
        project_dir / "fixtures" / "support.yaml",
        f"""\
        suite: support
        fixtures:
          - id: first
            messages: [{{role: system, content: "{LONG_SYSTEM}"}}, {{role: user, content: "Where is my order?"}}]
          - id: second
            messages: [{{role: system, content: "{LONG_SYSTEM}"}}, {{role: user, content: "Can I return boots?"}}]
    """,
    )
    out = run_cli("run", "--backend", "endpoint", "-o", "r.json", cwd=project_dir)
    assert out.returncode == 0, out.stderr
    metrics = read(project_dir / "r.json")["server_metrics"]["small"]
    assert metrics["server"]["prefix_cache_hits"] > 0 and metrics["client"]["cached_tokens"] == 0
    assert any("--enable-prompt-tokens-details" in d for d in metrics["discrepancies"])
    warnings = read(project_dir / "r.json")["warnings"]
    assert any(w.startswith("server metrics of tier small disagree") for w in warnings)


def test_structured_replies_record_the_servers_confidence(project_dir, servers):
    small, large = servers(small={"confidence": 0.37})
    configure(project_dir, small.base_url, large.base_url)
    write(
        project_dir / "fixtures" / "support.yaml",
        """\
        suite: support
        fixtures:
          - id: graded
            sampling: {temperature: 0, response_format: {type: json_object}}
            messages: [{role: user, content: "Answer with JSON: is the sky blue?"}]
          - id: plain
            messages: [{role: user, content: "Is the sky blue?"}]
    """,
    )
    assert run_cli("run", "--backend", "endpoint", "-o", "r.json", cwd=project_dir).returncode == 0
    calls = {r["id"]: r["calls"][0] for r in read(project_dir / "r.json")["records"]}
    assert calls["graded"]["confidence"] == 0.37 and "confidence" not in calls["plain"]
    assert small.requests[0]["response_format"] == {"type": "json_object"}
    assert {r["fixture_id"]: r["confidence"] for r in recordings(project_dir)} == {
        "graded": 0.37,
        "plain": None,
    }
    assert run_cli("run", "-o", "o.json", cwd=project_dir).returncode == 0
    offline = {r["id"]: r["calls"][0] for r in read(project_dir / "o.json")["records"]}
    assert offline["graded"]["confidence"] == 0.37  # the cascade reads it offline too


def test_stale_recordings_are_reported_and_pruned(project_dir, servers):
    small, large = servers()
    configure(project_dir, small.base_url, large.base_url)
    assert run_cli("run", "--backend", "endpoint", "-o", "r.json", cwd=project_dir).returncode == 0
    fixtures = project_dir / "fixtures" / "support.yaml"
    fixtures.write_text(
        fixtures.read_text().replace("Where is my order 12345?", "Where is my order 999?")
    )

    assert run_cli("run", "-o", "o.json", cwd=project_dir).returncode == 0
    report = read(project_dir / "o.json")
    assert report["recordings"]["stale"] == 1 and report["recordings"]["stale_fixtures"] == [
        "order-status"
    ]
    assert any(
        "stale (fixture or template changed since recording" in w for w in report["warnings"]
    )
    calls = {r["id"]: r["calls"][0] for r in report["records"]}
    assert calls["order-status"]["output_source"] == "prior"  # the old reply is not reused
    assert calls["reset-password"]["output_source"] == "measured"

    stats = run_cli("recordings", "stats", "--format", "json", cwd=project_dir)
    data = json.loads(stats.stdout)
    assert data["stale"] == 1 and data["stale_detail"][0]["fixture"] == "order-status"
    assert data["fixtures_recorded"] == 3  # reset-password, its duplicate, refactor
    text = run_cli("recordings", "stats", cwd=project_dir).stdout
    assert "order-status on small: fixture or template changed since recording" in text
    pruned = run_cli("recordings", "prune", cwd=project_dir)
    assert "dropped 1 of 3" in pruned.stdout
    kept = recordings(project_dir)
    assert {r["fixture_id"] for r in kept} == {"reset-password", "refactor"}
    assert [r["key"] for r in kept] == sorted(r["key"] for r in kept)  # sorted by key: stable diffs


def test_measured_throughput_prices_gpu_time_tiers(project_dir, servers):
    small, large = servers(large={"ttft_s": 0.02, "tpot_s": 0.002})
    configure(project_dir, small.base_url, large.base_url, "replay: {min_profile_requests: 1}\n")
    before = run_cli("run", "-o", "before.json", cwd=project_dir)
    assert before.returncode == 0
    assert (
        read(project_dir / "before.json")["tiers"]["large"]["cost_basis"]
        == "GPU-time, declared throughput (estimated)"
    )

    assert (
        run_cli("run", "--backend", "endpoint", "-o", "live.json", cwd=project_dir).returncode == 0
    )
    profile = read(project_dir / "recordings" / THROUGHPUT_FILE)["tiers"]["large"]
    assert profile["prefill_tokens_per_s"] > 0 and profile["decode_tokens_per_s"] > 0
    assert profile["hardware"]["model"] == "test/large-70b" and profile["concurrency"] == 16

    assert run_cli("run", "-o", "after.json", cwd=project_dir).returncode == 0
    report = read(project_dir / "after.json")
    assert report["tiers"]["large"]["cost_basis"] == "GPU-time, measured throughput"
    large_tier = next(t for t in report["stack"]["tiers"] if t["name"] == "large")
    assert large_tier["pricing"]["source"] == "measured throughput"
    (refactor,) = [r for r in report["records"] if r["id"] == "refactor"]
    assert refactor["calls"][0]["cost_estimated"] is False and refactor["estimated"] is False
    # a profile is used only for the hardware it was measured on
    config = project_dir / "costguard.yaml"
    config.write_text(config.read_text().replace("gpus: 4", "gpus: 8"))
    assert run_cli("run", "-o", "moved.json", cwd=project_dir).returncode == 0
    assert read(project_dir / "moved.json")["tiers"]["large"]["cost_basis"].startswith(
        "GPU-time, declared"
    )


# ---- routing by an external router ------------------------------------------------------------------


def router_double(routes: dict[str, tuple[str, str]], default: tuple[str, str]):
    """A routing proxy in the manner of vLLM semantic-router: model "auto" in, a tier's model out.

    `routes`: substring of the last user message -> (upstream base URL, upstream model).
    """
    import aiohttp
    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["model"] == "auto"
        text = body["messages"][-1]["content"]
        url, model = next((v for k, v in routes.items() if k in text), default)
        body["model"] = model
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat/completions", json=body) as upstream:
                response = web.StreamResponse(
                    status=upstream.status, headers={"Content-Type": upstream.content_type}
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

    return tiny_server(handler)


def use_external_router(project: Path, url: str) -> None:
    config = project / "costguard.yaml"
    text = config.read_text()
    start, end = text.index("\nrouter:"), text.index("\nsuites:")
    config.write_text(
        text[:start] + f'\nrouter: {{kind: external, base_url: "{url}"}}' + text[end:]
    )


def test_external_router_replies_are_attributed_to_tiers_by_model(project_dir, servers):
    small, large = servers()
    routes = {
        "Refactor": (large.base_url, "test/large-70b"),
        "order": (large.base_url, "test/large-70b"),
    }
    with router_double(routes, (small.base_url, "test/small-8b")) as router_url:
        configure(project_dir, small.base_url, large.base_url)
        use_external_router(project_dir, router_url)

        out = run_cli("run", "--backend", "endpoint", "-o", "live.json", cwd=project_dir)
        assert out.returncode == 0, out.stderr
    report = read(project_dir / "live.json")
    assert report["stack"]["router"] == "external"
    routed = {r["id"]: (r["route"]["tier"], r["served_by"]) for r in report["records"]}
    assert routed["refactor"] == ("large", "large") and routed["order-status"] == ("large", "large")
    assert routed["reset-password"] == ("small", "small")
    assert report["routing"]["shares"]["large"] > 0
    # metrics are scraped from each tier's own server, not from the router
    assert report["server_metrics"]["large"]["client"]["requests"] == 2
    assert {r["route"] for r in recordings(project_dir)} == {"external:auto"}

    # offline: the recorded attribution is the route
    offline = run_cli("run", "-o", "o.json", cwd=project_dir)
    assert offline.returncode == 0, offline.stderr
    records = {r["id"]: r for r in read(project_dir / "o.json")["records"]}
    assert records["refactor"]["route"] == {
        "tier": "large",
        "reason": "external router (auto), recorded",
        "score": None,
    }
    assert records["refactor"]["calls"][0]["output_source"] == "measured"
    # ... and without a recording there is no route to guess
    (project_dir / "recordings" / RESPONSES_FILE).unlink()
    missing = run_cli("run", "-o", "m.json", cwd=project_dir)
    assert missing.returncode == 2
    assert "has no recorded route from the external router" in missing.stderr


def test_unknown_reply_model_from_the_external_router_is_an_incomplete_run(project_dir, servers):
    small, large = servers()
    other = FakeVLLM("someone/else").start_in_thread()
    try:
        with router_double({}, (other.base_url, "someone/else")) as router_url:
            configure(project_dir, small.base_url, large.base_url)
            use_external_router(project_dir, router_url)
            out = run_cli("run", "--backend", "endpoint", "-o", "r.json", cwd=project_dir)
    finally:
        other.stop()
    assert out.returncode == 2
    assert "answered with model 'someone/else', which is no tier's" in out.stderr
    assert read(project_dir / "r.json")["complete"] is False


# ---- sharding ---------------------------------------------------------------------------------------


def test_shards_merge_into_the_unsharded_run(project_dir):
    assert run_cli("run", "-o", "full.json", cwd=project_dir).returncode == 0
    for i in (1, 2, 3):
        out = run_cli("run", "--shard", f"{i}/3", "-o", f"s{i}.json", cwd=project_dir)
        assert out.returncode == 0, out.stderr
    sizes = [len(read(project_dir / f"s{i}.json")["records"]) for i in (1, 2, 3)]
    assert sum(sizes) == 4 and max(sizes) <= 2
    merged = run_cli("merge", "s3.json", "s1.json", "s2.json", "-o", "merged.json", cwd=project_dir)
    assert merged.returncode == 0, merged.stderr
    full, joined = read(project_dir / "full.json"), read(project_dir / "merged.json")
    for key in ("totals", "tiers", "suites", "cache", "routing", "counterfactual", "provenance"):
        assert joined[key] == full[key], key  # the same records, summed in the same order
    assert [r["id"] for r in joined["records"]] == [r["id"] for r in full["records"]]
    assert [s["index"] for s in joined["shards"]] == [1, 2, 3] and joined["complete"] is True

    twice = run_cli("merge", "s1.json", "s1.json", "s2.json", cwd=project_dir)
    assert twice.returncode == 2 and "need shards 1..3 of 3, each once" in twice.stderr
    assert run_cli("merge", "full.json", cwd=project_dir).returncode == 2  # not a shard report
    fixtures = project_dir / "fixtures" / "support.yaml"
    fixtures.write_text(fixtures.read_text() + "\n")
    stale = run_cli("merge", "s1.json", "s2.json", "s3.json", cwd=project_dir)
    assert stale.returncode == 2 and "computed from other inputs" in stale.stderr


def test_live_shards_on_separate_machines_merge_reports_and_recordings(
    project_dir, servers, tmp_path
):
    small, large = servers()
    configure(project_dir, small.base_url, large.base_url, "replay: {min_profile_requests: 1}\n")
    other = tmp_path / "job2"  # the second CI job: its own checkout of the same commit
    shutil.copytree(project_dir, other)
    for i, cwd in ((1, project_dir), (2, other)):
        out = run_cli(
            "run", "--backend", "endpoint", "--shard", f"{i}/2", "-o", f"s{i}.json", cwd=cwd
        )
        assert out.returncode == 0, out.stderr
    assert (
        len(small.requests) + len(large.requests) == 3
    )  # every request served once over both shards

    out = run_cli("merge", "s1.json", str(other / "s2.json"), "-o", "m.json", "-q", cwd=project_dir)
    assert out.returncode == 0, out.stderr
    merged = read(project_dir / "m.json")
    assert merged["backend"] == "endpoint" and len(merged["records"]) == 4
    assert sum(s["replay"]["requests"]["planned"] for s in merged["shards"]) == 4

    mine = len(recordings(project_dir))
    out = run_cli("recordings", "merge", str(other / "recordings"), cwd=project_dir)
    assert out.returncode == 0, out.stderr
    assert len(recordings(project_dir)) == 3 > mine
    profiles = read(project_dir / "recordings" / THROUGHPUT_FILE)["tiers"]
    assert set(profiles) == {"small", "large"}  # large was measured by the other job only
    assert run_cli("run", "-o", "o.json", cwd=project_dir).returncode == 0
    assert read(project_dir / "o.json")["provenance"]["output_tokens"]["measured"] == 4


# ---- the launched stack -------------------------------------------------------------------------------


def test_backend_vllm_launches_the_stack_for_the_run_and_stops_it(project_dir):
    from tests.test_stack import group_pids, standin_env, vllm_project

    config = vllm_project(project_dir)
    out = run_cli(
        "run",
        "--backend",
        "vllm",
        "-o",
        "r.json",
        cwd=project_dir,
        env=standin_env(FAKE_VLLM_STARTUP_S="0.5"),
    )
    assert out.returncode == 0, out.stderr
    report = read(project_dir / "r.json")
    assert report["backend"] == "vllm" and report["complete"] is True
    assert report["provenance"]["output_tokens"]["measured"] == 4
    assert "stopped small" in out.stderr and "stopped large" in out.stderr
    pids = [int(p) for p in __import__("re").findall(r"started \w+ \(pid (\d+)\)", out.stderr)]
    assert len(pids) == 2 and all(group_pids(p) == [] for p in pids)
    assert not (project_dir / ".costguard" / "cache" / "stack" / "state.json").exists()
    assert len(recordings(project_dir)) == 3

    # a stack already up is reused and left running; one started from other commands is refused
    env = standin_env()
    assert run_cli("stack", "up", cwd=project_dir, env=env).returncode == 0
    try:
        again = run_cli("run", "--backend", "vllm", "-o", "r2.json", cwd=project_dir, env=env)
        assert again.returncode == 0, again.stderr
        assert "started" not in again.stderr and read(project_dir / "r2.json")["complete"] is True
        assert run_cli("stack", "status", cwd=project_dir, env=env).returncode == 0
        config.write_text(
            config.read_text().replace("tensor_parallel_size: 4,", "tensor_parallel_size: 2,")
        )
        other = run_cli("run", "--backend", "vllm", "-o", "r3.json", cwd=project_dir, env=env)
        assert other.returncode == 2 and "started with other commands" in other.stderr
    finally:
        assert run_cli("stack", "down", cwd=project_dir, env=env).returncode == 0
