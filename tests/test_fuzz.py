"""Zero tracebacks, proven by fuzzing (README "Reliability").

Hypothesis generates hostile configs, fixtures, policies, reports, recordings, price tables and
server replies; the property for each: a valid result, or exit code 2 with exactly one line on
stderr and no traceback, within a time bound per example. Everything runs in process (the
CLI's own `main`), so a few hundred examples per target stay fast.

Example counts come from a hypothesis profile chosen with COSTGUARD_FUZZ_PROFILE:
`ci` (the default, a few hundred examples per target) or `thorough` (ten times more).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import resource
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costguard.cli.main import main
from costguard.errors import CostguardError
from tests.conftest import CHAT_TEMPLATE, FIXTURES_YAML, STACK_YAML, minilm_dir

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROFILE = os.environ.get("COSTGUARD_FUZZ_PROFILE", "ci")
FUZZ = settings.get_profile(PROFILE)
RSS_LIMIT_KB = 2 * 1024 * 1024  # the whole test process, after every target

# -- hostile values ------------------------------------------------------------------------------

HOSTILE_SCALARS = st.one_of(
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            10**400,
            -(10**30),
            -1,
            -0.5,
            0,
            True,
            False,
            None,
            "NaN",
            "nan",
            ".inf",
            "yes",
            "1e400",
            "",
            "../../../../etc/passwd",
            "/etc/passwd",
            "{{ 7 * 7 }}",
            "x" * 5000,
            "\x00\x1b[31m",
            "<!-- costguard:tag=default -->",
        ]
    ),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)


def hostile_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        HOSTILE_SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=12), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple, value: Any, action: str) -> Any:
    """`doc` with the node at `path` replaced by `value`, deleted, or given an extra key."""
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete" and isinstance(parent, dict):
        del parent[last]
    elif action == "extra" and isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    else:
        parent[last] = value
    return doc


@st.composite
def mutations(draw: Any, base: Any, n: int = 3) -> Any:
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, n))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
        doc = _mutate(doc, path, draw(hostile_values()), action)
    return doc


def _dump(doc: Any) -> str:
    """YAML for `doc`, including values YAML can say but JSON cannot (.nan, huge ints)."""
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=10**6)
    except yaml.YAMLError:
        return json.dumps(doc, default=str)


# -- the property -----------------------------------------------------------------------------------


def run_cli(cwd: Path, *argv: str) -> tuple[int, str, str]:
    """`costguard ARGV` in process: (exit code, stdout, stderr). Any exception other than the
    CLI's own SystemExit escapes, and fails the property with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
            else:  # pragma: no cover - main always exits
                code = 0
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, stderr: str, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    assert code in allowed, (code, stderr)
    assert "Traceback" not in stderr
    if code == 2:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, stderr
        assert lines[0].startswith("costguard: error: ") or lines[0].startswith("Error: "), lines


def library_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a loader: its result, or None for a one-line CostguardError; anything else escapes."""
    try:
        return fn(*args, **kwargs)
    except CostguardError as exc:
        assert "\n" not in str(exc), str(exc)
        return None


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-project")
    (root / "chat.jinja").write_text(CHAT_TEMPLATE)
    (root / "costguard.yaml").write_text(STACK_YAML.format(tok=minilm_dir()))
    (root / "fixtures").mkdir()
    (root / "fixtures" / "support.yaml").write_text(FIXTURES_YAML)
    (root / "policy.yaml").write_text(
        "rules:\n  spend: {metric: monthly_spend, max: 100000}\n"
        "  p99: {metric: cost_per_request, stat: p99, max: 1}\n"
    )
    code, _, err = run_cli(root, "run", "--out", "base.json", "-q")
    assert code == 0, err
    return root


@pytest.fixture(autouse=True, scope="module")
def _memory_bound() -> Any:
    yield
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert rss_kb < RSS_LIMIT_KB, f"peak RSS {rss_kb} kB"


# -- targets ----------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1"))))
def test_fuzz_raw_yaml_text_never_tracebacks(text: str) -> None:
    from costguard.model.yamlio import parse_yaml

    library_call(parse_yaml, text, file="fuzz.yaml")


POLICY_BASE = {
    "version": 1,
    "on_no_baseline": "warn",
    "quality": {"on_unmeasured": "warn"},
    "rules": {
        "spend": {"metric": "monthly_spend", "max": 100000, "level": "fail"},
        "growth": {"metric": "monthly_spend_increase_pct", "max": 5},
        "p99": {"metric": "cost_per_request", "stat": "p99", "max": 1, "level": "warn"},
        "false_hits": {"metric": "semantic_false_hit_rate", "max": 0.05},
    },
    "waivers": [{"rule": "spend", "reason": "launch", "expires": "2030-01-01"}],
}


@FUZZ
@given(mutations(POLICY_BASE))
def test_fuzz_policies_check_cleanly(project: Path, doc: Any) -> None:
    path = project / "fuzz-policy.yaml"
    path.write_text(_dump(doc))
    code, _, err = run_cli(
        project, "check", "-p", path.name, "base.json", "--baseline", "base.json"
    )
    assert_clean(code, err)


def _stack_doc() -> Any:
    return yaml.safe_load(STACK_YAML.format(tok=minilm_dir()))


@FUZZ
@given(mutations(_stack_doc()))
def test_fuzz_stack_configs_load_cleanly(project: Path, doc: Any) -> None:
    from costguard import api

    path = project / "fuzz-stack.yaml"
    path.write_text(_dump(doc))
    loaded = library_call(api.load_project, path)
    if loaded is not None:
        library_call(loaded.prices)


@settings(FUZZ, max_examples=max(20, FUZZ.max_examples // 8))
@given(mutations(_stack_doc(), n=1))
def test_fuzz_stack_configs_run_cleanly(project: Path, doc: Any) -> None:
    (project / "costguard.yaml").write_text(_dump(doc))
    try:
        code, _, err = run_cli(project, "run", "--out", "fuzz-run.json", "-q")
    finally:
        (project / "costguard.yaml").write_text(STACK_YAML.format(tok=minilm_dir()))
    assert_clean(code, err, (0, 2))


FIXTURE_BASE = yaml.safe_load(FIXTURES_YAML)


@FUZZ
@given(mutations(FIXTURE_BASE))
def test_fuzz_fixture_files_load_cleanly(project: Path, doc: Any) -> None:
    from costguard.model.fixtures import load_fixture_file

    path = project / "fuzz-fixtures.yaml"
    path.write_text(_dump(doc))
    library_call(load_fixture_file, path, project_root=project)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.just("{% for i in range(n) %}{{ i }}{% endfor %}"),
            st.just("{{ x * n }}"),
            st.just("{% include name %}"),
            st.just("{% extends name %}{% block b %}{% endblock %}"),
            st.just("{{ x.__class__ }}"),
            st.just("{{ x|center(n) }}"),
            st.just("{{ "),
            st.text(max_size=20),
        ),
        max_size=4,
    ),
    hostile_values(6),
)
def test_fuzz_fixture_templates_render_cleanly(project: Path, parts: list[str], value: Any) -> None:
    from costguard.model.fixtures import load_fixture_file

    (project / "prompts").mkdir(exist_ok=True)
    (project / "prompts" / "fuzz.jinja").write_text("".join(parts))
    doc = {
        "suite": "support",
        "fixtures": [
            {
                "id": "t",
                "template": "prompts/fuzz.jinja",
                "vars": {"n": value, "x": value, "name": value},
            }
        ],
    }
    path = project / "fuzz-template.yaml"
    path.write_text(_dump(doc))
    library_call(load_fixture_file, path, project_root=project)


def _report_doc(project: Path) -> Any:
    data = json.loads((project / "base.json").read_text())
    data["records"] = data["records"][:2]
    return data


TOTALS_KEYS = ("cost_per_month", "requests_per_month", "output_tokens_per_month")


@FUZZ
@given(data=st.data())
def test_fuzz_reports_never_pass_check_by_accident(project: Path, data: Any) -> None:
    doc = data.draw(mutations(_report_doc(project)))
    path = project / "fuzz-report.json"
    path.write_text(json.dumps(doc, default=str, allow_nan=True))
    code, _, err = run_cli(project, "check", "-p", "policy.yaml", path.name)
    assert_clean(code, err)


@FUZZ
@given(key=st.sampled_from(TOTALS_KEYS + ("complete",)), value=HOSTILE_SCALARS)
def test_fuzz_hostile_totals_never_exit_0(project: Path, key: str, value: Any) -> None:
    doc = json.loads((project / "base.json").read_text())
    if key == "complete":
        if value is True:
            return
        doc["complete"] = value
    else:
        from costguard.model.yamlio import is_number

        if is_number(value) and value >= 0:
            return  # a plausible number; its consistency is another test's business
        doc["totals"][key] = value
    path = project / "fuzz-totals.json"
    path.write_text(json.dumps(doc, default=str, allow_nan=True))
    code, _, err = run_cli(project, "check", "-p", "policy.yaml", path.name)
    assert_clean(code, err, (1, 2))


RECORDING = {
    "key": "k" * 32,
    "fixture_id": "reset-password",
    "content_hash": "h" * 64,
    "tier": "small",
    "model": "test/small-8b",
    "reply_model": "test/small-8b",
    "text": "Click 'Forgot password'.",
    "finish_reason": "stop",
    "prompt_tokens": 30,
    "cached_tokens": 16,
    "completion_tokens": 12,
    "e2el_s": 0.4,
    "ttft_s": 0.05,
    "tpot_s": 0.03,
}


@FUZZ
@given(
    st.lists(
        st.one_of(
            mutations(RECORDING).map(lambda d: json.dumps(d, default=str)), st.text(max_size=60)
        ),
        max_size=3,
    )
)
def test_fuzz_recordings_load_cleanly(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    from costguard.engine.recordings import RESPONSES_FILE, RecordingStore

    directory = tmp_path_factory.mktemp("rec")
    (directory / RESPONSES_FILE).write_text("\n".join(lines))
    store = RecordingStore(directory)
    library_call(lambda: store.entries)


PRICE_TABLE = {
    "m": {
        "input_cost_per_token": 1e-7,
        "output_cost_per_token": 4e-7,
        "cache_read_input_token_cost": 5e-8,
    }
}


@FUZZ
@given(mutations(PRICE_TABLE))
def test_fuzz_price_tables_resolve_cleanly(
    tmp_path_factory: pytest.TempPathFactory, doc: Any
) -> None:
    from costguard.model.pricing import PricingConfig, _load_table, resolve_price

    directory = tmp_path_factory.mktemp("prices")
    (directory / "prices.json").write_text(json.dumps(doc, default=str, allow_nan=True))
    _load_table.cache_clear()
    pricing = PricingConfig(litellm="m", price_table="prices.json")
    price = library_call(resolve_price, "t", pricing, gpus=1, base_dir=directory, where="fuzz")
    if price is not None:
        for value in (price.input_per_token, price.cached_input_per_token, price.output_per_token):
            assert math.isfinite(value) and value >= 0


REPLY = {
    "id": "x",
    "model": "test/small-8b",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
}


@FUZZ
@given(
    st.one_of(
        mutations(REPLY).map(lambda d: json.dumps(d, default=str).encode()), st.binary(max_size=200)
    )
)
def test_fuzz_server_replies_parse_cleanly(raw: bytes) -> None:
    from costguard.serving.openai_client import _parse_unary

    result = library_call(_parse_unary, raw, "http://127.0.0.1:1/v1/chat/completions", 0.1, True)
    if result is not None:
        assert result.prompt_tokens >= result.cached_tokens >= 0 and result.completion_tokens >= 0


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "# TYPE vllm:prompt_tokens_total counter",
                    'vllm:prompt_tokens_total{model_name="m"} 12',
                    'vllm:prompt_tokens_total{model_name="m"} NaN',
                    'vllm:prompt_tokens_total{model_name="m"} +Inf',
                    'vllm:prefix_cache_hits_total{model_name="m",engine="0"} -3',
                    'vllm:cache_config_info{block_size="x"} 1',
                    "vllm:num_requests_running 1e400",
                ]
            ),
            st.text(max_size=60),
        ),
        max_size=6,
    )
)
def test_fuzz_server_metrics_parse_cleanly(lines: list[str]) -> None:
    from costguard.serving.metrics import parse_metrics

    library_call(parse_metrics, "\n".join(lines))


def test_the_fuzz_profile_is_selectable() -> None:
    assert FUZZ.max_examples >= 200
    assert textwrap.dedent(__doc__ or "").count("COSTGUARD_FUZZ_PROFILE") == 1
