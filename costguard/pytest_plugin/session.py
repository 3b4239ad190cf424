"""The state of one `pytest --costguard` run: settings, the plan of items, observed calls, report.

The projection runs once, at session start, in the main process (the pytest-xdist controller
when distributing): it produces the RunReport, the policy verdicts and a `Plan` — every item's
node id, keywords, JUnit properties and outcome — that workers read from a file instead of
projecting again. Calls that tests add through the `costguard` fixture are merged on the
controller (sorted by test and order, so `-n 2` writes the same report as `-n 0`) and the final
report is aggregated once more with them, then written.

The settings are read in `settings`, the plan of items is built in `plan`.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from costguard import api
from costguard.api import (
    DEFAULT_SUITE,
    Observed,
    ObservedCall,
    PolicyResult,
    RequestRecord,
    RunReport,
    Verdict,
    observed_records,
)
from costguard.errors import CostguardError
from costguard.pytest_plugin.plan import (  # noqa: F401 (ItemSpec, fixture_item, quality_failure: re-exported)
    ItemSpec,
    Plan,
    _display,
    build_plan,
    fixture_item,
    quality_failure,
    rule_message,
)
from costguard.pytest_plugin.settings import (
    Settings,
    _cwd_relative,
    resolve_baseline_with_reason,
    resolve_settings,
)

WORKER_CALLS = "costguard_calls"


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
        self._calls: api.Costguard | None = None

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
        from costguard.api import interrupts

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

    def call_session(self) -> api.Costguard:
        """The facade that serves and prices observed calls (a worker loads only the stack
        config, lazily)."""
        if self._calls is None:
            if self.project is not None:
                self._calls = api.Costguard.of(self.project)
            else:
                self._calls = api.Costguard.calls_only(self.plan.config)
                self.project = self._calls.project
        return self._calls

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

    def _keep(self, observed: Observed) -> dict[str, Any]:
        self._run.calls.append(observed.call)
        self.calls.append(observed.call)
        return observed.summary

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
            observed = self._run.call_session().observe(
                request,
                response,
                test=self._node.nodeid,
                seq=seq,
                location=location,
                tier=tier,
                suite=suite,
                per_month=per_month,
            )
            return self._keep(observed)
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
        calls = self._run.call_session()
        project = calls.project
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
            observed = calls.serve(
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
            call, result = observed.call, observed.result
            summary = self._keep(observed)
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
