"""Assembling the RunReport: a run's records and sections into the versioned report, and the
reports of `run --shard i/n` merged back into one."""

from __future__ import annotations

import datetime as _dt
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import IO, Any

from costguard import __version__
from costguard.engine.forked import Forked, fork_usable
from costguard.engine.pipeline import CacheSimulation
from costguard.engine.project import Project
from costguard.engine.records import RequestRecord
from costguard.engine.routing.router import router_tokenizer_tier
from costguard.engine.run import Replay, lap
from costguard.errors import ConfigError, UsageError
from costguard.report.projection import aggregate
from costguard.report.rows import RecordRows, RowsLayout, encode_row
from costguard.report.run_report import SCHEMA_VERSION, RunReport


def report_from_records(
    project: Project,
    records: Sequence[RequestRecord],
    *,
    backend: str,
    seconds: float,
    replayed: Replay | None = None,
) -> RunReport:
    """Aggregate records (traffic x pricing) into the RunReport, with the replay's own sections
    (cache simulation, live-backend sections, stage timings). The fixtures' records come first."""
    clock = time.perf_counter()
    # Large runs encode their rows on the second core while this one aggregates.
    with _Encoding(records) as rows:
        sections = aggregate(
            records, project.config, project.prices(),
            simulation=replayed.simulation if replayed else None,
            routing=replayed.routing if replayed else None,
        )  # fmt: skip
        if replayed is not None:
            clock = lap(replayed.stages, "aggregate", clock)
        encoded = rows.result()
        if replayed is not None:
            lap(replayed.stages, "report", clock)
        return build_report(
            project, records, sections, backend=backend, seconds=seconds,
            complete=replayed.complete if replayed else True,
            incomplete_reason=replayed.incomplete_reason if replayed else None,
            extra_sections=replayed.sections if replayed else None,
            extra_warnings=replayed.warnings if replayed else (),
            inputs=replayed.inputs if replayed else None,
            stages=replayed.stages if replayed else None,
            rows=encoded,
        )  # fmt: skip


# Below this many records the rows are encoded in this process (and held in memory).
FORK_MIN_RECORDS = 20_000
# Of larger runs, the forked process encodes this share of the rows (the first ones) while this
# one aggregates, then this one encodes the rest: aggregating takes about as long as encoding,
# and the forked process also pays for copying every page it touches.
FORKED_SHARE = 0.85


def encode_records(records: Iterable[RequestRecord], file: IO[bytes] | None = None) -> RecordRows:
    """The report's rows: each record's JSON with its $/month (into `file`, when given)."""
    rows = RecordRows(file=file)
    for r in records:
        d = r.to_dict()
        d["cost_per_month"] = r.monthly_requests * d["cost_usd"]
        rows.append_encoded(encode_row(d))
    return rows


class _Encoding:
    """The rows of `records`: most of them encoded by a forked process into a shared temporary
    file, the rest here on `result()` (all here, in memory, for small runs and where there is
    no second process)."""

    def __init__(self, records: Sequence[RequestRecord]) -> None:
        self._records = records
        self._file: IO[bytes] | None = None
        self._forked: Forked[RowsLayout] | None = None
        self._split = len(records)
        if len(records) >= FORK_MIN_RECORDS and fork_usable():
            self._file = tempfile.TemporaryFile()
            file = self._file
            head = records[: int(len(records) * FORKED_SHARE)]
            self._split = len(head)

            def encode() -> RowsLayout:
                file.seek(0)
                file.truncate()  # (what a failed child left behind)
                return encode_records(head, file).layout()

            self._forked = Forked(encode)

    def result(self) -> RecordRows:
        if self._forked is None or self._file is None:
            return encode_records(self._records)
        tail = encode_records(self._records[self._split :])  # while the forked process finishes
        rows = RecordRows.from_layout(self._file, self._forked.result())
        self._file = None  # the rows own it now
        for _, chunk in tail.chunks():
            for row in chunk.split(b"\n"):
                rows.append_encoded(row)
        return rows

    def close(self) -> None:
        if self._forked is not None:
            self._forked.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> _Encoding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_report(
    project: Project,
    records: Sequence[Any],
    sections: dict[str, Any],
    *,
    backend: str,
    seconds: float,
    complete: bool = True,
    incomplete_reason: str | None = None,
    extra_sections: dict[str, Any] | None = None,
    extra_warnings: Sequence[str] = (),
    inputs: dict[str, Any] | None = None,
    stages: dict[str, float] | None = None,
    rows: RecordRows | None = None,
) -> RunReport:
    """`inputs`: the input hashes taken when the run started (a live run adds recordings);
    `rows`: the records already encoded (`encode_records`)."""
    clock = time.perf_counter()
    config = project.config
    prices = project.prices()
    tiers_summary = []
    for tier in config.tiers:
        tok = project.tokenizer(tier.name)
        tiers_summary.append(
            {
                "name": tier.name,
                "model": tier.model,
                "quantization": tier.quantization,
                "gpus": tier.hardware.gpus,
                "gpu": tier.hardware.gpu,
                "tokenizer": tok.description,
                "tokenizer_exact": tok.exact,
                "tokenizer_counts": tok.input_source,
                "tokenizer_exactness": tok.exactness,
                "pricing": {
                    "kind": prices[tier.name].kind,
                    "basis": prices[tier.name].basis,
                    "source": prices[tier.name].source,
                },
            }
        )
    record_rows = rows if rows is not None else encode_records(records)
    warnings = []
    fallback = [t["name"] for t in tiers_summary if t["tokenizer_exactness"] == "fallback"]
    if fallback:
        warnings.append(
            f"approximate token counts (tokenizer fallback, chars/4) on tier(s): {', '.join(fallback)}"
        )
    stand_in = [t["name"] for t in tiers_summary if t["tokenizer_exactness"] == "stand-in"]
    if stand_in:
        warnings.append(
            f"approximate prompt token counts on tier(s) {', '.join(stand_in)}: the tokenizer is a "
            "stand-in for the model's own (another encoding or a hand-written chat layout); point "
            "`tokenizer.hf:` at the model's tokenizer.json for exact counts, and check them against "
            "the server with `costguard verify`"
        )
    unreported = sections["provenance"].get("cached_tokens", {}).get("unreported", 0)
    if unreported:
        warnings.append(
            f"cached prompt tokens unknown on {unreported} call(s): the server's usage had no "
            "prompt_tokens_details (it cached nothing, or cannot report it; vLLM reports it with "
            "--enable-prompt-tokens-details): labelled `unreported`, not read as 0 cached"
        )
    est_out = sections["provenance"]["output_tokens"]
    n_est = est_out.get("expected", 0) + est_out.get("prior", 0)
    if n_est:
        warnings.append(
            f"output tokens are estimated for {n_est} of {sum(est_out.values())} calls "
            "(expect.output_tokens or suite prior; record responses with a live backend to measure them)"
        )
    quality = sections.get("quality")
    if quality is not None:
        from costguard.engine.quality.assess import unmeasured_warning

        note = unmeasured_warning(quality)
        if note:
            warnings.append(note)
    unbounded = [
        name
        for name, t in sections["cache"]["prefix"]["tiers"].items()
        if t.get("capacity_source") == "unbounded"
    ]
    if unbounded:
        warnings.append(
            f"prefix caches on tier(s) {', '.join(unbounded)} have no declared or derived capacity "
            "(kv_cache.num_gpu_blocks or kv_cache.derive): simulated without eviction, an upper bound on reuse"
        )
    gpu_est = [t["name"] for t in tiers_summary if prices[t["name"]].estimated]
    if gpu_est:
        warnings.append(
            f"GPU-time costs use declared throughput (estimated) on tier(s): {', '.join(gpu_est)}"
        )
    if not complete:
        warnings.insert(
            0,
            f"INCOMPLETE RUN: {incomplete_reason or 'stopped early'}; this report fails every policy",
        )
    warnings.extend(extra_warnings)
    if stages is not None:
        lap(stages, "report", clock)
    data: dict[str, Any] = {
        "kind": "run",
        "schema_version": SCHEMA_VERSION,
        "costguard_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": complete,
        "incomplete_reason": incomplete_reason,
        "backend": backend,
        "stack": {
            "name": config.name,
            **({"variant": project.variant} if project.variant else {}),
            "tiers": tiers_summary,
            "router": config.router.kind if config.router else "single",
            "router_tokenizer_tier": router_tokenizer_tier(config),
            "largest_tier": config.largest.name,
            "caches": config.caches.model_dump(),
        },
        "traffic": {
            "requests_per_month": config.traffic.requests_per_month,
            "seed": config.traffic.seed,
            "suite_shares": {name: block["share"] for name, block in sections["suites"].items()},
        },
        "inputs": inputs or project.input_hashes(),
        **sections,
        **(extra_sections or {}),
        "warnings": warnings,
        "timing": {
            **sections.get("timing", {}),
            "seconds": round(seconds, 3),
            **({"stages": stages} if stages else {}),
        },
        "records": record_rows,
    }
    return RunReport(data)


def merge_shards(project: Project, reports: Sequence[RunReport]) -> RunReport:
    """Join the reports of `run --shard i/n` (i = 1..n, each once) into one RunReport.

    The shards must come from the same inputs as `project` (config, fixtures, templates,
    recordings); records are re-aggregated once here, as an unsharded run would. The merged
    report is complete only if every shard is.
    """
    from costguard.engine.records import RequestRecord

    if not reports:
        raise UsageError("give the shard reports to merge")
    shards = []
    for report in reports:
        where = str(report.path or "report")
        shard = report.get("shard")
        if not isinstance(shard, dict):
            raise ConfigError(
                "not a shard report (no 'shard'; written by `costguard run --shard i/n`)",
                file=where,
            )
        shards.append((int(shard["index"]), int(shard["count"]), report))
    count = shards[0][1]
    indices = sorted(i for i, _, _ in shards)
    if any(n != count for _, n, _ in shards) or indices != list(range(1, count + 1)):
        raise UsageError(
            f"need shards 1..{count} of {count}, each once (got {', '.join(f'{i}/{n}' for i, n, _ in shards)})"
        )

    # Recordings are left out: a live shard adds to them; each shard must share the rest.
    def compared(hashes: Any) -> Any:
        return (
            {k: v for k, v in hashes.items() if k != "recordings"}
            if isinstance(hashes, dict)
            else hashes
        )

    inputs = compared(project.input_hashes())
    backends = {r.get("backend") for _, _, r in shards}
    for i, _, report in shards:
        if compared(report.get("inputs")) != inputs:
            raise ConfigError(
                f"shard {i}/{count} was computed from other inputs (config, fixtures or templates) "
                "than the working tree: merge shards of one commit",
                file=str(report.path or "report"),
            )
    if len(backends) != 1:
        raise UsageError(
            f"the shards ran on different backends ({', '.join(sorted(map(str, backends)))})"
        )
    position = {fx.id: k for k, fx in enumerate(project.fixtures)}
    records = sorted(
        (RequestRecord.from_dict(d) for _, _, r in shards for d in r.records),
        key=lambda rec: position.get(rec.fixture_id, len(position)),
    )
    shards.sort(key=lambda s: s[0])
    carried = shards[0][2].get("cache_simulation")
    simulation = CacheSimulation.from_dict(carried) if isinstance(carried, dict) else None
    from costguard.engine.routing.metrics import routing_run_from_reports

    sections = aggregate(
        records, project.config, project.prices(), simulation=simulation,
        routing=routing_run_from_reports([r for _, _, r in shards]),
    )  # fmt: skip
    reasons = [
        f"shard {i}/{count}: {r.get('incomplete_reason') or 'incomplete'}"
        for i, _, r in shards
        if not r.complete
    ]
    extra: dict[str, Any] = {
        # the same in every shard: it compares recorded answers of all fixtures
        **{k: shards[0][2].get(k) for k in ("agreement",) if shards[0][2].get(k) is not None},
        "shards": [
            {"index": i, "count": count, "complete": r.complete, "fixtures": len(r.records),
             **{k: r.get(k) for k in ("replay", "server_metrics") if r.get(k) is not None}}
            for i, _, r in shards
        ]
    }  # fmt: skip
    # Projection warnings are recomputed from the merged records; what the servers said is carried over.
    warnings = [
        f"shard {i}/{count}: {w}"
        for i, _, r in shards
        for w in r.get("warnings", [])
        if w.startswith("server metrics")
    ]
    return build_report(
        project, records, sections, backend=str(backends.pop()),
        seconds=sum(float(r.get("timing", {}).get("seconds", 0.0)) for _, _, r in shards),
        complete=not reasons, incomplete_reason="; ".join(reasons) or None,
        extra_sections=extra, extra_warnings=warnings,
    )  # fmt: skip
