"""The costguard API: load a project -> run it through the stack -> report -> check a policy.

The CLI, the pytest plugin and the Action scripts are thin layers over these functions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costguard import __version__
from costguard.compare.diff import Baseline, DiffReport, diff_reports
from costguard.engine.backends import Backend
from costguard.engine.pipeline import CacheSimulation, Pipeline, Progress, PromptTokens
from costguard.engine.records import RequestRecord
from costguard.engine.routing.router import RoutingRun, build_router, router_tokenizer_tier
from costguard.errors import ConfigError, UsageError
from costguard.model.config import LoadedStack, StackConfig, load_stack
from costguard.model.fixtures import Fixture, load_fixtures
from costguard.model.pricing import TierPrice, resolve_price
from costguard.policy.engine import (
    Acknowledgement,
    MetricContext,
    PolicyResult,
    evaluate,
    load_policy,
)
from costguard.report.projection import aggregate
from costguard.report.run_report import SCHEMA_VERSION, RunReport

DEFAULT_CONFIG = "costguard.yaml"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Project:
    """A loaded stack config plus its fixtures, with lazily loaded tokenizers and prices."""

    stack: LoadedStack
    fixtures: list[Fixture]
    fixture_paths: list[str]
    _tokenizers: dict[str, Any] = field(default_factory=dict, repr=False)
    _prices: dict[str, TierPrice] | None = field(default=None, repr=False)
    _shared: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # resources variants share (embedder)
    variant: str | None = (
        None  # the stack variant this project runs (None: costguard.yaml as it is)
    )
    _recordings: Any = field(default=None, repr=False)
    load_seconds: float | None = field(default=None, repr=False)  # reading config + fixtures

    @property
    def config(self) -> StackConfig:
        return self.stack.config

    @property
    def root(self) -> Path:
        return self.stack.root

    @property
    def cache_dir(self) -> Path:
        path = Path(self.config.cache_dir)
        return path if path.is_absolute() else self.root / path

    @property
    def recordings_dir(self) -> Path:
        path = Path(self.config.recordings.path)
        return path if path.is_absolute() else self.root / path

    def recordings(self) -> Any:
        """The project's RecordingStore (recorded responses), loaded on first use."""
        if self._recordings is None:
            from costguard.engine.recordings import RecordingStore

            self._recordings = RecordingStore(self.recordings_dir)
        return self._recordings

    def tokenizer(self, tier_name: str) -> Any:
        """The tier's ChatTokenizer (tiers with the same tokenizer spec share one instance)."""
        if tier_name not in self._tokenizers:
            from costguard.text.tokenization import load_tokenizer

            index = next(i for i, t in enumerate(self.config.tiers) if t.name == tier_name)
            spec = self.config.tiers[index].tokenizer
            for other, tok in self._tokenizers.items():
                if self.config.tier(other).tokenizer == spec:
                    self._tokenizers[tier_name] = tok
                    break
            else:
                self._tokenizers[tier_name] = load_tokenizer(
                    spec,
                    base_dir=self.root,
                    where=self.stack.where("tiers", index, "tokenizer"),
                    allowed=self.stack.allowed,
                )
        return self._tokenizers[tier_name]

    def embedder(self, model: str | None = None, precision: str = "auto") -> Any:
        """The sentence embedder for `model` (default all-MiniLM-L6-v2) over the project's embedding
        cache: one per model and precision, shared by the embedding routers, the semantic cache,
        `similar` assertions, agreement and the variants of `frontier`."""
        from costguard.text.embeddings import DEFAULT_MODEL

        key = f"embedder:{model or DEFAULT_MODEL}" + (
            f"@{precision}" if precision != "auto" else ""
        )
        if key not in self._shared:
            from costguard.text.embeddings import Embedder

            self._shared[key] = Embedder(
                model or DEFAULT_MODEL, cache=self.embedding_cache(), precision=precision
            )
        return self._shared[key]

    def embedding_cache(self) -> Any:
        """The project's on-disk embedding cache (`<cache_dir>/embeddings`), one instance for every embedder."""
        if "embedding_cache" not in self._shared:
            from costguard.text.embeddings import EmbeddingCache

            self._shared["embedding_cache"] = EmbeddingCache(
                directory=self.cache_dir / "embeddings"
            )
        return self._shared["embedding_cache"]

    def with_config(self, config: StackConfig, variant: str | None = None) -> Project:
        """The same project (fixtures, root) with another stack config: a variant for `frontier`.

        Tokenizers of tiers whose tokenizer is unchanged, the embedders and the recorded
        responses (when the variant reads the same recordings directory) are shared.
        """
        stack = LoadedStack(config, self.stack.path, self.stack._raw)
        tokenizers = {
            name: tok for name, tok in self._tokenizers.items()
            if any(t.name == name for t in config.tiers) and config.tier(name).tokenizer == self.config.tier(name).tokenizer
        }  # fmt: skip
        recordings = (
            self._recordings if config.recordings.path == self.config.recordings.path else None
        )
        return Project(
            stack=stack,
            fixtures=self.fixtures,
            fixture_paths=self.fixture_paths,
            _tokenizers=tokenizers,
            _recordings=recordings,
            _shared=self._shared,
            variant=variant,
        )

    def prices(self) -> dict[str, TierPrice]:
        """Each tier's price; GPU-time tiers use the recorded throughput profile when it matches
        the tier's model and hardware (and `recordings.measured_throughput` is on)."""
        if self._prices is None:
            profiles: dict[str, Any] = {}
            if self.config.recordings.measured_throughput:
                from costguard.engine.recordings import load_throughput

                profiles = load_throughput(self.recordings_dir)
            prices = {}
            for i, tier in enumerate(self.config.tiers):
                assert tier.pricing is not None  # load_stack rejects unpriced tiers
                measured = None
                if profiles and tier.pricing.kind == "gpu_time":
                    from costguard.engine.recordings import measured_throughput

                    measured = measured_throughput(profiles, tier)
                prices[tier.name] = resolve_price(
                    tier.name,
                    tier.pricing,
                    gpus=tier.hardware.gpus,
                    base_dir=self.root,
                    where=self.stack.where("tiers", i, "pricing"),
                    measured_throughput=measured,
                    allowed=self.stack.allowed,
                )
            self._prices = prices
        return self._prices

    def input_hashes(self) -> dict[str, Any]:
        files = sorted({fx.file for fx in self.fixtures})
        templates = sorted({t for fx in self.fixtures for t in fx.templates})
        rel = self._relative
        out: dict[str, Any] = {
            "config": {"path": rel(self.stack.path), "sha256": _sha256(self.stack.path)},
            "fixtures": [
                {"path": f, "sha256": _sha256(self.root / f) if (self.root / f).exists() else None}
                for f in files
            ],
            "templates": [{"path": rel(Path(t)), "sha256": _sha256(Path(t))} for t in templates],
        }
        from costguard.engine.recordings import RESPONSES_FILE, THROUGHPUT_FILE

        recorded = [self.recordings_dir / name for name in (RESPONSES_FILE, THROUGHPUT_FILE)]
        if self.config.recordings.use and any(p.exists() for p in recorded):
            out["recordings"] = [
                {"path": rel(p), "sha256": _sha256(p)} for p in recorded if p.exists()
            ]
        return out

    def _relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def load_project(
    config: str | Path = DEFAULT_CONFIG, fixtures: Sequence[str | Path] | None = None
) -> Project:
    started = time.perf_counter()
    stack = load_stack(config)
    paths = [str(p) for p in fixtures] if fixtures else list(stack.config.fixtures)
    # Fixture paths given on the command line are relative to the working directory;
    # those in costguard.yaml are relative to the config file.
    root = Path.cwd() if fixtures else stack.root
    loaded = load_fixtures(
        paths,
        root=root,
        project_root=stack.root,
        allowed=stack.allowed,
        confine=not fixtures,
    )
    if fixtures:
        for fx in loaded:
            try:
                fx.file = str((root / fx.file).resolve().relative_to(stack.root.resolve()))
            except ValueError:
                pass
    _check_suites(stack, loaded)
    return Project(
        stack=stack,
        fixtures=loaded,
        fixture_paths=paths,
        load_seconds=round(time.perf_counter() - started, 4),
    )


def with_variant(project: Project, name: str) -> Project:
    """The project with one of its stack variants applied (`costguard frontier --list` names them):
    e.g. "only large", to record every fixture on the large tier with a live backend."""
    from costguard.model.variants import build_variants, select_variants

    (variant,) = select_variants(build_variants(project.stack), [name])
    return project.with_config(variant.config, variant.name)


def load_holdout(project: Project, paths: Sequence[str | Path]) -> list[Fixture]:
    """Fixtures from `paths` (relative to the working directory) checked like `run` checks the
    project's own: a suite the config gives no share is refused, never silently routed at 0%."""
    loaded = load_fixtures(
        [str(p) for p in paths],
        root=Path.cwd(),
        project_root=project.stack.root,
        allowed=project.stack.allowed,
    )
    _check_suites(project.stack, loaded)
    return loaded


def _check_suites(stack: LoadedStack, fixtures: list[Fixture]) -> None:
    suites = stack.config.suites
    declared = {name for name, s in suites.items() if s.share is not None}
    if declared:
        missing = sorted({fx.suite for fx in fixtures} - declared)
        if missing:
            raise ConfigError(
                f"fixtures use suite(s) {', '.join(missing)} that have no share in suites: "
                "(give every suite a share, or none to take shares from fixture weights)",
                file=stack.path,
                key="suites",
            )


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
    messages = [fx.messages for fx in project.fixtures]
    tools = [fx.tools for fx in project.fixtures]
    keys = [fx.messages_digest for fx in project.fixtures]  # derived once per fixture
    counts: dict[str, list[int]] = {}
    sources: dict[str, str] = {}
    ids: dict[str, list[Sequence[int]]] = {}
    replies: dict[str, dict[int, Sequence[int]]] = {}
    by_fingerprint: dict[str, tuple[list[int], list[Sequence[int]] | None]] = {}
    reply_texts: dict[int, str] | None = None
    replies_by_fingerprint: dict[str, dict[int, Sequence[int]]] = {}
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
                    tok, messages, cache, tools_list=tools, compact=True, keys=keys
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


BACKENDS = ("offline", "endpoint", "vllm")


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


@contextmanager
def open_backend(
    project: Project,
    name: str = "offline",
    *,
    settings: Any = None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> Iterator[Backend]:
    """The tier backend called `name` (the one place backend names map to implementations).

    offline: the projection, answering from recorded responses where there are any; endpoint:
    each tier's endpoint.base_url (or the external router); vllm: the launched stack, reused
    when `costguard stack up` runs, else started here and stopped on exit. `settings` is the
    ReplayConfig for live backends (default: the config's `replay:`).
    """
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    config = project.config
    settings = settings or config.replay
    live = name != "offline"
    recordings = (
        project.recordings() if (live and settings.record) or config.recordings.use else None
    )
    if name == "offline":
        from costguard.engine.backends.offline import OfflineBackend

        yield OfflineBackend(config, recordings)
        return
    from costguard.engine.backends.live import LiveBackend, Target, endpoint_targets

    if name == "endpoint":
        yield LiveBackend(project.stack, endpoint_targets(project.stack), name="endpoint",
                          recordings=recordings, replay=settings, progress=progress)  # fmt: skip
        return
    from costguard.serving import stack as stack_processes

    state = stack_processes.read_state(project.stack)
    launched = None
    if state is None or not all(t.running for t in state.tiers):
        if state is not None:
            stack_processes.stop_stack(state, notify=notify)
        launched = state = stack_processes.start_stack(project.stack, notify=notify)
    else:
        planned = {c.tier: c.argv for c in stack_processes.plan_stack(project.stack)}
        if planned != {t.tier: t.argv for t in state.tiers}:
            raise UsageError(
                "the running stack was started with other commands than costguard.yaml now gives "
                "(`costguard stack up --dry-run` shows them): `costguard stack down` first"
            )
    targets = {}
    for proc in state.tiers:
        tier = config.tier(proc.tier)
        key = os.environ.get(tier.serve.api_key_env) if tier.serve.api_key_env else None
        targets[proc.tier] = Target(proc.base_url, tier.api_model_name, key)
    try:
        yield LiveBackend(
            project.stack,
            targets,
            name="vllm",
            recordings=recordings,
            replay=settings,
            progress=progress,
        )
    finally:
        if launched is not None:
            stack_processes.stop_stack(launched, notify=notify)


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
    inputs = project.input_hashes()
    prices = project.prices()
    fleet = build_prefix_fleet(project)
    clock = _lap(stages, "inputs", clock)
    tokens = count_prompt_tokens(
        project, keep_ids=list(fleet.instances) if fleet else (), progress=progress
    )
    clock = _lap(stages, "tokens", clock)
    router = build_router(config, project=project, live=backend != "offline")
    with open_backend(
        project, backend, settings=settings, progress=progress, notify=notify
    ) as tier_backend:
        clock = _lap(stages, "setup", clock)
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
        clock = _lap(stages, "setup", clock)
        records = pipeline.run(project.fixtures, shard=shard)
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
    _lap(replayed.stages, "sections", clock)
    return replayed


def _note_templates(project: Project, records: Sequence[RequestRecord]) -> None:
    """Each fixture record names the template files it renders (project-relative), so a diff can
    say a template change moved it and the PR comment can link the template."""
    templates = {fx.id: fx.templates for fx in project.fixtures if fx.templates}
    for record in records:
        used = templates.get(record.fixture_id)
        if used:
            record.extra["templates"] = sorted({project._relative(Path(t)) for t in used})


def _lap(stages: dict[str, float], stage: str, since: float) -> float:
    """Add the seconds since `since` to `stage`; returns now (the next stage's start)."""
    now = time.perf_counter()
    stages[stage] = round(stages.get(stage, 0.0) + now - since, 4)
    return now


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
    sections = aggregate(
        records, project.config, project.prices(),
        simulation=replayed.simulation if replayed else None, routing=replayed.routing if replayed else None,
    )  # fmt: skip
    if replayed is not None:
        _lap(replayed.stages, "aggregate", clock)
    return build_report(
        project, records, sections, backend=backend, seconds=seconds,
        complete=replayed.complete if replayed else True,
        incomplete_reason=replayed.incomplete_reason if replayed else None,
        extra_sections=replayed.sections if replayed else None,
        extra_warnings=replayed.warnings if replayed else (),
        inputs=replayed.inputs if replayed else None,
        stages=replayed.stages if replayed else None,
    )  # fmt: skip


def run(project: Project, **options: Any) -> RunReport:
    """Replay every fixture (or one shard) through the stack and build the RunReport; `options`
    as for `replay` (backend, progress, shard, replay_settings, notify).

    A live run that stops early returns a report with `complete: false`, which no policy passes.
    """
    started = time.perf_counter()
    replayed = replay(project, **options)
    return report_from_records(project, replayed.records, backend=replayed.backend,
                               seconds=time.perf_counter() - started, replayed=replayed)  # fmt: skip


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

        audit = recordings.audit(project.fixtures, project.config)
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
) -> RunReport:
    """`inputs`: the input hashes taken when the run started (a live run adds recordings)."""
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
    record_dicts = []
    for r in records:
        d = r.to_dict()
        d["cost_per_month"] = r.monthly_requests * r.cost_usd
        record_dicts.append(d)
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
        _lap(stages, "report", clock)
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
        "records": record_dicts,
    }
    return RunReport(data)


def check(
    report: RunReport,
    policy_path: str | Path,
    *,
    baseline: RunReport | None = None,
    diff: DiffReport | None = None,
    acknowledgement: Acknowledgement | None = None,
    baseline_reason: str | None = None,
) -> PolicyResult:
    """Evaluate a policy file against a report (and a baseline, for regression rules)."""
    policy = load_policy(policy_path)
    ctx = MetricContext(
        report=report,
        baseline=baseline,
        diff=diff.data if diff is not None else None,
        baseline_reason=baseline_reason,
    )
    return evaluate(policy, ctx, acknowledgement=acknowledgement)


def load_baseline(
    *,
    path: str | Path | None = None,
    base_ref: str | None = None,
    config: str | Path = DEFAULT_CONFIG,
    fixtures: Sequence[str | Path] | None = None,
    cache_dir: Path | None = None,
) -> Baseline:
    """The baseline from a report file or artifact directory (`path`) or a git ref, or none."""
    from costguard.compare import baseline as store

    if path is not None and base_ref is not None:
        raise UsageError("give either a baseline file/directory or --base-ref, not both")
    if path is not None:
        return store.baseline_from_path(path)
    if base_ref is not None:
        return store.baseline_from_git_ref(
            base_ref, config=config, fixtures=fixtures, cache_dir=cache_dir
        )
    return store.no_baseline("no baseline was given (pass --base-ref REF or --baseline FILE|DIR)")


def compare(
    head: RunReport,
    baseline: Baseline,
    *,
    policy: str | Path | None = None,
    acknowledgement: Acknowledgement | None = None,
    head_source: str = "working tree",
) -> tuple[DiffReport, PolicyResult | None]:
    """Diff `head` against `baseline` and, with a policy, attach its verdicts to the DiffReport."""
    diff = diff_reports(baseline, head, head_source=head_source)
    result = None
    if policy is not None:
        result = check(
            head,
            policy,
            baseline=baseline.report,
            diff=diff,
            acknowledgement=acknowledgement,
            baseline_reason=baseline.reason,
        )
        diff.attach_policy(result.to_dict())
    return diff, result


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


VERIFY_VIA = ("auto", "tokenize", "completion", "both")


def verify(
    project: Project,
    *,
    via: str = "auto",
    tiers: Sequence[str] | None = None,
    urls: dict[str, str] | None = None,
    concurrency: int = 4,
    timeout_s: float = 120.0,
) -> Any:
    """Offline prompt token counts against a running server's, for every fixture and tier.

    `via`: "tokenize" asks vLLM's `/tokenize` (the chat request with its tools, rendered as the
    chat route renders it); "completion" sends a one-token chat completion and reads
    `usage.prompt_tokens` (any OpenAI-compatible server); "auto" uses /tokenize and falls back to
    completions where the server has no such route; "both" checks each way. `urls` maps a tier
    (or "*" for every tier) to its server, else the tier's `endpoint.base_url`.
    Returns a VerifyReport; its exit code is 1 on any mismatch. A server that cannot be reached
    is a BackendError (exit 2): nothing was verified.
    """
    import asyncio

    from costguard.engine.backends.live import Target, endpoint_targets
    from costguard.report.verification import VerifyReport, VerifyRow

    if via not in VERIFY_VIA:
        raise UsageError(f"--via must be one of {', '.join(VERIFY_VIA)} (got {via!r})")
    if concurrency < 1 or timeout_s <= 0:
        raise UsageError("--concurrency must be >= 1 and --timeout > 0")
    names = [t.name for t in project.config.tiers]
    chosen = list(tiers) if tiers else names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise UsageError(f"unknown tier(s) {', '.join(unknown)} (tiers: {', '.join(names)})")
    urls = dict(urls or {})
    bad = sorted(set(urls) - set(names) - {"*"})
    if bad:
        raise UsageError(
            f"--url names unknown tier(s) {', '.join(bad)} (tiers: {', '.join(names)})"
        )
    configured = endpoint_targets(project.stack)
    from costguard.serving import stack as stack_processes

    state = stack_processes.read_state(project.stack)  # `costguard stack up`, if it ran
    targets: dict[str, Target] = {}
    for name in chosen:
        tier = project.config.tier(name)
        url = urls.get(name) or urls.get("*")
        launched = state.tier(name) if state is not None else None
        if url is not None:
            key = configured[name].api_key if name in configured else None
            targets[name] = Target(url, tier.api_model_name, key)
        elif name in configured:
            targets[name] = configured[name]
        elif launched is not None and launched.running:
            key = os.environ.get(tier.serve.api_key_env) if tier.serve.api_key_env else None
            targets[name] = Target(launched.base_url, tier.api_model_name, key)
        else:
            raise UsageError(
                f"tier {name!r} has no server to verify against: pass --url {name}=URL "
                "(or --url URL for every tier), set its endpoint.base_url, or start the stack "
                "with `costguard stack up`"
            )
    offline = count_prompt_tokens(project)
    warnings: list[str] = []
    for name in chosen:
        tok = project.tokenizer(name)
        if not tok.exact:
            warnings.append(
                f"tier {name} counts with a tokenizer that is not the model's own "
                f"({tok.description}): mismatches are expected until `tokenizer.hf:` points at "
                "the model's tokenizer.json"
            )
    rows: list[VerifyRow] = []

    async def run() -> None:
        import aiohttp

        gate = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession() as session:
            for name in chosen:
                tier_rows, notes = await _verify_tier(
                    project,
                    session,
                    gate,
                    name,
                    targets[name],
                    offline.counts[name],
                    via=via,
                    timeout_s=timeout_s,
                )
                rows.extend(tier_rows)
                warnings.extend(notes)

    asyncio.run(run())
    return VerifyReport(
        stack=project.config.name,
        rows=rows,
        servers={name: targets[name].base_url for name in chosen},
        warnings=warnings,
    )


async def _verify_tier(
    project: Project,
    session: Any,
    gate: Any,
    name: str,
    target: Any,
    counts: Sequence[int],
    *,
    via: str,
    timeout_s: float,
) -> tuple[list[Any], list[str]]:
    """Every fixture of one tier against its server: the rows and what to warn about."""
    import asyncio

    from costguard.errors import BackendError
    from costguard.report.verification import VerifyRow
    from costguard.serving.openai_client import BackendConnectionError, BackendTimeoutError
    from costguard.serving.tokenize import RouteMissing, one_token_completion, tokenize_chat

    source = project.tokenizer(name).input_source
    notes: list[str] = []

    async def check(i: int, mode: str) -> VerifyRow:
        fx = project.fixtures[i]
        body = {"model": target.model, **fx.request_body()}
        call = tokenize_chat if mode == "tokenize" else one_token_completion
        row = VerifyRow(
            fixture=fx.id,
            location=fx.location,
            tier=name,
            offline=counts[i],
            offline_source=source,
            server=None,
            via=mode,
        )
        async with gate:
            try:
                got = await call(
                    session, target.base_url, body, api_key=target.api_key, timeout_s=timeout_s
                )
            except (BackendConnectionError, BackendTimeoutError, RouteMissing):
                raise
            except BackendError as exc:  # the server refused this one request
                row.error = str(exc)
                return row
        row.server, row.cached_tokens = got.prompt_tokens, got.cached_tokens
        return row

    indices = list(range(len(project.fixtures)))
    modes = ["completion"] if via == "completion" else ["tokenize"]
    if via == "both":
        modes.append("completion")
    done: list[VerifyRow] = []
    try:
        if via == "auto" and indices:
            try:
                done.append(await check(indices[0], "tokenize"))
            except RouteMissing:
                notes.append(
                    f"tier {name}: {target.base_url} has no /tokenize route (not vLLM?): "
                    "checked with one-token completions (usage.prompt_tokens)"
                )
                modes = ["completion"]
        todo = [(i, m) for m in modes for i in indices][len(done) :]
        done += await asyncio.gather(*(check(i, m) for i, m in todo))
    except RouteMissing as exc:
        raise BackendError(
            f"tier {name}: {exc}; use --via completion for a server without it"
        ) from None
    except (BackendConnectionError, BackendTimeoutError) as exc:
        raise BackendError(f"tier {name}: cannot verify: {exc}") from None
    completion = [r for r in done if r.via == "completion" and r.server is not None]
    if any(r.cached_tokens is None for r in completion):
        notes.append(
            f"tier {name}: {target.base_url} does not report usage.prompt_tokens_details: "
            "cached prompt tokens cannot be measured there (vLLM: --enable-prompt-tokens-details); "
            "live runs label them `unreported`, never 0"
        )
    return done, notes
