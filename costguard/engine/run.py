"""Replaying a project's fixtures through the stack: token counts, caches, router, backend,
quality scorer, put together for one run; what the run's backend leaves for the report."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costguard.engine.backends import Backend
from costguard.engine.backends.factory import open_backend
from costguard.engine.pipeline import CacheSimulation, Pipeline, PromptTokens
from costguard.engine.project import Project
from costguard.engine.quality.scorers.judge import recorded_judge_keys
from costguard.engine.recordings import RecordingAudit, RecordingStore
from costguard.engine.records import RequestRecord
from costguard.engine.result_caches import StartedPass, start_pass
from costguard.engine.routing.factory import build_router
from costguard.engine.routing.router import RoutingRun
from costguard.engine.traffic import Progress
from costguard.errors import ConfigError
from costguard.model.fixture_record import MessagesOf
from costguard.model.fixtures import Fixture

if TYPE_CHECKING:
    import numpy as np


def count_prompt_tokens(
    project: Project, *, keep_ids: Sequence[str] = (), progress: Progress | None = None
) -> PromptTokens:
    """Prompt token counts per tier for every fixture, through the on-disk content-hash cache.

    For the tiers in `keep_ids` the token ids are kept too (compact uint32 arrays, shared by
    tiers with the same tokenizer), with the ids of the replies that later fixtures of a
    conversation show (so generated blocks can be reused by the follow-up turn).
    """
    from costguard.text.tokenization import TokenCountCache, encode_chat_cached

    cache = TokenCountCache(project.cache_dir)
    messages = MessagesOf(project.fixtures)  # read as the tokenizer needs them
    tools = [fx.tools for fx in project.fixtures]
    keys = [fx.messages_digest for fx in project.fixtures]  # derived once per fixture
    counts: dict[str, list[int]] = {}
    sources: dict[str, str] = {}
    ids: dict[str, list[Sequence[int]]] = {}
    replies: dict[str, dict[int, Sequence[int] | np.ndarray]] = {}
    by_fingerprint: dict[str, tuple[list[int], list[Sequence[int]] | None]] = {}
    reply_texts: dict[int, str] | None = None
    replies_by_fingerprint: dict[str, dict[int, Sequence[int] | np.ndarray]] = {}
    try:
        for tier in project.config.tiers:
            tok = project.tokenizer(tier.name)
            sources[tier.name] = tok.input_source
            need_ids = tier.name in keep_ids
            hit = by_fingerprint.get(tok.fingerprint)
            if hit is None or (need_ids and hit[1] is None):
                if progress:
                    progress(f"tokens:{tier.name}", 0, len(messages))
                encoded = encode_chat_cached(
                    tok,
                    messages,
                    cache,
                    tools_list=tools,
                    compact=True,
                    keys=keys,
                    background_write=True,
                )
                hit = ([len(e) for e in encoded], encoded if need_ids else None)
                by_fingerprint[tok.fingerprint] = hit
                if progress:
                    progress(f"tokens:{tier.name}", len(messages), len(messages))
            counts[tier.name] = hit[0]
            if need_ids and hit[1] is not None:
                ids[tier.name] = hit[1]
                if reply_texts is None:
                    from costguard.engine.caches.prefix_fleet import conversation_replies

                    reply_texts = conversation_replies(project.fixtures)
                if tok.fingerprint not in replies_by_fingerprint:
                    import numpy as np

                    # Templates trim message content (Llama 3, most others), and a model does not
                    # generate surrounding whitespace before its stop token.
                    replies_by_fingerprint[tok.fingerprint] = {
                        i: np.asarray(tok.encode_text(text.strip()), dtype=np.uint32)
                        for i, text in reply_texts.items()
                    }
                replies[tier.name] = replies_by_fingerprint[tok.fingerprint]
    finally:
        close = getattr(cache, "close", None)
        if close:
            close()
    return PromptTokens(counts=counts, sources=sources, ids=ids, replies=replies)


def build_prefix_fleet(project: Project) -> Any:
    """The stack's prefix-cache simulators (None when the layer is off); capacity errors are located."""
    from costguard.engine.caches.prefix_fleet import PrefixCacheFleet, kv_capacity, simulated_tiers

    tiers = simulated_tiers(project.config, project.stack.where)
    if not tiers:
        return None
    capacities = {}
    for name in tiers:
        index = next(i for i, t in enumerate(project.config.tiers) if t.name == name)
        try:
            capacities[name] = kv_capacity(project.config.tiers[index])
        except ValueError as exc:
            raise ConfigError(
                f"{exc}", key=project.stack.where("tiers", index, "kv_cache", "derive")
            ) from None
    return PrefixCacheFleet(project.config, capacities)


def quality_scorer(project: Project, backend: Backend) -> Any:
    """The QualityScorer of a run: `similar` embeds through the project's embedding cache, `judge`
    requests go through the run's backend (offline: recorded judge replies), custom scorers are
    imported from the project root. Every assertion is checked here, before the run starts."""
    from costguard.engine.quality.assess import QualityScorer
    from costguard.engine.quality.scorers.judge import Judge

    def count_prompt(tier: str, messages: list[dict[str, Any]]) -> tuple[int, str]:
        tok = project.tokenizer(tier)
        return tok.count_chat(messages), tok.input_source

    scorer = QualityScorer(
        project.config,
        root=project.root,
        embedder=project.embedder,
        judge=Judge(project.config, backend, count_prompt),
    )
    scorer.prepare(project.fixtures)
    return scorer


def build_semantic_embedder(project: Project) -> Any:
    """texts -> normalised embeddings for the semantic cache (None when the layer is off)."""
    semantic = project.config.caches.semantic
    if not semantic.enabled:
        return None
    return project.embedder(semantic.model).embed


def tier_agreement(project: Project) -> dict[str, Any] | None:
    """Small-vs-large agreement of the recorded answers: the report's `agreement` section (None
    without recorded answers of one fixture on the largest tier and another)."""
    if not project.config.recordings.use:
        return None
    store = project.recordings()
    if not len(store):
        return None
    from costguard.engine.quality.agreement import agreement_section

    def recorded_text(fixture: Fixture, tier: Any) -> str | None:
        rec = store.get(fixture, tier)
        return rec.text if rec is not None else None

    return agreement_section(project.fixtures, project.config, recorded_text, project.embedder)


@dataclass
class Replay:
    """The fixtures replayed through the stack: one RequestRecord per request served (in fixture
    order), what the backend and the cache layers say beyond the records, and seconds per stage."""

    records: list[RequestRecord]
    backend: str
    inputs: dict[str, Any]  # input hashes as the run started
    incomplete_reason: str | None = None  # set when a live backend stopped early
    sections: dict[str, Any] = field(
        default_factory=dict
    )  # replay, server_metrics, recordings, shard, ...
    warnings: list[str] = field(default_factory=list)
    simulation: CacheSimulation | None = None  # what the cache layers did beyond the records
    stages: dict[str, float] = field(default_factory=dict)  # seconds per pipeline stage
    routing: RoutingRun | None = (
        None  # router overhead, cascade method: what the records cannot hold
    )

    @property
    def complete(self) -> bool:
        return self.incomplete_reason is None


def replay(
    project: Project,
    *,
    backend: str = "offline",
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
    replay_settings: dict[str, Any] | None = None,
    notify: Callable[[str], None] | None = None,
) -> Replay:
    """Every fixture (or one shard of them) through the stack: one RequestRecord per request served.

    `replay_settings` overrides the config's `replay:` for live backends (e.g. concurrency).
    Front ends that add records of their own (the pytest plugin's observed calls) aggregate
    them together with these through `report_from_records`.
    """
    config = project.config
    settings = config.replay.model_copy(update=replay_settings or {})
    clock = time.perf_counter()
    stages: dict[str, float] = {}
    if project.load_seconds is not None:
        stages["load"] = project.load_seconds
    # The result caches need only the fixtures: on a second core while tokens are counted here.
    with start_pass(config, project.fixtures, cache_dir=project.cache_dir) as result_caches:
        return _replay(
            project, result_caches, backend=backend, progress=progress, shard=shard,
            settings=settings, notify=notify, stages=stages, clock=clock,
        )  # fmt: skip


def _replay(
    project: Project,
    result_caches: StartedPass,
    *,
    backend: str,
    progress: Progress | None,
    shard: tuple[int, int] | None,
    settings: Any,
    notify: Callable[[str], None] | None,
    stages: dict[str, float],
    clock: float,
) -> Replay:
    config = project.config
    # The input files' hashes on a thread while tokens are counted (hashing and reading files
    # leave the interpreter to this thread).
    with ThreadPoolExecutor(1, thread_name_prefix="costguard-inputs") as hashing:
        hashed = hashing.submit(project.input_hashes)
        prices = project.prices()
        fleet = build_prefix_fleet(project)
        clock = lap(stages, "inputs", clock)
        tokens = count_prompt_tokens(
            project, keep_ids=list(fleet.instances) if fleet else (), progress=progress
        )
        clock = lap(stages, "tokens", clock)
        inputs = hashed.result()
    clock = lap(stages, "inputs", clock)
    router = build_router(config, project=project, live=backend != "offline")
    with open_backend(
        project, backend, settings=settings, progress=progress, notify=notify
    ) as tier_backend:
        clock = lap(stages, "setup", clock)
        pipeline = Pipeline(
            config,
            router=router,
            backend=tier_backend,
            prices=prices,
            tokens=tokens,
            prefix=fleet,
            embed=build_semantic_embedder(project),
            progress=progress,
            quality=quality_scorer(project, tier_backend),
        )
        # The pipeline's now: it lets the token ids and the prefix caches go once they ran.
        del tokens, fleet
        clock = lap(stages, "setup", clock)
        records = pipeline.run(project.fixtures, shard=shard, result_caches=result_caches)
        clock = time.perf_counter()
    _note_templates(project, records)
    replayed = Replay(
        records,
        tier_backend.name,
        inputs,
        pipeline.incomplete_reason,
        simulation=pipeline.simulation,
        stages={**stages, **pipeline.stage_seconds},
        routing=pipeline.routing,
    )
    replayed.sections, replayed.warnings = _backend_sections(
        project, tier_backend, shard, complete=replayed.complete
    )
    agreement = tier_agreement(project)
    if agreement is not None:
        replayed.sections["agreement"] = agreement
    if (
        shard is not None
    ):  # every shard simulates the caches over all fixtures; merge reports them once
        replayed.sections["cache_simulation"] = pipeline.simulation.to_dict()
    lap(replayed.stages, "sections", clock)
    return replayed


def _note_templates(project: Project, records: Sequence[RequestRecord]) -> None:
    """Each fixture record names the template files it renders (project-relative), so a diff can
    say a template change moved it and the PR comment can link the template."""
    templates = {fx.id: fx.templates for fx in project.fixtures if fx.templates}
    for record in records:
        used = templates.get(record.fixture_id)
        if used:
            # (a new dict: records may share their `extra`)
            record.extra = {
                **record.extra,
                "templates": sorted({project._relative(Path(t)) for t in used}),
            }


def lap(stages: dict[str, float], stage: str, since: float) -> float:
    """Add the seconds since `since` to `stage`; returns now (the next stage's start)."""
    now = time.perf_counter()
    stages[stage] = round(stages.get(stage, 0.0) + now - since, 4)
    return now


def _backend_sections(
    project: Project, backend: Any, shard: tuple[int, int] | None, *, complete: bool
) -> tuple[dict[str, Any], list[str]]:
    """Report sections beyond the projection: replay and server metrics (live), recordings, shard."""
    extra: dict[str, Any] = dict(getattr(backend, "sections", {}))
    warnings: list[str] = list(getattr(backend, "warnings", []))
    if shard is not None:
        extra["shard"] = {"index": shard[0], "count": shard[1]}
    profiles = getattr(backend, "profiles", {})
    if profiles and complete and backend.settings.record:
        from costguard.engine.recordings import save_throughput

        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        path = save_throughput(
            project.recordings_dir, {t: {**p, "measured_at": stamp} for t, p in profiles.items()}
        )
        extra["throughput_profile"] = {"path": project._relative(path), "tiers": profiles}
    recordings = getattr(backend, "recordings", None)
    if recordings is not None and (len(recordings) or recordings.added):
        from costguard.engine.recordings import describe

        audit = audit_recordings(project, recordings)
        section = {
            "path": project._relative(recordings.path),
            **audit.to_dict(),
            "added": recordings.added,
        }
        if backend.name == "offline":
            section["used"] = backend.recorded
            mismatches = backend.prompt_mismatches
            section["prompt_token_mismatches"] = len(mismatches)
            if mismatches:
                fx, tier, counted, recorded = mismatches[0]
                warnings.append(
                    f"{len(mismatches)} recorded response(s) report other prompt token counts than counted here "
                    f"(e.g. {fx} on {tier}: {counted} counted, {recorded} recorded): the tier's tokenizer or chat "
                    "template differs from the server's"
                )
        warnings.extend(describe(audit))
        extra["recordings"] = section
    return extra, warnings


def audit_recordings(project: Project, store: RecordingStore | None = None) -> RecordingAudit:
    """Which recorded responses the current fixtures and tiers use (and their judges), which are
    stale or orphaned."""
    store = store if store is not None else project.recordings()
    judges = recorded_judge_keys(project.fixtures, project.config, store)
    return store.audit(project.fixtures, project.config, judges)


def prune_recordings(project: Project, *, keep_orphaned: bool = False) -> int:
    """Drop the recordings no current fixture x tier (or judge of a current answer) uses."""
    store = project.recordings()
    judges = recorded_judge_keys(project.fixtures, project.config, store)
    return store.prune(project.fixtures, project.config, judges, keep_orphaned=keep_orphaned)
