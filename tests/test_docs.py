"""Every shell command in the README and docs/ works as written, so the docs cannot drift.

Rules for the ```bash blocks of README.md and docs/*.md:
- `pip install ...` and `pytest ...` / `python -m pytest ...` lines are what `.ci/run` runs on a
  fresh clone: each must appear there (pip lines verbatim; a pytest line's words in order, `.ci/run`
  may add options such as `-n 2 -q`).
- A block preceded by `<!-- docs-test: skip: REASON -->` is not run (it needs GPUs, servers, GitHub,
  or holds placeholders); the reason is required.
- Every other line runs offline, in order, in a copy of this checkout (a git repository whose
  `origin/main` is the copy itself), and must exit 0, or N where its comment says `# exit N`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?:^<!-- docs-test: (?P<directive>.*?) -->\n)?^```(?:bash|sh|shell)\n(?P<body>.*?)^```",
    re.M | re.S,
)


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str  # the command, comment removed, continuation lines joined
    exit_code: int
    skip: str | None  # the block's skip reason

    @property
    def words(self) -> list[str]:
        words = shlex.split(self.text)
        return ["pytest", *words[3:]] if words[:3] == ["python", "-m", "pytest"] else words


def commands(path: Path) -> list[Command]:
    text = path.read_text(encoding="utf-8")
    out = []
    for block in BLOCK.finditer(text):
        directive = block.group("directive")
        skip = None
        if directive is not None:
            assert directive.startswith("skip: ") and directive[6:].strip(), (
                f"{path.name}: a docs-test directive must be `skip: REASON`, got {directive!r}"
            )
            skip = directive[6:].strip()
        first = text.count("\n", 0, block.start("body")) + 1
        joined = block.group("body").replace("\\\n", " ")
        for k, raw in enumerate(joined.splitlines()):
            command, _, comment = raw.partition(" #")
            if not command.strip() or command.lstrip().startswith("#"):
                continue
            wanted = re.search(r"\bexit (\d+)", comment)
            out.append(
                Command(
                    f"{path.relative_to(REPO)}:{first + k}",
                    " ".join(command.split()),
                    int(wanted.group(1)) if wanted else 0,
                    skip,
                )
            )
    return out


ALL = [c for path in DOCS for c in commands(path)]


def is_install(c: Command) -> bool:
    return c.words[:2] == ["pip", "install"]


def is_pytest(c: Command) -> bool:
    return c.words[:1] == ["pytest"]


def ci_lines() -> list[str]:
    lines = []
    for raw in (REPO / ".ci" / "run").read_text().splitlines():
        command = raw.partition(" #")[0].strip()
        if command and not command.startswith("#"):
            lines.append(" ".join(command.split()))
    return lines


def in_order(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(word in it for word in needle)


def test_the_docs_have_commands_to_check() -> None:
    assert len(ALL) >= 20
    assert any(is_install(c) for c in ALL) and any(is_pytest(c) for c in ALL)
    assert sum(1 for c in ALL if c.skip is None and not is_install(c) and not is_pytest(c)) >= 8


@pytest.mark.parametrize("command", [c for c in ALL if is_install(c) or is_pytest(c)], ids=str)
def test_install_and_test_commands_are_what_ci_runs(command: Command) -> None:
    if command.skip:
        pytest.skip(command.skip)
    ci = ci_lines()
    if is_install(command):
        assert command.text in ci, f"{command.where}: `{command.text}` is not in .ci/run"
    else:
        assert any(
            in_order(command.words, Command("", line, 0, None).words)
            for line in ci
            if line.startswith(("pytest", "python -m pytest"))
        ), f"{command.where}: `{command.text}` is not what .ci/run runs"


def checkout_copy(dest: Path) -> Path:
    """This checkout's files (tracked and new, not ignored) in a fresh git repository whose
    `origin/main` is its own first commit, plus the warm embedding cache if there is one."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    cache = REPO / ".costguard" / "cache" / "embeddings"
    if cache.is_dir():  # content-addressed: a copy only saves time
        shutil.copytree(cache, dest / ".costguard" / "cache" / "embeddings", dirs_exist_ok=True)
    git = ["git", "-c", "user.name=docs", "-c", "user.email=docs@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "docs"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)
    subprocess.run(["git", "update-ref", "refs/remotes/origin/main", "HEAD"], cwd=dest, check=True)
    return dest


@pytest.mark.slow
def test_every_runnable_command_in_the_docs_works_offline(tmp_path: Path) -> None:
    runnable, seen = [], set()
    for c in ALL:
        if c.skip is None and not is_install(c) and not is_pytest(c) and c.text not in seen:
            seen.add(c.text)
            runnable.append(c)
    root = checkout_copy(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["COLUMNS"] = "120"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    failures = []
    for c in runnable:
        proc = subprocess.run(
            ["bash", "-c", c.text], cwd=root, env=env, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != c.exit_code:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
            failures.append(
                f"{c.where}: `{c.text}` exited {proc.returncode}, expected {c.exit_code}: {tail}"
            )
    assert not failures, "\n".join(failures)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # what the commands write is ignored by git (README, "Outputs"); calibrate --write may edit
    # the config, nothing else
    assert [line for line in status if not line.endswith("costguard.yaml")] == []
