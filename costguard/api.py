"""The costguard API: load a project -> run it through the stack -> report -> check a policy.

The CLI, the pytest plugin and the Action scripts are thin layers over these functions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costguard import __version__
from costguard.backends import Backend
from costguard.config import LoadedStack, StackConfig, load_stack
from costguard.diff import Baseline, DiffReport, diff_reports
from costguard.errors import ConfigError, UsageError
from costguard.fixtures import Fixture, load_fixtures
from costguard.pipeline import CacheSimulation, Pipeline, Progress, PromptTokens
from costguard.policy import Acknowledgement, MetricContext, PolicyResult, evaluate, load_policy
from costguard.pricing import TierPrice, resolve_price
from costguard.projection import aggregate
from costguard.records import RequestRecord
from costguard.report import SCHEMA_VERSION, RunReport
from costguard.router import build_router, router_tokenizer_tier

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

    def tokenizer(self, tier_name: str) -> Any:
        """The tier's ChatTokenizer (tiers with the same tokenizer spec share one instance)."""
        if tier_name not in self._tokenizers:
            from costguard.tokenization import load_tokenizer

            index = next(i for i, t in enumerate(self.config.tiers) if t.name == tier_name)
            spec = self.config.tiers[index].tokenizer
            for other, tok in self._tokenizers.items():
                if self.config.tier(other).tokenizer == spec:
                    self._tokenizers[tier_name] = tok
                    break
            else:
                self._tokenizers[tier_name] = load_tokenizer(
                    spec, base_dir=self.root, where=self.stack.where("tiers", index, "tokenizer")
                )
        return self._tokenizers[tier_name]

    def prices(self) -> dict[str, TierPrice]:
        if self._prices is None:
            prices = {}
            for i, tier in enumerate(self.config.tiers):
                assert tier.pricing is not None  # load_stack rejects unpriced tiers
                prices[tier.name] = resolve_price(
                    tier.name,
                    tier.pricing,
                    gpus=tier.hardware.gpus,
                    base_dir=self.root,
                    where=self.stack.where("tiers", i, "pricing"),
                )
            self._prices = prices
        return self._prices

    def input_hashes(self) -> dict[str, Any]:
        files = sorted({fx.file for fx in self.fixtures})
        templates = sorted({t for fx in self.fixtures for t in fx.templates})
        rel = self._relative
        return {
            "config": {"path": rel(self.stack.path), "sha256": _sha256(self.stack.path)},
            "fixtures": [{"path": f, "sha256": _sha256(self.root / f) if (self.root / f).exists() else None} for f in files],
            "templates": [{"path": rel(Path(t)), "sha256": _sha256(Path(t))} for t in templates],
        }

    def _relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def load_project(config: str | Path = DEFAULT_CONFIG, fixtures: Sequence[str | Path] | None = None) -> Project:
    stack = load_stack(config)
    paths = [str(p) for p in fixtures] if fixtures else list(stack.config.fixtures)
    # Fixture paths given on the command line are relative to the working directory;
    # those in costguard.yaml are relative to the config file.
    root = Path.cwd() if fixtures else stack.root
    loaded = load_fixtures(paths, root=root)
    if fixtures:
        for fx in loaded:
            try:
                fx.file = str((root / fx.file).resolve().relative_to(stack.root.resolve()))
            except ValueError:
                pass
    _check_suites(stack, loaded)
    return Project(stack=stack, fixtures=loaded, fixture_paths=paths)


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


def count_prompt_tokens(project: Project, *, keep_ids: Sequence[str] = (), progress: Progress | None = None) -> PromptTokens:
    """Prompt token counts per tier for every fixture, through the on-disk content-hash cache.

    For the tiers in `keep_ids` the token ids are kept too (compact uint32 arrays, shared by
    tiers with the same tokenizer), with the ids of the replies that later fixtures of a
    conversation show (so generated blocks can be reused by the follow-up turn).
    """
    from costguard.tokenization import TokenCountCache, encode_chat_cached

    cache = TokenCountCache(project.cache_dir)
    messages = [fx.messages for fx in project.fixtures]
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
            sources[tier.name] = "exact" if tok.exact else "approximate"
            need_ids = tier.name in keep_ids
            hit = by_fingerprint.get(tok.fingerprint)
            if hit is None or (need_ids and hit[1] is None):
                if progress:
                    progress(f"tokens:{tier.name}", 0, len(messages))
                encoded = encode_chat_cached(tok, messages, cache, compact=True)
                hit = ([len(e) for e in encoded], encoded if need_ids else None)
                by_fingerprint[tok.fingerprint] = hit
                if progress:
                    progress(f"tokens:{tier.name}", len(messages), len(messages))
            counts[tier.name] = hit[0]
            if need_ids and hit[1] is not None:
                ids[tier.name] = hit[1]
                if reply_texts is None:
                    from costguard.caches.prefix_fleet import conversation_replies

                    reply_texts = conversation_replies(project.fixtures)
                if tok.fingerprint not in replies_by_fingerprint:
                    import numpy as np

                    # Templates trim message content (Llama 3, most others), and a model does not
                    # generate surrounding whitespace before its stop token.
                    replies_by_fingerprint[tok.fingerprint] = {
                        i: np.asarray(tok.encode_text(text.strip()), dtype=np.uint32) for i, text in reply_texts.items()
                    }
                replies[tier.name] = replies_by_fingerprint[tok.fingerprint]
    finally:
        close = getattr(cache, "close", None)
        if close:
            close()
    return PromptTokens(counts=counts, sources=sources, ids=ids, replies=replies)


def build_prefix_fleet(project: Project) -> Any:
    """The stack's prefix-cache simulators (None when the layer is off); capacity errors are located."""
    from costguard.caches.prefix_fleet import PrefixCacheFleet, kv_capacity, simulated_tiers

    tiers = simulated_tiers(project.config)
    if not tiers:
        return None
    capacities = {}
    for name in tiers:
        index = next(i for i, t in enumerate(project.config.tiers) if t.name == name)
        try:
            capacities[name] = kv_capacity(project.config.tiers[index])
        except ValueError as exc:
            raise ConfigError(f"{exc}", key=project.stack.where("tiers", index, "kv_cache", "derive")) from None
    return PrefixCacheFleet(project.config, capacities)


def build_semantic_embedder(project: Project) -> Any:
    """texts -> normalised embeddings for the semantic cache (None when the layer is off)."""
    semantic = project.config.caches.semantic
    if not semantic.enabled:
        return None
    from costguard.embeddings import DEFAULT_MODEL, Embedder, EmbeddingCache

    embedder = Embedder(semantic.model or DEFAULT_MODEL, cache=EmbeddingCache(directory=project.cache_dir / "embeddings"))
    return embedder.embed


def make_backend(name: str, config: StackConfig) -> Backend:
    """The tier backend called `name` (the one place backend names map to implementations)."""
    if name != "offline":
        raise ConfigError(f"unknown backend {name!r} (available: offline)")
    from costguard.backends.offline import OfflineBackend

    return OfflineBackend(config)


@dataclass
class Replay:
    """The fixtures replayed through the stack: one RequestRecord per fixture (in fixture order),
    what the cache layers did beyond the records, and seconds per stage."""

    records: list[RequestRecord]
    backend: str
    simulation: CacheSimulation | None = None
    stages: dict[str, float] = field(default_factory=dict)


def replay(project: Project, *, backend: str = "offline", progress: Progress | None = None) -> Replay:
    """Every fixture through the stack.

    Front ends that add records of their own (the pytest plugin's observed calls) aggregate
    them together with these through `report_from_records`.
    """
    config = project.config
    prices = project.prices()
    tier_backend = make_backend(backend, config)
    fleet = build_prefix_fleet(project)
    clock = time.perf_counter()
    tokens = count_prompt_tokens(project, keep_ids=list(fleet.instances) if fleet else (), progress=progress)
    stages = {"tokens": round(time.perf_counter() - clock, 4)}
    router = build_router(config, project=project)
    pipeline = Pipeline(
        config,
        router=router,
        backend=tier_backend,
        prices=prices,
        tokens=tokens,
        prefix=fleet,
        embed=build_semantic_embedder(project),
        progress=progress,
    )
    records = pipeline.run(project.fixtures)
    return Replay(records, tier_backend.name, pipeline.simulation, {**stages, **pipeline.stage_seconds})


def report_from_records(
    project: Project,
    records: Sequence[RequestRecord],
    *,
    backend: str,
    seconds: float,
    simulation: CacheSimulation | None = None,
    stages: dict[str, float] | None = None,
) -> RunReport:
    """Aggregate records (traffic x pricing) into the RunReport. `simulation` is the replay's
    cache simulation; the fixtures' records must come first, in fixture order."""
    sections = aggregate(records, project.config, project.prices(), simulation=simulation)
    return build_report(project, records, sections, backend=backend, seconds=seconds, stages=stages)


def run(project: Project, *, backend: str = "offline", progress: Progress | None = None) -> RunReport:
    """Replay every fixture through the stack and build the RunReport."""
    started = time.perf_counter()
    replayed = replay(project, backend=backend, progress=progress)
    return report_from_records(
        project,
        replayed.records,
        backend=replayed.backend,
        seconds=time.perf_counter() - started,
        simulation=replayed.simulation,
        stages=replayed.stages,
    )


def build_report(
    project: Project,
    records: Sequence[Any],
    sections: dict[str, Any],
    *,
    backend: str,
    seconds: float,
    complete: bool = True,
    incomplete_reason: str | None = None,
    stages: dict[str, float] | None = None,
) -> RunReport:
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
                "pricing": {"kind": prices[tier.name].kind, "basis": prices[tier.name].basis, "source": prices[tier.name].source},
            }
        )
    record_dicts = []
    for r in records:
        d = r.to_dict()
        d["cost_per_month"] = r.monthly_requests * r.cost_usd
        record_dicts.append(d)
    warnings = []
    approx = [t["name"] for t in tiers_summary if not t["tokenizer_exact"]]
    if approx:
        warnings.append(f"approximate token counts (tokenizer fallback) on tier(s): {', '.join(approx)}")
    est_out = sections["provenance"]["output_tokens"]
    n_est = est_out.get("expected", 0) + est_out.get("prior", 0)
    if n_est:
        warnings.append(
            f"output tokens are estimated for {n_est} of {sum(est_out.values())} calls "
            "(expect.output_tokens or suite prior; record responses with a live backend to measure them)"
        )
    unbounded = [name for name, t in sections["cache"]["prefix"]["tiers"].items() if t.get("capacity_source") == "unbounded"]
    if unbounded:
        warnings.append(
            f"prefix caches on tier(s) {', '.join(unbounded)} have no declared or derived capacity "
            "(kv_cache.num_gpu_blocks or kv_cache.derive): simulated without eviction, an upper bound on reuse"
        )
    gpu_est = [t["name"] for t in tiers_summary if prices[t["name"]].estimated]
    if gpu_est:
        warnings.append(f"GPU-time costs use declared throughput (estimated) on tier(s): {', '.join(gpu_est)}")
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
        "inputs": project.input_hashes(),
        **sections,
        "warnings": warnings,
        "timing": {"seconds": round(seconds, 3), **({"stages": stages} if stages else {})},
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
) -> PolicyResult:
    """Evaluate a policy file against a report (and a baseline, for regression rules)."""
    policy = load_policy(policy_path)
    ctx = MetricContext(report=report, baseline=baseline, diff=diff.data if diff is not None else None)
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
    from costguard import baseline as store

    if path is not None and base_ref is not None:
        raise UsageError("give either a baseline file/directory or --base-ref, not both")
    if path is not None:
        return store.baseline_from_path(path)
    if base_ref is not None:
        return store.baseline_from_git_ref(base_ref, config=config, fixtures=fixtures, cache_dir=cache_dir)
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
        result = check(head, policy, baseline=baseline.report, diff=diff, acknowledgement=acknowledgement)
        diff.attach_policy(result.to_dict())
    return diff, result
