"""Hostile fixtures end quickly in one line: bounded YAML and templates, paths kept inside the
project root (README "Reliability"). Each run is a real `costguard` subprocess whose wall time and
peak RSS are measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

WALL_LIMIT_S = 30.0
RSS_LIMIT_KB = 1024 * 1024  # 1 GiB

_MEASURE = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    t = time.monotonic()
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=float(%r))
    print(json.dumps({"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
        "seconds": time.monotonic() - t,
        "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
    """
    % (WALL_LIMIT_S * 2)
)


def measured_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict:
    """Run `python -m costguard ARGS` under a parent that reports its wall time and peak RSS."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO)}
    full_env.pop("GITHUB_TOKEN", None)
    full_env.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "costguard", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=WALL_LIMIT_S * 3,
    )
    return json.loads(out.stdout)


def assert_bounded_one_line(result: dict, *needles: str) -> str:
    assert result["rc"] == 2, result
    assert "Traceback" not in result["stderr"]
    lines = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    assert len(lines) == 1, result["stderr"]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result["seconds"] < WALL_LIMIT_S, result["seconds"]
    assert result["rss_kb"] < RSS_LIMIT_KB, result["rss_kb"]
    return lines[0]


def _fixture(project_dir: Path, body: str, name: str = "hostile.yaml") -> None:
    (project_dir / "fixtures" / name).write_text(textwrap.dedent(body))


ALIAS_BOMB = """\
suite: support
fixtures:
  - id: bomb
    template: ../prompts/p.jinja
    vars:
      a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_in_vars_is_refused_fast_and_small(project_dir: Path):
    (project_dir / "prompts").mkdir()
    (project_dir / "prompts" / "p.jinja").write_text("{{ i }}")
    _fixture(project_dir, ALIAS_BOMB)
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "fixtures/hostile.yaml:", "alias bomb")
    assert not (project_dir / "r.json").exists()


def test_yaml_limits_are_configurable(project_dir: Path):
    deep = "suite: support\nfixtures:\n  - id: deep\n    content: x\n    tags: " + "[" * 60
    deep += "1" + "]" * 60 + "\n"
    _fixture(project_dir, deep)
    result = measured_cli(
        "run", "--out", "r.json", cwd=project_dir, env={"COSTGUARD_YAML_MAX_DEPTH": "20"}
    )
    assert_bounded_one_line(result, "fixtures/hostile.yaml:", "COSTGUARD_YAML_MAX_DEPTH")


RUNAWAY = {
    "nested-range": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
        "COSTGUARD_TEMPLATE_MAX_ITERATIONS",
    ),
    "loop-over-vars": (
        "{% for a in xs %}{% for b in xs %}{% for c in xs %}{% endfor %}{% endfor %}{% endfor %}",
        "COSTGUARD_TEMPLATE_MAX_SECONDS",
    ),
    "huge-string": ("{{ 'x' * 10000000000 }}", "COSTGUARD_TEMPLATE_MAX_OUTPUT"),
    "doubling": (
        "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "COSTGUARD_TEMPLATE_MAX_OUTPUT",
    ),
}


@pytest.mark.parametrize("case", list(RUNAWAY))
def test_a_runaway_fixture_template_is_stopped(project_dir: Path, case: str):
    source, needle = RUNAWAY[case]
    (project_dir / "prompts").mkdir()
    (project_dir / "prompts" / "p.jinja").write_text(source)
    xs = ", ".join(["1"] * 3000)
    _fixture(
        project_dir,
        "suite: support\nfixtures:\n  - id: runaway\n    template: ../prompts/p.jinja\n"
        f"    vars: {{xs: [{xs}]}}\n",
    )
    result = measured_cli(
        "run", "--out", "r.json", cwd=project_dir, env={"COSTGUARD_TEMPLATE_MAX_SECONDS": "2"}
    )
    assert_bounded_one_line(result, "fixtures/hostile.yaml:", "p.jinja", needle)


def test_a_runaway_chat_template_is_stopped(project_dir: Path):
    (project_dir / "chat.jinja").write_text(
        "{% for m in messages %}{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}{{ m['content'] }}{% endfor %}"
    )
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "costguard.yaml:", "COSTGUARD_TEMPLATE_MAX_ITERATIONS")


# -- paths stay inside the project -------------------------------------------------------------


@pytest.mark.parametrize("template", ["../../../../../../../../etc/passwd", "/etc/passwd"])
def test_a_template_outside_the_project_is_refused(project_dir: Path, template: str):
    _fixture(
        project_dir,
        f"""\
        suite: support
        fixtures:
          - id: exfiltrate
            template: {template}
        """,
    )
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    line = assert_bounded_one_line(result, "fixtures/hostile.yaml:", "outside the project root")
    assert "root:" not in line  # nothing of the file's content leaks into the message


def test_a_symlink_cannot_smuggle_a_file_in(project_dir: Path):
    (project_dir / "prompts").mkdir()
    (project_dir / "prompts" / "p.jinja").symlink_to("/etc/hostname")
    _fixture(
        project_dir,
        """\
        suite: support
        fixtures:
          - id: link
            template: ../prompts/p.jinja
        """,
    )
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "outside the project root")


def test_chat_template_and_price_table_outside_the_project_are_refused(
    project_dir: Path, tmp_path_factory: pytest.TempPathFactory
):
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "chat.jinja").write_text((project_dir / "chat.jinja").read_text())
    cfg = project_dir / "costguard.yaml"
    original = cfg.read_text()
    cfg.write_text(
        original.replace("chat_template: chat.jinja", f"chat_template: {outside}/chat.jinja")
    )
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "costguard.yaml:", "chat_template", "outside the project root")

    # listed explicitly under allowed_paths: it is meant, and it works
    cfg.write_text(cfg.read_text() + f"allowed_paths: [{outside}]\n")
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert result["rc"] == 0, result["stderr"]

    (outside / "prices.json").write_text(
        json.dumps({"m": {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}})
    )
    cfg.write_text(
        original.replace(
            "pricing: {input_per_mtok: 0.10, cached_input_per_mtok: 0.05, output_per_mtok: 0.40}",
            f"pricing: {{litellm: m, price_table: {outside}/prices.json}}",
        )
    )
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "price table", "outside the project root")


def test_include_import_extends_work_inside_the_root_and_nowhere_else(project_dir: Path):
    prompts = project_dir / "prompts"
    prompts.mkdir()
    (prompts / "header.jinja").write_text("You are Acme's support agent.")
    (prompts / "macros.jinja").write_text("{% macro shout(x) %}{{ x|upper }}{% endmacro %}")
    (prompts / "base.jinja").write_text("{% block body %}{% endblock %} Thanks!")
    (prompts / "p.jinja").write_text(
        '{% extends "prompts/base.jinja" %}{% import "prompts/macros.jinja" as m %}'
        '{% block body %}{% include "prompts/header.jinja" %} {{ m.shout(q) }}{% endblock %}'
    )
    _fixture(
        project_dir,
        """\
        suite: support
        fixtures:
          - id: composed
            template: ../prompts/p.jinja
            vars: {q: "where is my order?"}
        """,
    )
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert result["rc"] == 0, result["stderr"]
    from costguard import api

    project = api.load_project(project_dir / "costguard.yaml")
    fx = next(f for f in project.fixtures if f.id == "composed")
    assert fx.messages[0]["content"] == "You are Acme's support agent. WHERE IS MY ORDER? Thanks!"

    (prompts / "p.jinja").write_text('{% include "../../../../../../etc/passwd" %}')
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "fixtures/hostile.yaml:", "outside the project root")
    (prompts / "p.jinja").write_text('{% include "prompts/missing.jinja" %}')
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "fixtures/hostile.yaml:", "missing.jinja")


# -- the tracebacks fuzzing found -------------------------------------------------------------------


@pytest.mark.parametrize("template", ["", "{% for m in messages %}{% endfor %}"])
def test_a_chat_template_that_renders_nothing_is_one_line(project_dir: Path, template: str):
    (project_dir / "chat.jinja").write_text(template)
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "costguard.yaml:", "chat.jinja rendered an empty prompt")


def test_paths_too_long_for_the_system_are_one_line(project_dir: Path):
    _fixture(
        project_dir,
        f"suite: support\nfixtures:\n  - id: long\n    template: {'a' * 5000}\n",
    )
    result = measured_cli("run", "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "File name too long")
    (project_dir / "fixtures" / "hostile.yaml").unlink()
    result = measured_cli("run", "--fixtures", "b" * 5000, "--out", "r.json", cwd=project_dir)
    assert_bounded_one_line(result, "File name too long")
