"""A project: a loaded stack config and its fixtures, with what runs share loaded on first use
(tokenizers, prices, embedders, the embedding cache, recorded responses)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costguard.errors import ConfigError
from costguard.model.config import LoadedStack, StackConfig, load_stack
from costguard.model.fixtures import Fixture, load_fixtures
from costguard.model.pricing import TierPrice, resolve_price

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
    # sha256 of the fixture files' bytes as loaded, by resolved path (those read via snapshots)
    fixture_hashes: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def config(self) -> StackConfig:
        return self.stack.config

    @property
    def root(self) -> Path:
        return self.stack.root

    @property
    def cache_dir(self) -> Path:
        return self.stack.cache_dir

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
            fixture_hashes=self.fixture_hashes,
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
            "fixtures": [{"path": f, "sha256": self._fixture_sha256(f)} for f in files],
            "templates": [{"path": rel(Path(t)), "sha256": _sha256(Path(t))} for t in templates],
        }
        from costguard.engine.recordings import RESPONSES_FILE, THROUGHPUT_FILE

        recorded = [self.recordings_dir / name for name in (RESPONSES_FILE, THROUGHPUT_FILE)]
        if self.config.recordings.use and any(p.exists() for p in recorded):
            out["recordings"] = [
                {"path": rel(p), "sha256": _sha256(p)} for p in recorded if p.exists()
            ]
        return out

    def _fixture_sha256(self, file: str) -> str | None:
        path = self.root / file
        known = self.fixture_hashes.get(str(path.resolve()))
        if known is not None:  # the bytes the fixtures were read from
            return known
        return _sha256(path) if path.exists() else None

    def _relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def load_project(
    config: str | Path = DEFAULT_CONFIG,
    fixtures: Sequence[str | Path] | None = None,
    cache_dir: Path | None = None,
) -> Project:
    """The stack config and its fixtures (`fixtures`: paths instead of the config's own,
    relative to the working directory); `cache_dir` instead of the config's `cache_dir`."""
    started = time.perf_counter()
    stack = load_stack(config)
    if cache_dir is not None:
        stack.config.cache_dir = str(cache_dir)
    paths = [str(p) for p in fixtures] if fixtures else list(stack.config.fixtures)
    # Fixture paths given on the command line are relative to the working directory;
    # those in costguard.yaml are relative to the config file.
    root = Path.cwd() if fixtures else stack.root
    hashes: dict[str, str] = {}
    loaded = load_fixtures(
        paths,
        root=root,
        project_root=stack.root,
        allowed=stack.allowed,
        confine=not fixtures,
        cache_dir=stack.cache_dir,
        hashes=hashes,
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
        fixture_hashes=hashes,
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
