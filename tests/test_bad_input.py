"""Bad input gets one clear line naming file, line and key, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costguard.cli.main import main
from costguard.errors import ConfigError
from costguard.model.fixtures import load_fixture_file
from tests.conftest import run_cli


def _run(project_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    cwd = os.getcwd()
    os.chdir(project_dir)
    try:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


CASES = [
    # (file to edit, old, new, expected fragments of the message)
    (
        "costguard.yaml",
        "seed: 3",
        "seed: 3, sead: 4",
        ["costguard.yaml:", "traffic.sead", "unknown key", "did you mean 'seed'"],
    ),
    (
        "costguard.yaml",
        "input_per_mtok: 0.10",
        "input_per_mtok: -0.10",
        ["costguard.yaml:6", "tiers[0].pricing.input_per_mtok", "greater than or equal to 0"],
    ),
    (
        "costguard.yaml",
        "requests_per_month: 1000000",
        "requests_per_month: lots",
        ["traffic.requests_per_month", "valid number"],
    ),
    ("costguard.yaml", "name: test-stack", "name: [test", ["costguard.yaml:", "invalid YAML"]),
    (
        "costguard.yaml",
        "coding: {output_tokens_prior: 400}",
        "coding: {output_tokens_prior: 400, share: 0.3}",
        ["costguard.yaml:18: suites:", "give a share for every suite or for none"],
    ),
    (
        "costguard.yaml",
        "support: {output_tokens_prior: 100}\n  coding: {output_tokens_prior: 400}",
        "support: {output_tokens_prior: 100, share: 0.5}\n  coding: {output_tokens_prior: 400, share: 0.3}",
        ["costguard.yaml:18: suites:", "shares must add up to 1 (they add up to 0.8000)"],
    ),
    ("costguard.yaml", "default_tier: small", "default_tier: medium", ["unknown tier 'medium'"]),
    (
        "fixtures/support.yaml",
        "weight: 2",
        "weight: 2\n    wieght: 3",
        ["fixtures/support.yaml:7", "fixtures[0].wieght", "unknown key"],
    ),
    (
        "fixtures/support.yaml",
        "expect: {output_tokens: 500}",
        "expect: {output_tokens: -5}",
        ["fixtures[3].expect.output_tokens"],
    ),
    (
        "fixtures/support.yaml",
        "id: order-status",
        "id: reset-password",
        ["duplicate fixture id 'reset-password'"],
    ),
    (
        "fixtures/support.yaml",
        '{role: user, content: "How do I reset my password?"}\n    expect: {output_tokens: 60}\n  - id: reset-password-dup',
        '{role: usr, content: "How do I reset my password?"}\n    expect: {output_tokens: 60}\n  - id: reset-password-dup',
        ["messages[1].role"],
    ),
]


@pytest.mark.parametrize("target,old,new,needles", CASES, ids=[c[3][-1][:30] for c in CASES])
def test_bad_input_is_one_line_with_location(
    project_dir: Path, capsys, target, old, new, needles
) -> None:
    _edit(project_dir / target, old, new)
    code, out, err = _run(project_dir, capsys, "run", "--out", "r.json")
    _assert_one_line_error(code, err, *needles)
    assert not (project_dir / "r.json").exists()  # nothing written half-way


def test_tier_without_price_is_an_error_never_free(project_dir: Path, capsys) -> None:
    _edit(
        project_dir / "costguard.yaml",
        "    pricing: {input_per_mtok: 0.10, cached_input_per_mtok: 0.05, output_per_mtok: 0.40}\n",
        "",
    )
    code, _, err = _run(project_dir, capsys, "run")
    _assert_one_line_error(code, err, "costguard.yaml:3", "tiers[0].pricing", "no price")


def test_missing_template_variable(project_dir: Path, capsys) -> None:
    (project_dir / "fixtures" / "sys.j2").write_text("Hello {{ customer }}, today is {{ today }}.")
    (project_dir / "fixtures" / "tpl.yaml").write_text(
        "fixtures:\n  - id: t1\n    messages:\n      - {role: system, template: sys.j2}\n    vars: {customer: Bo}\n"
    )
    code, _, err = _run(project_dir, capsys, "run")
    _assert_one_line_error(
        code, err, "fixtures/tpl.yaml:2", "'today' is undefined", "messages[0].template"
    )


def test_empty_fixture_set(project_dir: Path, capsys) -> None:
    (project_dir / "fixtures" / "support.yaml").unlink()
    code, _, err = _run(project_dir, capsys, "run")
    _assert_one_line_error(code, err, "no fixtures found")


def test_non_utf8_fixture_file(project_dir: Path, capsys) -> None:
    (project_dir / "fixtures" / "bad.yaml").write_bytes(
        b'fixtures:\n  - id: x\n    messages: [{role: user, content: "caf\xe9"}]\n'
    )
    code, _, err = _run(project_dir, capsys, "run")
    _assert_one_line_error(code, err, "fixtures/bad.yaml:3", "not valid UTF-8")


def test_missing_output_length_is_an_error_not_an_invented_number(
    project_dir: Path, capsys
) -> None:
    _edit(project_dir / "costguard.yaml", "support: {output_tokens_prior: 100}", "support: {}")
    code, _, err = _run(project_dir, capsys, "run")
    _assert_one_line_error(code, err, "order-status", "output_tokens_prior")


def test_jsonl_error_names_the_line(project_dir: Path, capsys) -> None:
    (project_dir / "fixtures" / "x.jsonl").write_text(
        '{"id": "j1", "messages": [{"role": "user", "content": "hi"}]}\n{"id": "j2", "messages": [}\n'
    )
    code, _, err = _run(project_dir, capsys, "run")
    _assert_one_line_error(code, err, "fixtures/x.jsonl:2", "invalid JSON")


def test_bad_policy_metric(project_dir: Path, capsys) -> None:
    (project_dir / "p.yaml").write_text("rules:\n  spend:\n    metric: montly_spend\n    max: 10\n")
    code, _, err = _run(project_dir, capsys, "check", "--policy", "p.yaml")
    _assert_one_line_error(
        code, err, "p.yaml:2", "rules.spend.metric", "did you mean 'monthly_spend'"
    )


def test_missing_config_file_in_subprocess_has_no_traceback(tmp_path: Path) -> None:
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "costguard: error: costguard.yaml: file not found"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300))
def test_fixture_loader_fuzz_never_crashes(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("fz") / "f.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_fixture_file(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=12,
    )
)
def test_fixture_loader_fuzz_structured(tmp_path_factory, data) -> None:
    import yaml

    path = tmp_path_factory.mktemp("fz") / "f.yaml"
    path.write_text(yaml.safe_dump({"fixtures": [data]}), encoding="utf-8")
    try:
        load_fixture_file(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_unknown_key_in_a_named_policy_rule_gets_a_did_you_mean(project_dir: Path, capsys) -> None:
    (project_dir / "p.yaml").write_text(
        "rules:\n  spend:\n    metric: monthly_spend\n    max: 5\n    levle: warn\n"
    )
    code, _, err = _run(project_dir, capsys, "check", "--policy", "p.yaml")
    _assert_one_line_error(
        code, err, "p.yaml:5", "rules.spend.levle", "unknown key 'levle' (did you mean 'level'?)"
    )
