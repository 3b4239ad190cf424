"""`pytest --costguard` end to end with pytester, in a temporary project (real tokenizer, real files)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from costguard import api
from costguard.policy.engine import format_value
from tests.conftest import CHAT_TEMPLATE, FIXTURES_YAML, REPO, STACK_YAML, minilm_dir

POLICY_YAML = """\
rules:
  monthly_spend:
    metric: monthly_spend
    max: 100
  small_share:
    metric: tier_share
    tier: small
    min: 0.5
  output_tokens_p95:
    metric: tokens_per_request
    kind: output
    max: 300
    level: warn
  billing_spend:
    metric: suite_spend
    suite: billing
    max: 10
"""

USER_TESTS = """\
def test_plain():
    assert True
"""

RECORDING_TESTS = """\
REQUEST = {{"model": "test/small-8b", "messages": [{{"role": "user", "content": "Summarise ticket {n}"}}]}}
RESPONSE = {{"model": "test/small-8b", "usage": {{"prompt_tokens": {p}, "completion_tokens": {c},
             "prompt_tokens_details": {{"cached_tokens": 4}}}}}}


def test_records_a_real_call_{n}(costguard):
    out = costguard.record(REQUEST, RESPONSE, per_month=50_000)
    assert out["tier"] == "small" and out["output_tokens"] == {c}


def test_projects_a_call_{n}(costguard):
    response = costguard.complete([{{"role": "user", "content": "Write a parser {n}"}}], suite="coding",
                                  expected_output_tokens=120, per_month=1_000)
    assert response["model"] == "test/large-70b"  # the rules router sends suite coding to large
    assert response["usage"]["completion_tokens"] == 120
"""


def make_project(
    pytester: pytest.Pytester, *, policy: str | None = POLICY_YAML, fixtures: str = FIXTURES_YAML
) -> Path:
    root = pytester.path
    (root / "chat.jinja").write_text(CHAT_TEMPLATE)
    (root / "costguard.yaml").write_text(STACK_YAML.format(tok=minilm_dir()))
    (root / "fixtures").mkdir()
    (root / "fixtures" / "support.yaml").write_text(fixtures)
    if policy is not None:
        (root / "policies").mkdir()
        (root / "policies" / "default.yaml").write_text(policy)
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(USER_TESTS)
    return root


# Plugins the inner runs do not need: hypothesis's re-imports hypothesis in every in-process run
# (~3 s), pytest-benchmark's (when installed) warns about xdist in every run under `-n 2`.
QUIET = ("-p", "no:hypothesispytest", "-p", "no:benchmark")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUIET, *args)


def assert_outcomes(
    result: pytest.RunResult, *, policy_warnings: int | None = None, **outcomes: int
) -> None:
    """The outcome counts, and (if given) exactly `policy_warnings` of costguard's PolicyWarnings.

    Other warnings are not this plugin's to count: run under the README's
    `pytest --costguard ...`, the inner runs also see pytest's PytestAssertRewriteWarning about
    modules the outer run already imported.
    """
    result.assert_outcomes(**outcomes, warnings=None)
    if policy_warnings is not None:
        found = [line for line in result.outlines if "PolicyWarning: rule " in line]
        assert len(found) == policy_warnings, found


def run_subprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*QUIET, *args)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def comparable(report: dict) -> dict:
    """A report without the fields that differ between any two runs (wall clock)."""
    return {k: v for k, v in report.items() if k not in ("created_at", "timing")}


def test_costguard_runs_fixture_and_policy_items_and_fails_the_broken_budget(
    pytester: pytest.Pytester,
) -> None:
    root = make_project(pytester)
    result = run(
        pytester, "--costguard", "--costguard-policy", "policies/default.yaml", "-v", "-rs"
    )

    assert_outcomes(result, passed=7, failed=1, skipped=1, policy_warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*costguard: costguard.yaml, 4 fixtures, backend offline, policy policies/default.yaml*",
            "tests/test_app.py::test_plain PASSED*",
            "fixtures/support.yaml::reset-password PASSED*",
            "fixtures/support.yaml::refactor PASSED*",
            "policies/default.yaml::monthly_spend FAILED*",
            "policies/default.yaml::small_share PASSED*",
            "policies/default.yaml::output_tokens_p95 PASSED*",
            "policies/default.yaml::billing_spend SKIPPED*",
        ]
    )
    # The report is written and carries the same numbers as `costguard run` on this project.
    report = load_json(root / "costguard-report.json")
    expected = api.run(api.load_project(root / "costguard.yaml"))
    assert report["totals"]["cost_per_month"] == pytest.approx(expected.totals["cost_per_month"])
    assert [r["id"] for r in report["records"]] == [r["id"] for r in expected.records]

    actual = format_value(report["totals"]["cost_per_month"], "usd")
    result.stdout.fnmatch_lines(
        [
            f"rule monthly_spend: actual {actual} (estimated) breaks <= $100.00",
            "  at policies/default.yaml:2 (metric monthly_spend, level fail)",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    # warn-level rule: passes, listed as a warning; a rule with nothing to measure is skipped, saying why.
    result.stdout.fnmatch_lines(
        [
            "*policies/default.yaml:9: PolicyWarning: rule output_tokens_p95: actual 500* breaks <= 300*"
        ]
    )
    result.stdout.fnmatch_lines(["SKIPPED*suite 'billing' has no fixtures in this run*"])
    # The terminal summary shows the tables `costguard run` prints, and where the report went.
    result.stdout.fnmatch_lines(
        [
            "*= costguard =*",
            "Projected monthly spend: *",
            "*Tiers*",
            "*Suites*",
            "costguard report written to costguard-report.json",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_plain_pytest_collects_nothing_extra(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = run(pytester, "--co", "-q")
    result.stdout.fnmatch_lines(["tests/test_app.py::test_plain", "1 test collected*"])
    assert "costguard" not in result.stdout.str()


def test_plugin_without_the_flag_imports_nothing_heavy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_modules="""
        import sys

        HEAVY = ["costguard.api", "costguard.model.config", "costguard.pytest_plugin.session", "pydantic", "rich",
                 "tokenizers", "tiktoken", "torch", "sentence_transformers", "numpy", "jinja2", "yaml",
                 "aiohttp", "requests"]

        def test_nothing_heavy_was_imported():
            assert "costguard.pytest_plugin" in sys.modules
            assert [m for m in HEAVY if m in sys.modules] == []
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    # Only this plugin (other installed plugins import things of their own).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = run_subprocess(pytester, "-p", "costguard.pytest_plugin", "test_modules.py")
    assert_outcomes(result, passed=1)


def test_junitxml_carries_cost_properties_per_item(pytester: pytest.Pytester) -> None:
    root = make_project(pytester)
    run(
        pytester,
        "--costguard",
        "--costguard-policy",
        "policies/default.yaml",
        "--junitxml=junit.xml",
    )
    report = load_json(root / "costguard-report.json")
    cases = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ET.parse(root / "junit.xml").getroot().iter("testcase")
    }
    refactor = next(r for r in report["records"] if r["id"] == "refactor")
    props = cases["refactor"]
    assert props["suite"] == "coding" and props["tier"] == "large"
    assert int(props["input_tokens"]) == refactor["input_tokens"]
    # The project's tokenizer is a real tokenizer.json: exact, and the property says so.
    assert props["input_tokens_source"] == "exact" and props["input_tokens_exact"] == "True"
    assert int(props["output_tokens"]) == 500 and props["output_tokens_source"] == "expected"
    assert props["output_tokens_estimated"] == "True" and props["estimated"] == "True"
    assert float(props["cost_usd"]) == pytest.approx(refactor["cost_usd"])
    assert float(props["cost_per_month"]) == pytest.approx(refactor["cost_per_month"])
    assert cases["reset-password-dup"]["cache"] == "exact"
    assert cases["reset-password-dup"]["output_tokens_source"] == "cache"
    rule = cases["monthly_spend"]
    assert rule["status"] == "fail" and rule["limit"] == "<= $100.00"
    assert float(rule["actual"]) == pytest.approx(report["totals"]["cost_per_month"])
    assert cases["test_plain"] == {}


def test_keyword_selection_by_suite_tier_and_id(pytester: pytest.Pytester) -> None:
    make_project(pytester)

    def selected(expr: str) -> list[str]:
        out = run(pytester, "--costguard", "--co", "-q", "-k", expr).stdout.lines
        return [line for line in out if "::" in line]

    assert selected("coding") == ["fixtures/support.yaml::refactor"]
    assert selected("large") == ["fixtures/support.yaml::refactor"]
    assert selected("small and not dup") == [
        "fixtures/support.yaml::reset-password",
        "fixtures/support.yaml::order-status",
    ]
    assert selected("order-status") == ["fixtures/support.yaml::order-status"]
    assert len(selected("costguard")) == 4  # the marker; no policy given, so no rule items


def test_skip_and_xfail_come_from_fixture_metadata(pytester: pytest.Pytester) -> None:
    fixtures = FIXTURES_YAML.replace(
        "  - id: order-status\n", "  - id: order-status\n    skip: waiting for the new order API\n"
    ).replace("  - id: refactor\n", "  - id: refactor\n    xfail: too long for the small tier\n")
    make_project(pytester, policy=None, fixtures=fixtures)
    result = run(pytester, "--costguard", "-rsX", "fixtures/support.yaml")
    assert_outcomes(result, passed=2, skipped=1, xpassed=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED*waiting for the new order API", "XPASS*refactor*too long for the small tier"]
    )


def test_exitfirst_and_last_failed(pytester: pytest.Pytester) -> None:
    policy = POLICY_YAML.replace("min: 0.5", "min: 0.9")  # small_share now fails too
    make_project(pytester, policy=policy)
    first = run(pytester, "--costguard", "--costguard-policy", "policies/default.yaml", "-x")
    assert_outcomes(first, passed=5, failed=1)  # stopped at monthly_spend

    full = run(pytester, "--costguard", "--costguard-policy", "policies/default.yaml")
    assert_outcomes(full, passed=6, failed=2, skipped=1, policy_warnings=1)
    rerun = run(
        pytester, "--costguard", "--costguard-policy", "policies/default.yaml", "--lf", "-v"
    )
    assert_outcomes(rerun, failed=2)
    rerun.stdout.fnmatch_lines(
        [
            "policies/default.yaml::monthly_spend FAILED*",
            "policies/default.yaml::small_share FAILED*",
        ]
    )


def test_a_node_id_on_the_command_line_runs_that_item_only(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = run(pytester, "--costguard", "fixtures/support.yaml::order-status", "-v")
    assert_outcomes(result, passed=1)
    result.stdout.fnmatch_lines(["fixtures/support.yaml::order-status PASSED*"])


def test_bad_config_is_one_line_usage_error(pytester: pytest.Pytester) -> None:
    root = make_project(pytester)
    config = root / "costguard.yaml"
    config.write_text(config.read_text().replace("traffic: {", "trafic: {"))
    result = run(pytester, "--costguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: costguard: ")
    assert "costguard.yaml:" in errors[0] and "trafic" in errors[0]
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert not (root / "costguard-report.json").exists()


def test_settings_from_pyproject_tables_and_command_line(pytester: pytest.Pytester) -> None:
    root = make_project(pytester)
    stack = root / "stack"
    stack.mkdir()
    for name in ("costguard.yaml", "chat.jinja", "fixtures"):
        (root / name).rename(stack / name)
    (root / "pyproject.toml").write_text(
        '[tool.costguard]\nconfig = "stack/costguard.yaml"\npolicy = "policies/default.yaml"\nreport = "out/report.json"\n'
    )
    result = run(pytester, "--costguard", "--co", "-q")
    result.stdout.fnmatch_lines(
        ["stack/fixtures/support.yaml::reset-password", "policies/default.yaml::monthly_spend"]
    )
    run(pytester, "--costguard")
    assert (root / "out" / "report.json").is_file()

    # [tool.pytest.ini_options] beats [tool.costguard]; the command line beats both.
    (root / "pyproject.toml").write_text(
        (root / "pyproject.toml").read_text()
        + '\n[tool.pytest.ini_options]\ncostguard_report = "ini.json"\n'
    )
    run(pytester, "--costguard")
    assert (root / "ini.json").is_file()
    run(pytester, "--costguard", "--costguard-report", "cli.json")
    assert (root / "cli.json").is_file()

    (root / "pyproject.toml").write_text(
        '[tool.costguard]\nconfig = "stack/costguard.yaml"\npolcy = "x.yaml"\n'
    )
    bad = run(pytester, "--costguard")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(
        ["ERROR: costguard: *pyproject.toml: tool.costguard.polcy: unknown key*"]
    )


def test_calls_recorded_by_tests_join_the_report(pytester: pytest.Pytester) -> None:
    root = make_project(pytester)
    (root / "tests" / "test_llm.py").write_text(RECORDING_TESTS.format(n=1, p=40, c=25))
    result = run(pytester, "--costguard", "--costguard-policy", "policies/default.yaml")
    assert_outcomes(result, passed=9, failed=1, skipped=1, policy_warnings=1)
    report = load_json(root / "costguard-report.json")
    observed = [r for r in report["records"] if r.get("extra", {}).get("source") == "pytest"]
    assert [r["id"] for r in observed] == [
        "tests/test_llm.py::test_projects_a_call_1#0",
        "tests/test_llm.py::test_records_a_real_call_1#0",
    ]
    projected, recorded = observed
    assert recorded["location"] == "tests/test_llm.py:7"
    assert (
        recorded["calls"][0]["input_source"] == "measured"
        and recorded["calls"][0]["output_source"] == "measured"
    )
    assert (recorded["input_tokens"], recorded["cached_tokens"], recorded["output_tokens"]) == (
        40,
        4,
        25,
    )
    assert recorded["cost_usd"] == pytest.approx((36 * 0.10 + 4 * 0.05 + 25 * 0.40) / 1e6)
    assert recorded["monthly_requests"] == 50_000
    assert (
        projected["served_by"] == "large" and projected["calls"][0]["output_source"] == "expected"
    )
    assert projected["estimated"] is True
    assert report["suites"]["pytest"]["requests_per_month"] == pytest.approx(50_000)
    assert report["suites"]["coding"]["requests_per_month"] == pytest.approx(200_000 + 1_000)
    fixtures_only = api.run(api.load_project(root / "costguard.yaml"))
    assert report["totals"]["cost_per_month"] == pytest.approx(
        fixtures_only.totals["cost_per_month"]
        + 50_000 * recorded["cost_usd"]
        + 1_000 * projected["cost_usd"]
    )
    result.stdout.fnmatch_lines(["2 LLM call(s) recorded by tests are in the report"])


def test_a_budget_broken_only_by_recorded_calls_fails_the_session(
    pytester: pytest.Pytester,
) -> None:
    root = make_project(
        pytester, policy="rules:\n  monthly_spend: {metric: monthly_spend, max: 400}\n"
    )
    (root / "tests" / "test_llm.py").write_text(
        "def test_heavy_call(costguard):\n"
        "    costguard.complete([{'role': 'user', 'content': 'Plan a migration'}], tier='large',\n"
        "                       expected_output_tokens=2000, per_month=1_000_000)\n"
    )
    result = run(pytester, "--costguard", "--costguard-policy", "policies/default.yaml")
    assert_outcomes(result, passed=7)  # every item passed on the fixtures' projection ...
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # ... but the final report breaks the budget
    result.stdout.fnmatch_lines(
        ["FAILED with the calls recorded by tests: rule monthly_spend: actual $* breaks <= $400.00"]
    )


def test_bad_recorded_call_fails_its_test_with_one_line(pytester: pytest.Pytester) -> None:
    root = make_project(pytester, policy=None)
    (root / "tests" / "test_llm.py").write_text(
        "def test_no_usage(costguard):\n"
        "    costguard.record({'model': 'test/small-8b', 'messages': [{'role': 'user', 'content': 'hi'}]},\n"
        "                     {'model': 'test/small-8b', 'choices': []})\n"
        "\n"
        "def test_unknown_model(costguard):\n"
        "    costguard.record({'model': 'gpt-x', 'messages': [{'role': 'user', 'content': 'hi'}]},\n"
        "                     {'usage': {'prompt_tokens': 3, 'completion_tokens': 1}})\n"
    )
    result = run(pytester, "--costguard", "tests/test_llm.py", "-m", "not costguard")
    assert_outcomes(result, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*costguard.record: tests/test_llm.py:2: response has no `usage` object*",
            "*costguard.record: tests/test_llm.py:6: 'gpt-x' matches no tier (tiers: small (test/small-8b), large (test/large-70b)); pass tier=NAME",
        ]
    )


def test_costguard_fixture_without_the_flag_records_nothing(pytester: pytest.Pytester) -> None:
    root = make_project(pytester, policy=None)
    (root / "tests" / "test_llm.py").write_text(
        "def test_record(costguard):\n"
        "    assert costguard.record({'messages': []}, {}) is None\n"
        "\n"
        "def test_complete(costguard):\n"
        "    costguard.complete([{'role': 'user', 'content': 'hi'}])\n"
    )
    result = run(pytester, "-rs")
    assert_outcomes(result, passed=2, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*run pytest --costguard*"])
    assert not (root / "costguard-report.json").exists()


COUNT_REPLAYS = """\
import os

from costguard import api

_replay = api.replay


def _counted(*args, **kwargs):
    with open("replays.log", "a") as fh:
        fh.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
    return _replay(*args, **kwargs)


api.replay = _counted


def pytest_unconfigure(config):
    api.replay = _replay  # in-process runs share the module with the outer session
"""


def test_xdist_projects_once_and_writes_the_same_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(pytester)
    (root / "tests" / "test_llm_a.py").write_text(RECORDING_TESTS.format(n=1, p=40, c=25))
    (root / "tests" / "test_llm_b.py").write_text(RECORDING_TESTS.format(n=2, p=55, c=70))
    (root / "conftest.py").write_text(COUNT_REPLAYS)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # when this suite itself runs under xdist
    args = ("--costguard", "--costguard-policy", "policies/default.yaml", "-p", "xdist")

    serial = run(pytester, *args, "-n", "0", "--costguard-report", "serial.json")
    assert_outcomes(serial, passed=11, failed=1, skipped=1, policy_warnings=1)
    assert (root / "replays.log").read_text() == "main\n"
    (root / "replays.log").unlink()

    parallel = run_subprocess(
        pytester, *args, "-n", "2", "--costguard-report", "parallel.json", "--junitxml=j.xml"
    )
    assert_outcomes(parallel, passed=11, failed=1, skipped=1, policy_warnings=1)
    parallel.stdout.fnmatch_lines(
        ["2 workers [[]13 items[]]", "*rule monthly_spend: actual $* breaks <= $100.00"]
    )
    assert (
        root / "replays.log"
    ).read_text() == "main\n"  # the controller projected; the workers did not

    one, two = load_json(root / "serial.json"), load_json(root / "parallel.json")
    assert (
        len([r for r in two["records"] if r.get("extra", {}).get("source") == "pytest"]) == 4
    )  # every worker's calls merged
    assert comparable(one) == comparable(two)
    props = {
        p.get("name"): p.get("value")
        for case in ET.parse(root / "j.xml").getroot().iter("testcase")
        if case.get("name") == "refactor"
        for p in case.iter("property")
    }
    assert (
        props["tier"] == "large"
    )  # properties travel from the workers to the controller's JUnit file


def test_bundled_example_passes_its_default_policy_and_fails_the_strict_one(
    pytester: pytest.Pytester,
) -> None:
    import shutil

    for name in ("costguard.yaml", "fixtures", "policies", "tokenizers"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, pytester.path / name)
    n_fixtures = len(api.load_project(pytester.path / "costguard.yaml").fixtures)

    from costguard.policy.engine import METRICS, load_policy

    rules = load_policy(pytester.path / "policies" / "default.yaml").rules.values()
    need_baseline = sum(
        METRICS[r.metric].needs_baseline for r in rules
    )  # skipped: no baseline here
    default = run(pytester, "--costguard", "--costguard-policy", "policies/default.yaml")
    assert_outcomes(default, passed=n_fixtures + len(rules) - need_baseline, skipped=need_baseline)
    assert default.ret == pytest.ExitCode.OK

    strict = run(
        pytester,
        "--costguard",
        "--costguard-policy",
        "policies/strict.yaml",
        "-m",
        "costguard",
        "-q",
    )
    assert_outcomes(strict, passed=n_fixtures + 1, failed=3)
    strict.stdout.fnmatch_lines(
        [
            "rule monthly_spend: actual $* (estimated) breaks <= $800.00",
            "  at policies/strict.yaml:6 (metric monthly_spend, level fail)",
            "FAILED policies/strict.yaml::monthly_spend - *",
            "FAILED policies/strict.yaml::p95_cost_per_request - *",
            "FAILED policies/strict.yaml::large_tier_share - *",
        ],
        consecutive=False,
    )
    report = load_json(pytester.path / "costguard-report.json")
    assert report["totals"]["fixtures"] == n_fixtures


def test_baseline_may_be_a_git_ref(pytester: pytest.Pytester) -> None:
    """`--costguard-baseline HEAD~1` projects the base commit offline, like `costguard diff --base-ref`."""
    import subprocess

    root = make_project(
        pytester,
        policy="rules:\n  no_spend_increase:\n    metric: monthly_spend_increase_pct\n    max: 0.0\n",
    )

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@e", *args],
            cwd=root,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "base")
    fixtures = root / "fixtures" / "support.yaml"
    fixtures.write_text(
        fixtures.read_text().replace(
            "How do I reset my password?",
            "How do I reset my password? I tried twice and the link expired.",
        )
    )
    git("commit", "-qam", "longer prompt")

    result = run(
        pytester,
        "--costguard",
        "--costguard-baseline",
        "HEAD~1",
        "--costguard-policy",
        "policies/default.yaml",
        "-p",
        "no:cacheprovider",
        "-m",
        "costguard",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*rule no_spend_increase: actual +* breaks <= +0.0%*"])
