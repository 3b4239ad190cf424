"""The house rules that keep the layout: front ends call the facade; the import contract holds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What each front end may import from costguard (the rest is behind `costguard.api`).
FRONT_ENDS = {
    "costguard/cli": ("costguard.api", "costguard.errors", "costguard.render", "costguard.cli"),
    "costguard/pytest_plugin": (
        "costguard.api",
        "costguard.errors",
        "costguard.render",
        "costguard.pytest_plugin",
    ),
    # The Action's scripts also talk to GitHub Actions (outputs, annotations) and the REST API.
    "action": ("costguard.api", "costguard.errors", "costguard.integrations"),
}


def costguard_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every costguard import in a file, at any depth (functions included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "costguard":
                out += [(node.lineno, f"costguard.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return [(line, m) for line, m in out if m == "costguard" or m.startswith("costguard.")]


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_front_ends_import_only_the_facade(front_end: str) -> None:
    allowed = FRONT_ENDS[front_end] + (
        "costguard.__version__",
        "costguard.STARTED",
    )  # the root package
    files = sorted((REPO / front_end).glob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in files
        for line, module in costguard_imports(path)
        if not any(module == a or module.startswith(a + ".") for a in allowed)
    ]
    assert not wrong, "front ends reach past costguard.api:\n" + "\n".join(wrong)


def test_the_scan_sees_a_deep_import(tmp_path: Path) -> None:
    """The rule above cannot pass vacuously: a deep import inside a function is found."""
    sample = tmp_path / "front.py"
    sample.write_text(
        "def f():\n    from costguard.engine.pipeline import Pipeline\n"
        "    import costguard.model.config\n    from costguard import api\n"
    )
    assert costguard_imports(sample) == [
        (2, "costguard.engine.pipeline"),
        (3, "costguard.model.config"),
        (4, "costguard.api"),
    ]


def test_the_import_contract_holds() -> None:
    """Layers, no cycles at any depth, thin front ends (pyproject.toml [tool.importlinter]);
    `.ci/run` runs the same check as `lint-imports`."""
    proc = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout
