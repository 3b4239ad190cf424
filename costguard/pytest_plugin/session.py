"""The state of one `pytest --costguard` run: settings, the plan of items, observed calls, report.

The projection runs once, at session start, in the main process (the pytest-xdist controller
when distributing): it produces the RunReport, the policy verdicts and a `Plan` — every item's
node id, keywords, JUnit properties and outcome — that workers read from a file instead of
projecting again. Calls that tests add through the `costguard` fixture are merged on the
controller (sorted by test and order, so `-n 2` writes the same report as `-n 0`) and the final
report is aggregated once more with them, then written.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from costguard import api
from costguard.engine.observed import (
    DEFAULT_SUITE,
    ObservedCall,
    observe_response,
    observed_records,
    serve_request,
)
from costguard.engine.pipeline import price_call
from costguard.engine.records import ESTIMATED_OUTPUT, RequestRecord
from costguard.errors import CostguardError
from costguard.model.fixtures import Fixture
from costguard.model.settings import read_tool_settings
from costguard.policy.engine import PolicyResult, Verdict
from costguard.report.run_report import DEFAULT_REPORT, RunReport

WORKER_CALLS = "costguard_calls"


# -- settings -----------------------------------------------------------------------------------


@dataclass
class Settings:
    """Where everything is, resolved: command line > pytest ini options > [tool.costguard] > defaults."""

    config: Path
    policies: list[Path]
    fixtures: list[Path]
    baseline: Path | None
    backend: str
    report: Path
    baseline_spec: str | None = None  # as given: a report file / artifact directory, or a git ref


def resolve_settings(config: pytest.Config) -> Settings:
    invocation = Path(config.invocation_params.dir)
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    pyproject = (
        config.inipath
        if config.inipath and config.inipath.name == "pyproject.toml"
        else config.rootpath / "pyproject.toml"
    )
    tool = read_tool_settings(pyproject)

    def many(name: str) -> list[Path]:
        if cli := config.getoption(f"costguard_{name}"):
            return [invocation / p for p in cli]
        if ini := config.getini(f"costguard_{name}"):
            return [ini_dir / p for p in ini]
        return [pyproject.parent / p for p in getattr(tool, name)]

    def one(name: str) -> tuple[Path, str] | None:
        if cli := config.getoption(f"costguard_{name}"):
            return invocation, cli
        if ini := config.getini(f"costguard_{name}"):
            return ini_dir, ini
        if value := getattr(tool, name):
            return pyproject.parent, value
        return None

    def path(name: str, default: str | None) -> Path | None:
        found = one(name)
        if found is None:
            return config.rootpath / default if default else None
        return found[0] / found[1]

    backend = one("backend")
    return Settings(
        config=path("config", api.DEFAULT_CONFIG),  # type: ignore[arg-type]
        policies=many("policy"),
        fixtures=many("fixtures"),
        baseline=path("baseline", None),
        backend=backend[1] if backend else "offline",
        report=path("report", DEFAULT_REPORT),  # type: ignore[arg-type]
        baseline_spec=baseline_given[1] if (baseline_given := one("baseline")) else None,
    )


def resolve_baseline_with_reason(settings: Settings) -> tuple[RunReport | None, str | None]:
    """`--costguard-baseline`: a RunReport file or artifact directory if that path exists, else a
    git ref projected offline in a temporary worktree (the same code path as `costguard diff
    --base-ref`). None with why when there is no usable one (e.g. an incomplete run)."""
    from costguard.compare.baseline import baseline_from_git_ref, baseline_from_path

    assert settings.baseline is not None
    if settings.baseline.exists() or settings.baseline_spec is None:
        found = baseline_from_path(_cwd_relative(settings.baseline))
    else:
        found = baseline_from_git_ref(settings.baseline_spec, config=_cwd_relative(settings.config))
    return found.report, found.reason


# -- the plan: every item and its outcome, decided once ------------------------------------------


@dataclass
class ItemSpec:
    kind: str  # "fixture" | "policy"
    name: str
    line: int | None
    outcome: str  # "pass" | "fail" | "skip" | "warn"
    message: str = ""
    keywords: list[str] = field(default_factory=list)
    properties: list[tuple[str, Any]] = field(default_factory=list)
    skip: str | None = None
    xfail: str | None = None


@dataclass
class FileSpec:
    path: str  # absolute
    nodeid: str
    items: list[ItemSpec] = field(default_factory=list)


@dataclass
class Plan:
    config: str  # absolute path of the stack config (workers load it for the costguard fixture)
    backend: str
    files: list[FileSpec]

    def has_file(self, path: Path) -> bool:
        resolved = str(path.resolve())
        return any(f.path == resolved for f in self.files)

    def file(self, path: Path) -> FileSpec:
        resolved = str(path.resolve())
        return next(f for f in self.files if f.path == resolved)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        files = [
            FileSpec(
                path=f["path"],
                nodeid=f["nodeid"],
                items=[
                    ItemSpec(**{**i, "properties": [tuple(p) for p in i["properties"]]})
                    for i in f["items"]
                ],
            )
            for f in data["files"]
        ]
        return cls(config=data["config"], backend=data["backend"], files=files)


def _display(path: Path, rootpath: Path) -> str:
    try:
        return path.resolve().relative_to(rootpath.resolve()).as_posix()
    except ValueError:
        return str(path)


def _short(value: float | None) -> float | None:
    """A float for a JUnit property: 10 significant digits, no binary noise (4.23e-05, not 4.2300000000000005e-05)."""
    return None if value is None else float(f"{value:.10g}")


def _cwd_relative(path: Path) -> Path:
    """Relative to the working directory when under it, so titles and verdicts read as the user wrote them."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def quality_failure(quality: dict[str, Any]) -> str | None:
    """The failure text for a scored fixture, or None when it passed or was not measured.

    Contract with the quality scorers: `record["quality"]` holds `passed` (bool), optional
    `score` and `measured` (False: no response to score), and `assertions`, each with `type`,
    `passed` and `message`.
    """
    if quality.get("measured") is False or quality.get("passed", True):
        return None
    failed = [a for a in quality.get("assertions", []) if not a.get("passed", True)]
    score = (
        f" (score {quality['score']:.2f})" if isinstance(quality.get("score"), int | float) else ""
    )
    lines = [
        f"quality: {len(failed)} of {len(quality.get('assertions', []))} assertion(s) failed{score}"
    ]
    lines += [f"  {a.get('type', '?')}: {a.get('message', 'failed')}" for a in failed]
    return "\n".join(lines)


def fixture_item(fx: Fixture, record: dict[str, Any] | None, report: RunReport) -> ItemSpec:
    keywords = [fx.suite, *fx.tags]
    if record is None:
        reason = report.get("incomplete_reason") or "the run did not reach it"
        return ItemSpec(
            "fixture",
            fx.id,
            fx.line,
            "fail",
            f"fixture {fx.id}: no record in this run ({reason})",
            keywords,
            skip=fx.skip,
            xfail=fx.xfail,
        )
    primary = record["calls"][0] if record["calls"] else {}
    output_source = (
        "cache"
        if record["cache"]["outcome"] in ("exact", "semantic")
        else primary.get("output_source", "")
    )
    keywords.append(record["route"]["tier"])
    properties: list[tuple[str, Any]] = [
        ("suite", fx.suite),
        ("tier", record["route"]["tier"]),
        ("served_by", record["served_by"]),
        ("cache", record["cache"]["outcome"]),
        ("input_tokens", record["input_tokens"]),
        ("input_tokens_source", primary.get("input_source", "")),
        ("input_tokens_exact", primary.get("input_source") in ("exact", "measured")),
        ("cached_tokens", record["cached_tokens"]),
        ("output_tokens", record["output_tokens"]),
        ("output_tokens_source", output_source),
        ("output_tokens_estimated", output_source in ESTIMATED_OUTPUT),
        ("cost_usd", _short(record["cost_usd"])),
        ("monthly_requests", _short(record["monthly_requests"])),
        ("cost_per_month", _short(record["cost_per_month"])),
        ("estimated", record["estimated"]),
    ]
    outcome, message = "pass", ""
    quality = record.get("quality")
    if isinstance(quality, dict):
        properties.append(("quality_score", quality.get("score")))
        failure = quality_failure(quality)
        if failure:
            outcome, message = "fail", f"fixture {fx.id}: {failure}"
    elif fx.expect.assertions:
        properties.append(("quality", "not scored"))
    return ItemSpec(
        "fixture", fx.id, fx.line, outcome, message, keywords, properties, fx.skip, fx.xfail
    )


def rule_message(v: Verdict, where: str) -> str:
    text = f"rule {v.rule}: {'actual ' if v.actual is not None else ''}{v.message}"
    return f"{text}\n  at {where} (metric {v.metric}, level {v.level})"


def rule_item(v: Verdict, rootpath: Path) -> ItemSpec:
    where = _display(Path(v.file), rootpath) + (f":{v.line}" if v.line else "") if v.file else "?"
    outcome = {"pass": "pass", "fail": "fail", "warn": "warn", "skip": "skip"}[v.status]
    message = v.message if outcome == "skip" else rule_message(v, where)
    properties: list[tuple[str, Any]] = [
        ("metric", v.metric),
        ("level", v.level),
        ("status", v.status),
        ("actual", _short(v.actual)),
        ("limit", v.limit),
        ("unit", v.unit),
        ("estimated", v.estimated),
    ]
    return ItemSpec("policy", v.rule, v.line, outcome, message, [v.metric], properties)


def build_plan(
    project: api.Project,
    report: RunReport,
    results: list[PolicyResult],
    *,
    backend: str,
    rootpath: Path,
) -> Plan:
    by_id = {r["id"]: r for r in report.records}
    files: dict[str, FileSpec] = {}
    for fx in project.fixtures:
        path = Path(fx.file) if Path(fx.file).is_absolute() else project.root / fx.file
        path = path.resolve()
        spec = files.setdefault(str(path), FileSpec(str(path), _display(path, rootpath)))
        spec.items.append(fixture_item(fx, by_id.get(fx.id), report))
    for result in results:
        path = Path(result.policy).resolve()
        spec = files.setdefault(str(path), FileSpec(str(path), _display(path, rootpath)))
        spec.items.extend(rule_item(v, rootpath) for v in result.verdicts)
    return Plan(
        config=str(project.stack.path.resolve()), backend=backend, files=list(files.values())
    )


# -- the run --------------------------------------------------------------------------------------


class CostguardRun:
    """One pytest session's costguard state, in the main process or in an xdist worker."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.settings: Settings | None = None
        self.project: api.Project | None = None
        self.plan: Plan = Plan(config="", backend="offline", files=[])
        self.baseline: RunReport | None = None
        self.baseline_reason: str | None = None
        self.records: list[RequestRecord] = []
        self.replayed: api.Replay | None = None
        self.report: RunReport | None = None
        self.results: list[PolicyResult] = []
        self.calls: list[ObservedCall] = []
        self.final: RunReport | None = None
        self.late_failures: list[Verdict] = []
        self.report_path: Path | None = None
        self.seconds = 0.0
        self._plan_file: Path | None = None

    # -- start: the projection, once --------------------------------------------------------
    def start(self, session: pytest.Session) -> None:
        try:
            if self.is_worker:
                self.plan = Plan.from_json(
                    Path(self.config.workerinput["costguard_plan"]).read_text(encoding="utf-8")
                )  # type: ignore[attr-defined]
                return
            self._project_fixtures()
        except CostguardError as exc:
            raise pytest.UsageError(f"costguard: {exc}") from None

    def _project_fixtures(self) -> None:
        started = time.perf_counter()
        settings = self.settings = resolve_settings(self.config)
        # Paths relative to the working directory where possible, so messages read like the CLI's.
        project = self.project = api.load_project(
            _cwd_relative(settings.config), settings.fixtures or None
        )
        if settings.baseline is not None:
            self.baseline, self.baseline_reason = resolve_baseline_with_reason(settings)
        from costguard.serving import interrupts

        with interrupts.installed():  # SIGTERM/SIGHUP stop a live replay like Ctrl-C
            self.replayed = api.replay(project, backend=settings.backend)
        self.records = self.replayed.records
        self.seconds = time.perf_counter() - started
        self.report = api.report_from_records(
            project,
            self.records,
            backend=self.replayed.backend,
            seconds=self.seconds,
            replayed=self.replayed,
        )
        self.results = [
            api.check(
                self.report,
                _cwd_relative(p),
                baseline=self.baseline,
                baseline_reason=self.baseline_reason,
            )
            for p in settings.policies
        ]
        self.plan = build_plan(
            project,
            self.report,
            self.results,
            backend=settings.backend,
            rootpath=self.config.rootpath,
        )

    def plan_file(self) -> Path:
        """The plan as a file for xdist workers (written once, removed at unconfigure)."""
        if self._plan_file is None:
            fd, name = tempfile.mkstemp(prefix="costguard-plan-", suffix=".json")
            with open(fd, "w", encoding="utf-8") as fh:
                fh.write(self.plan.to_json())
            self._plan_file = Path(name)
        return self._plan_file

    def header_lines(self) -> list[str]:
        if self.is_worker or self.settings is None or self.project is None:
            return []
        root = self.config.rootpath
        policies = ", ".join(_display(p, root) for p in self.settings.policies) or "none"
        return [
            f"costguard: {_display(self.settings.config, root)}, {len(self.project.fixtures)} fixtures, "
            f"backend {self.settings.backend}, policy {policies}"
        ]

    # -- the costguard fixture ----------------------------------------------------------------
    def recorder(self, node: pytest.Item) -> TestCallRecorder:
        return TestCallRecorder(self, node)

    def call_project(self) -> api.Project:
        """The project for observed calls (a worker loads only the stack config, lazily)."""
        if self.project is None:
            from costguard.model.config import load_stack

            self.project = api.Project(
                stack=load_stack(self.plan.config), fixtures=[], fixture_paths=[]
            )
        return self.project

    def merge_worker_output(self, workeroutput: dict[str, Any]) -> None:
        self.calls.extend(ObservedCall.from_dict(d) for d in workeroutput.get(WORKER_CALLS, []))

    # -- finish: merge, aggregate, write ---------------------------------------------------------
    def finish(self, session: pytest.Session) -> None:
        if self.is_worker:
            self.config.workeroutput[WORKER_CALLS] = [c.to_dict() for c in self.calls]  # type: ignore[attr-defined]
            return
        if (
            self.config.option.collectonly
            or self.report is None
            or self.project is None
            or self.settings is None
        ):
            return
        try:
            self.final = self._final_report()
        except CostguardError as exc:  # e.g. an observed call on a tier whose tokenizer fails
            raise pytest.UsageError(f"costguard: {exc}") from None
        self.report_path = self.final.write(self.settings.report)
        if self.late_failures and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _final_report(self) -> RunReport:
        assert self.project is not None and self.settings is not None and self.report is not None
        if not self.calls:
            return self.report
        calls = sorted(self.calls, key=lambda c: (c.test, c.seq))
        extra = observed_records(self.project, calls, first_arrival=len(self.records))
        final = api.report_from_records(
            self.project,
            [*self.records, *extra],
            backend=self.report.get("backend"),
            seconds=self.seconds,
            replayed=self.replayed,
        )
        before = {(r.policy, v.rule) for r in self.results for v in r.failed}
        rechecked = [
            api.check(
                final,
                _cwd_relative(p),
                baseline=self.baseline,
                baseline_reason=self.baseline_reason,
            )
            for p in self.settings.policies
        ]
        self.late_failures = [
            v for r in rechecked for v in r.failed if (r.policy, v.rule) not in before
        ]
        self.results = rechecked
        return final

    def summary(self, tr: Any) -> None:
        if self.final is None:
            return
        from rich.console import Console

        from costguard.render.terminal import print_check, print_run

        buffer = io.StringIO()
        # As wide as the terminal; in CI logs (no terminal) 120 columns, like `costguard run`.
        width = tr._tw.fullwidth if tr.isatty() else 120
        console = Console(
            file=buffer,
            width=width,
            force_terminal=tr.hasmarkup,
            color_system="standard" if tr.hasmarkup else None,
            highlight=False,
        )
        print_run(self.final, console)
        for result in self.results:
            print_check(result, console)
        tr.write_sep("=", "costguard")
        tr.write(buffer.getvalue())
        root = self.config.rootpath
        observed = [r for r in self.final.records if r.get("extra", {}).get("source") == "pytest"]
        if observed:
            untrafficked = sum(1 for r in observed if not r["monthly_requests"])
            tr.write_line(
                f"{len(observed)} LLM call(s) recorded by tests are in the report"
                + (
                    f"; {untrafficked} of them without per_month= (listed, not projected)"
                    if untrafficked
                    else ""
                )
            )
        for v in self.late_failures:
            where = (
                _display(Path(v.file), root) + (f":{v.line}" if v.line else "") if v.file else "?"
            )
            tr.write_line(
                f"FAILED with the calls recorded by tests: {rule_message(v, where)}",
                red=True,
                bold=True,
            )
        if self.report_path is not None:
            tr.write_line(
                f"costguard report written to {_display(self.report_path, Path(self.config.invocation_params.dir))}"
            )

    def close(self) -> None:
        if self._plan_file is not None:
            self._plan_file.unlink(missing_ok=True)
            self._plan_file = None


class TestCallRecorder:
    """What the `costguard` fixture gives a test: its LLM calls join the run's projection."""

    __test__ = False  # not a test class, despite the name
    active = True

    def __init__(self, run: CostguardRun, node: pytest.Item) -> None:
        self._run = run
        self._node = node
        self.calls: list[ObservedCall] = []

    def _where(self) -> tuple[int, str]:
        frame = sys._getframe(2)  # the test's line that called record()/complete()
        path = _display(Path(frame.f_code.co_filename), self._run.config.rootpath)
        return len(self.calls), f"{path}:{frame.f_lineno}"

    def _keep(self, call: ObservedCall) -> dict[str, Any]:
        project = self._run.call_project()
        priced = price_call(project.prices()[call.tier], call.tier, "primary", call.served)
        self._run.calls.append(call)
        self.calls.append(call)
        return {
            "tier": call.tier,
            "input_tokens": priced.input_tokens,
            "cached_tokens": priced.cached_tokens,
            "output_tokens": priced.output_tokens,
            "output_tokens_source": priced.output_source,
            "cost_usd": priced.cost_usd,
            "estimated": priced.estimated,
        }

    def record(
        self,
        request: dict[str, Any],
        response: dict[str, Any],
        *,
        tier: str | None = None,
        suite: str = DEFAULT_SUITE,
        per_month: float = 0.0,
    ) -> dict[str, Any]:
        """Add a real call (an OpenAI request body and the response with `usage`) to the run.

        `per_month`: how many requests a month this call stands for (0: listed, not projected).
        Returns its tier, token counts and cost.
        """
        seq, location = self._where()
        try:
            call = observe_response(
                self._run.call_project(),
                request,
                response,
                test=self._node.nodeid,
                seq=seq,
                location=location,
                tier=tier,
                suite=suite,
                per_month=per_month,
            )
            return self._keep(call)
        except CostguardError as exc:
            error = f"costguard.record: {exc}"
        pytest.fail(error, pytrace=False)  # outside the except: no chained traceback

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        tier: str | None = None,
        suite: str = DEFAULT_SUITE,
        per_month: float = 0.0,
        expected_output_tokens: int | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Serve a chat request through the configured backend and the stack's router; returns an
        OpenAI-shaped response. Offline there is no text (`content` is None): prompt tokens are
        counted exactly, output tokens come from `expected_output_tokens` or the suite's
        `output_tokens_prior` and are labelled estimated."""
        seq, location = self._where()
        project = self._run.call_project()
        request = {"messages": messages, **params}
        try:
            if model is not None and tier is None and model != "auto":
                tier = next(
                    (
                        t.name
                        for t in project.config.tiers
                        if model in (t.api_model_name, t.model, t.name)
                    ),
                    None,
                )
                if tier is None:
                    raise CostguardError(
                        f"model {model!r} names no tier (use model='auto' or omit it to route)"
                    )
            call, result = serve_request(
                project,
                request,
                test=self._node.nodeid,
                seq=seq,
                location=location,
                backend=self._run.plan.backend,
                tier=tier,
                suite=suite,
                per_month=per_month,
                expected_output_tokens=expected_output_tokens,
            )
            summary = self._keep(call)
        except CostguardError as exc:
            error = f"costguard.complete: {exc}"
        else:
            error = None
        if error is not None:
            pytest.fail(error, pytrace=False)  # outside the except: no chained traceback
        tier_config = project.config.tier(call.tier)
        return {
            "id": f"costguard-{call.id}",
            "object": "chat.completion",
            "model": tier_config.api_model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": None,
                }
            ],
            "usage": {
                "prompt_tokens": result.input_tokens,
                "completion_tokens": result.output_tokens,
                "total_tokens": result.input_tokens + result.output_tokens,
                "prompt_tokens_details": {"cached_tokens": result.cached_tokens},
            },
            "costguard": {**summary, "route_reason": call.route_reason},
        }
