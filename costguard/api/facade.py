"""`Costguard`: the one object every front end drives (the CLI, the pytest plugin, the Action).

Like coverage.py's `Coverage`: construct it with the config and fixtures, call what you need,
render what you get back. Front ends never reach past it into the engine.

```python
from costguard import Costguard

cg = Costguard("costguard.yaml")
report = cg.run()                                   # offline projection -> RunReport
base = cg.load_baseline("ref:origin/main")          # one grammar: see costguard.api.baselines
diff, verdicts = cg.compare(report, base, policy="policies/default.yaml")
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import costguard.api.core as api
from costguard.api.baselines import BaselineSpec, parse_baseline
from costguard.api.schemas import write_schemas
from costguard.compare.baseline import Baseline, no_baseline
from costguard.compare.diff import DiffReport, load_diff
from costguard.engine.observed import ObservedCall, observe_response, serve_request
from costguard.engine.pipeline import price_call
from costguard.engine.project import (
    DEFAULT_CONFIG,
    Project,
    load_holdout,
    load_project,
    with_variant,
)
from costguard.engine.routing import calibration
from costguard.engine.run import audit_recordings, prune_recordings
from costguard.errors import UsageError
from costguard.model.config import LoadedStack, load_stack
from costguard.model.fixtures import import_logs
from costguard.model.variants import CURRENT, Variant, build_variants, select_variants
from costguard.policy.engine import Acknowledgement, PolicyResult
from costguard.report.assemble import merge_shards
from costguard.report.run_report import RunReport, load_report

if TYPE_CHECKING:
    from costguard.api.ci import CiOutcome, CiRequest, CommentOutcome, CommentRequest
    from costguard.api.html import HtmlWritten
    from costguard.compare.frontier import Frontier
    from costguard.engine.recordings import RecordingAudit, RecordingStore
    from costguard.serving.stack import ServeCommand, StackStartError, StackState

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    return None


class Costguard:
    """A costguard session over one stack config and its fixtures (loaded on first use)."""

    def __init__(
        self,
        config: str | Path = DEFAULT_CONFIG,
        fixtures: Sequence[str | Path] | None = None,
        *,
        variant: str | None = None,
        say: Say | None = None,
    ) -> None:
        self.config_path = Path(config)
        self.fixture_paths = [str(f) for f in fixtures] if fixtures else None
        self.variant = variant
        self.say = say or _quiet  # one-line notices (the CLI: stderr)
        self._project: Project | None = None

    @classmethod
    def of(cls, project: Project, *, say: Say | None = None) -> Costguard:
        """A session over a project already loaded."""
        session = cls(project.stack.path, project.fixture_paths or None, say=say)
        session._project = project
        return session

    @classmethod
    def calls_only(cls, config: str | Path) -> Costguard:
        """A session over the stack config alone, no fixtures: serves and prices observed calls
        (a pytest-xdist worker)."""
        session = cls(config)
        session._project = Project(stack=load_stack(config), fixtures=[], fixture_paths=[])
        return session

    # -- the project ----------------------------------------------------------------------------
    @property
    def project(self) -> Project:
        """The loaded config and fixtures (and the variant, if one was named)."""
        if self._project is None:
            project = load_project(self.config_path, self.fixture_paths)
            if self.variant is not None:
                project = with_variant(project, self.variant)
            self._project = project
        return self._project

    def stack_config(self) -> LoadedStack:
        """The stack config alone (no fixtures, no tokenizers): for commands that need only it."""
        return self._project.stack if self._project is not None else load_stack(self.config_path)

    def cache_dir(self) -> Path | None:
        """The head's token-count cache (shared with a base projected from a git ref), if the
        config exists."""
        if not self.config_path.is_file():
            return None
        return self.stack_config().cache_dir

    # -- run, check, compare ----------------------------------------------------------------------
    def run(self, *, backend: str = "offline", **options: Any) -> RunReport:
        """Replay every fixture (or a shard: `shard=(i, n)`) and build the RunReport.
        `options`: progress, notify, shard, replay_settings (as `costguard.api.run`)."""
        return api.run(self.project, backend=backend, **options)

    def head(self, report: str | Path | None = None) -> tuple[RunReport, str]:
        """The head RunReport (a file, or the offline projection of the working tree) and its label."""
        if report is not None:
            return load_report(report), f"file {report}"
        return self.run(), "working tree"

    def load_report(self, path: str | Path) -> RunReport:
        return load_report(path)

    def load_diff(self, path: str | Path) -> DiffReport:
        return load_diff(path)

    def load_baseline(self, spec: str | BaselineSpec | None) -> Baseline:
        """The baseline a spec names (`ref:REF`, `artifact:NAME`, `file:PATH`, PATH), or none."""
        parsed = parse_baseline(spec) if isinstance(spec, str) or spec is None else spec
        if parsed.kind == "none":
            return no_baseline("no baseline was given (pass --base-ref REF or --baseline FILE|DIR)")
        if parsed.kind == "path":
            return api.load_baseline(path=parsed.value)
        return api.load_baseline(
            base_ref=parsed.value,
            config=self.config_path,
            fixtures=self.fixture_paths,
            cache_dir=self.cache_dir(),
        )

    def check(
        self,
        report: RunReport,
        policy: str | Path,
        *,
        baseline: RunReport | None = None,
        acknowledgement: Acknowledgement | None = None,
    ) -> PolicyResult:
        return api.check(report, policy, baseline=baseline, acknowledgement=acknowledgement)

    def compare(
        self,
        head: RunReport,
        baseline: Baseline,
        *,
        policy: str | Path | None = None,
        acknowledgement: Acknowledgement | None = None,
        head_source: str = "working tree",
    ) -> tuple[DiffReport, PolicyResult | None]:
        """The DiffReport of `head` against `baseline`, with the policy's verdicts attached."""
        return api.compare(
            head, baseline, policy=policy, acknowledgement=acknowledgement, head_source=head_source
        )

    diff = compare

    # -- the pull-request workflow ------------------------------------------------------------------
    def _workflow(self) -> Any:
        from costguard.api.ci import Workflow

        def head(report: str | None) -> tuple[RunReport, str]:
            return self.head(report)

        return Workflow(
            head, self.load_baseline, self.compare, self.say, project_dir=self.project_dir()
        )

    def ci(self, request: CiRequest) -> CiOutcome:
        """`costguard ci`: head, baseline (default: the PR's base commit), diff, policy, PR comment,
        step outputs, job summary; the outcome carries the exit code."""
        return self._workflow().ci(request)

    def comment(self, request: CommentRequest) -> CommentOutcome:
        """`costguard comment github`: post (or update) the PR comment of a diff."""
        return self._workflow().comment(request)

    # -- the HTML report ---------------------------------------------------------------------------
    def project_dir(self) -> Path:
        """costguard.yaml's directory: fixture paths are relative to it (links place them in the
        repository)."""
        return self.config_path.resolve().parent

    def write_html(
        self,
        out: str | Path,
        report: RunReport | DiffReport,
        *,
        head: RunReport | None = None,
        base: RunReport | None = None,
    ) -> int:
        """The self-contained HTML report of a RunReport or DiffReport (for a diff, with the head
        and base RunReports it was made from, when at hand); returns its size in bytes."""
        from costguard.api.html import write_html_report

        return write_html_report(out, report, head=head, base=base, project_dir=self.project_dir())

    def html_report(
        self,
        out: str | Path,
        reports: Sequence[str] = (),
        *,
        head: str | None = None,
        base: str | None = None,
    ) -> HtmlWritten:
        """`costguard report --html`: the page of a RunReport or DiffReport file (default:
        costguard-report.json) and at most one frontier file."""
        from costguard.api.html import html_report_from_files

        return html_report_from_files(
            out, reports, head=head, base=base, project_dir=self.project_dir()
        )

    # -- shards, recordings, calibration, variants -------------------------------------------------
    def merge(self, reports: Sequence[str | Path | RunReport]) -> RunReport:
        """Join the reports of `run --shard i/n` into one RunReport."""
        loaded = [r if isinstance(r, RunReport) else load_report(r) for r in reports]
        return merge_shards(self.project, loaded)

    def recordings(self) -> RecordingStore:
        return self.project.recordings()

    def audit_recordings(self) -> RecordingAudit:
        return audit_recordings(self.project)

    def prune_recordings(self, *, keep_orphaned: bool = False) -> int:
        return prune_recordings(self.project, keep_orphaned=keep_orphaned)

    def merge_recordings(self, sources: Sequence[str | Path]) -> tuple[int, int, RecordingStore]:
        """Fold other recordings directories (e.g. of sharded CI jobs) into this project's:
        (responses taken, throughput profiles taken, the store)."""
        from costguard.engine.recordings import RESPONSES_FILE, RecordingStore, merge_throughput

        stack = self.stack_config()
        path = Path(stack.config.recordings.path)
        directory = path if path.is_absolute() else stack.root / path
        store = RecordingStore(directory)
        dirs = [Path(s) if Path(s).is_dir() else Path(s).parent for s in sources]
        taken = sum(
            store.merge_from(RecordingStore(d)) for d in dirs if (d / RESPONSES_FILE).exists()
        )
        if taken:
            store.save()
        return taken, merge_throughput(directory, dirs), store

    def calibrate(
        self,
        *,
        target_strong_share: float | None = None,
        target_shares: dict[str, float] | None = None,
        holdout: Sequence[str] = (),
        write: bool = False,
    ) -> Any:
        """Router thresholds from the fixtures' score quantiles, so each tier gets its target
        share; `write` edits the config's numbers in place."""
        project = self.project
        targets = dict(target_shares or {})
        if target_strong_share is not None:
            targets[calibration.strong_tier(project.config)] = target_strong_share
        if not targets:
            raise UsageError("give --target-strong-share SHARE or --target-share TIER=SHARE")
        held = load_holdout(project, holdout) if holdout else None
        result = calibration.calibrate(project, targets, holdout=held, holdout_paths=list(holdout))
        if write and result.changed:  # nothing to write when the config already holds them
            calibration.write_thresholds(project.stack, result)
        return result

    def variants(self, *, only: Sequence[str] = (), auto: bool | None = None) -> list[Variant]:
        """The stack variants `frontier` compares (config `frontier:` plus the standard ones)."""
        variants = build_variants(self.project.stack, auto=auto)
        return select_variants(variants, [CURRENT, *only]) if only else variants

    def frontier(
        self, variants: Sequence[Variant] | None = None, *, policy: str | Path | None = None
    ) -> Frontier:
        return api.frontier(self.project, variants or self.variants(), policy=policy)

    def verify(self, **options: Any) -> Any:
        """Offline prompt token counts against a running server's (`costguard verify`); options
        as `costguard.api.verify.verify` (via, tiers, urls, concurrency, timeout_s)."""
        from costguard.api.verify import verify

        return verify(self.project, **options)

    # -- inputs and schemas ------------------------------------------------------------------------
    @staticmethod
    def import_logs(
        log: str | Path, *, suite: str, id_prefix: str = "log", dedupe: bool = False
    ) -> list[dict[str, Any]]:
        """OpenAI-format request logs (JSONL of chat-completion bodies) as fixture dicts."""
        return import_logs(Path(log), suite=suite, id_prefix=id_prefix, dedupe=dedupe)

    @staticmethod
    def write_schemas(out_dir: str | Path) -> list[Path]:
        """JSON Schemas of costguard.yaml, policy and fixture files (editor validation)."""
        return write_schemas(Path(out_dir))

    # -- models and tokenizers from the Hugging Face hub (the Action caches them) --------------------
    def hub_ids(self, backend: str = "offline") -> list[str]:
        """The hub repos a run reads: `tokenizer:ID` of hub tokenizers, plus `model:ID` of each
        tier's weights (and speculative draft) for backend vllm."""
        from costguard.text.tokenization import hub_tokenizer_id

        stack = self.stack_config()
        ids = set()
        for tier in stack.config.tiers:
            tokenizer = hub_tokenizer_id(tier.tokenizer, stack.root)
            if tokenizer:
                ids.add(f"tokenizer:{tokenizer}")
            if backend == "vllm":
                ids.add(f"model:{tier.model}")
                draft = (tier.serve.speculative or {}).get("model")
                if isinstance(draft, str):
                    ids.add(f"model:{draft}")
        return sorted(ids)

    @staticmethod
    def hf_hub_cache_dir() -> Path:
        from costguard.text.tokenization import hf_hub_cache_dir

        return hf_hub_cache_dir()

    def fetch_hub_tokenizers(self, say: Say) -> None:
        """Download the hub tokenizers the tiers name that the local cache lacks."""
        from costguard.text.tokenization import (
            fetch_hub_tokenizer,
            hub_tokenizer_cached,
            hub_tokenizer_id,
        )

        stack = self.stack_config()
        done: set[str] = set()
        for i, tier in enumerate(stack.config.tiers):
            model_id = hub_tokenizer_id(tier.tokenizer, stack.root)
            if model_id is None or model_id in done:
                continue
            done.add(model_id)
            if hub_tokenizer_cached(model_id):
                say(f"costguard: tokenizer {model_id} already in the Hugging Face cache")
                continue
            where = stack.where("tiers", i, "tokenizer", "hf")
            snapshot = fetch_hub_tokenizer(model_id, where=where)
            say(f"costguard: fetched the tokenizer of {model_id} into {snapshot}")

    # -- the vLLM stack as processes -----------------------------------------------------------------
    def stack(self) -> StackControl:
        return StackControl(self.stack_config())

    # -- calls observed in tests (the pytest plugin's `costguard` fixture) ---------------------------
    def observe(self, request: dict[str, Any], response: dict[str, Any], **where: Any) -> Observed:
        """A real call (request body + response with `usage`) priced on its tier."""
        call = observe_response(self.project, request, response, **where)
        return Observed(call, None, self._priced(call))

    def serve(self, request: dict[str, Any], **where: Any) -> Observed:
        """A chat request routed and served by the configured backend (offline: counted, with
        output tokens estimated), priced on its tier."""
        call, result = serve_request(self.project, request, **where)
        return Observed(call, result, self._priced(call))

    def _priced(self, call: ObservedCall) -> dict[str, Any]:
        priced = price_call(self.project.prices()[call.tier], call.tier, "primary", call.served)
        return {
            "tier": call.tier,
            "input_tokens": priced.input_tokens,
            "cached_tokens": priced.cached_tokens,
            "output_tokens": priced.output_tokens,
            "output_tokens_source": priced.output_source,
            "cost_usd": priced.cost_usd,
            "estimated": priced.estimated,
        }


class Observed:
    """One call observed in a test: the call, the backend's result (served calls), its price."""

    def __init__(self, call: ObservedCall, result: Any, summary: dict[str, Any]) -> None:
        self.call, self.result, self.summary = call, result, summary


class StackControl:
    """`costguard stack up|down|status|logs`: one `vllm serve` per tier, started, checked until
    ready, and stopped as whole process groups."""

    def __init__(self, stack: LoadedStack) -> None:
        from costguard.serving import stack as processes

        self.loaded = stack
        self._p = processes

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.loaded.config.tiers]

    def state_dir(self) -> Path:
        return self._p.state_dir(self.loaded)

    def target_version_note(self) -> str:
        """Which vLLM release the planned commands follow (for `stack up --dry-run`)."""
        return self._p.target_version_note(self.loaded.config)

    def plan(self, tiers: Sequence[str] | None = None) -> list[ServeCommand]:
        return self._p.plan_stack(self.loaded, tiers or None)

    def up(
        self, tiers: Sequence[str] | None = None, *, timeout_s: float | None = None, notify: Say
    ) -> StackState:
        """Launch the tiers and wait until every /health answers 200 (StackStartError if not)."""
        return self._p.start_stack(self.loaded, tiers=tiers or None, timeout_s=timeout_s,
                                   notify=notify)  # fmt: skip

    def running(self) -> StackState | None:
        return self._p.read_state(self.loaded)

    def down(self, state: StackState, *, notify: Say) -> list[str]:
        return self._p.stop_stack(state, notify=notify)

    def status(self, state: StackState) -> list[dict[str, Any]]:
        return [self._p.tier_status(proc) for proc in state.tiers]

    def log_tail(self, path: Path, lines: int) -> list[str]:
        return self._p.log_tail(path, lines)

    @property
    def start_error(self) -> type[StackStartError]:
        return self._p.StackStartError


__all__ = ["Costguard", "Observed", "StackControl"]
