"""pytest plugin: `pytest --costguard` runs the projection and gates it with native test items.

One item per fixture (`fixtures/support.yaml::refund-policy-3`) and one per policy rule
(`policies/default.yaml::monthly_spend`), a terminal summary with the tables `costguard run`
prints, the RunReport file, and a `costguard` fixture that adds the LLM calls of the user's own
tests to the projection. This module holds options, hooks and items only; the run itself lives in
`costguard.pytest_plugin.session` over `costguard.api`.

Without `--costguard` the plugin is inert: no items, and nothing beyond pytest and the standard
library is imported (costguard's core loads pydantic, tokenizers and friends).
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from costguard.pytest_plugin.session import CostguardRun, ItemSpec

PLUGIN_NAME = "costguard-run"

# (setting, ini type, help): each is --costguard-<setting>, ini `costguard_<setting>` and
# `<setting>` under [tool.costguard] in pyproject.toml.
SETTINGS = (
    ("config", "string", "stack config file (default: costguard.yaml in the rootdir)"),
    ("policy", "linelist", "policy file; repeatable (default: none, so no rule items)"),
    (
        "fixtures",
        "linelist",
        "fixture file or directory; repeatable (default: `fixtures:` in the config)",
    ),
    ("baseline", "string", "baseline RunReport file for regression rules"),
    ("backend", "string", "tier backend (default: offline)"),
    ("report", "string", "where to write the RunReport JSON (default: costguard-report.json)"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("costguard", "costguard: token, spend and quality gate for LLM stacks")
    group.addoption(
        "--costguard",
        action="store_true",
        default=False,
        help="run the costguard projection: one test item per fixture and per policy rule",
    )
    for name, kind, help_text in SETTINGS:
        group.addoption(
            f"--costguard-{name}",
            dest=f"costguard_{name}",
            action="append" if kind == "linelist" else "store",
            default=None,
            metavar="PATH" if name != "backend" else "NAME",
            help=help_text,
        )
        parser.addini(f"costguard_{name}", f"costguard: {help_text}", type=kind)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "costguard: a costguard fixture or policy-rule item (pytest --costguard)"
    )
    if not config.getoption("costguard"):
        return
    from costguard.pytest_plugin.session import CostguardRun

    config.pluginmanager.register(CostguardPlugin(CostguardRun(config)), PLUGIN_NAME)


def _run(config: pytest.Config) -> CostguardRun | None:
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    return plugin.run if plugin is not None else None


class CostguardPlugin:
    """The hooks that exist only with --costguard (registered by pytest_configure)."""

    def __init__(self, run: CostguardRun) -> None:
        self.run = run
        self.named_on_command_line = False

    @pytest.hookimpl(tryfirst=True)  # before xdist starts its workers: they read the plan
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.run.start(session)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["costguard_plan"] = str(self.run.plan_file())

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        return self.run.header_lines()

    def pytest_collect_file(
        self, file_path: Path, parent: pytest.Collector
    ) -> pytest.Collector | None:
        # Only when named on the command line (`pytest fixtures/support.yaml::sup-refund-timing`);
        # otherwise the session adds every costguard file itself (see below).
        if parent.session.isinitpath(file_path) and self.run.plan.has_file(file_path):
            self.named_on_command_line = True
            return CostguardFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        report = yield
        # The session's own collection has resolved the command-line arguments by now (calling
        # pytest_collect_file above for any costguard file named there).
        if (
            isinstance(collector, pytest.Session)
            and report.passed
            and not self.named_on_command_line
        ):
            report.result.extend(
                CostguardFile.from_parent(collector, path=Path(f.path), nodeid=f.nodeid)
                for f in self.run.plan.files
            )
        return report

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.run.merge_worker_output(getattr(node, "workeroutput", None) or {})

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.run.finish(session)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        self.run.summary(terminalreporter)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.run.close()


class CostguardFile(pytest.File):
    """A fixture file or a policy file: its items come from the run's plan."""

    def collect(self) -> Iterator[pytest.Item]:
        run = _run(self.config)
        assert run is not None
        for spec in run.plan.file(self.path).items:
            yield CostguardItem.from_parent(self, name=spec.name, spec=spec)


class CostguardFailure(Exception):
    """A fixture or rule that failed: reported as its message alone, no traceback."""


class PolicyWarning(UserWarning):
    """A broken `level: warn` rule: the item passes and pytest lists the warning."""


class CostguardItem(pytest.Item):
    """One fixture or policy rule. Its outcome was decided once, by the projection on the
    controller; the item reports it (so pytest-xdist workers never re-run the projection)."""

    def __init__(self, *, spec: ItemSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.add_marker("costguard")
        self.extra_keyword_matches.update(spec.keywords)
        self.user_properties.extend((k, v) for k, v in spec.properties)
        if spec.skip is not None:
            self.add_marker(pytest.mark.skip(reason=spec.skip))
        if spec.xfail is not None:
            self.add_marker(pytest.mark.xfail(reason=spec.xfail, strict=False))

    def runtest(self) -> None:
        outcome, message = self.spec.outcome, self.spec.message
        if outcome == "fail":
            raise CostguardFailure(message)
        if outcome == "skip":
            pytest.skip(message)
        if outcome == "warn":  # attributed to the rule's line in the policy file
            warnings.warn_explicit(
                PolicyWarning(message), PolicyWarning, str(self.path), self.spec.line or 1
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CostguardFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.spec.line - 1 if self.spec.line else None
        return self.path, line, f"costguard {self.spec.kind} {self.name}"


class InertRecorder:
    """The `costguard` fixture without --costguard: recording is a no-op, projecting skips."""

    active = False

    def record(self, request: Any, response: Any, **kwargs: Any) -> None:
        return None

    def complete(self, messages: Any = None, **kwargs: Any) -> Any:
        pytest.skip("costguard.complete() projects through the stack: run pytest --costguard")


@pytest.fixture
def costguard(request: pytest.FixtureRequest) -> Any:
    """Add this test's LLM calls to the costguard run: `costguard.record(request, response)` for a
    real call (measured usage), `costguard.complete(messages=...)` to serve one through the
    configured backend (offline: exact prompt tokens, estimated output tokens)."""
    run = _run(request.config)
    if run is None:
        return InertRecorder()
    return run.recorder(request.node)
