"""Files a project reads stay inside the project (README "Reliability").

A pull request can edit `template:`, `chat_template:`, `price_table:`, `fixtures:` and
`{% include %}` names, so none of them may reach outside the project root (the directory of
costguard.yaml) -- `../../../../etc/passwd` or an absolute path would otherwise be read, used
as a prompt and, in a live run, sent to the servers. Directories a project genuinely needs
outside its root are listed explicitly under `allowed_paths:` in costguard.yaml.
Symbolic links are resolved before the check, so a link cannot smuggle a file in either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from costguard.errors import ConfigError


def resolve_allowed(values: Sequence[str], root: Path) -> tuple[Path, ...]:
    """`allowed_paths:` entries as absolute, resolved directories (relative ones to the root)."""
    out = []
    for value in values:
        p = Path(os.path.expanduser(value))
        out.append((p if p.is_absolute() else root / p).resolve())
    return tuple(out)


def within(path: Path, root: Path, allowed: Sequence[Path] = ()) -> bool:
    real = Path(path).resolve()
    return any(real.is_relative_to(Path(base).resolve()) for base in (root, *allowed))


def require_inside(
    path: Path,
    root: Path,
    allowed: Sequence[Path] = (),
    *,
    what: str,
    file: str | Path | None = None,
    line: int | None = None,
    key: str | None = None,
) -> Path:
    """`path` itself, or a one-line ConfigError when it resolves outside root and allowed dirs."""
    if within(path, root, allowed):
        return path
    raise ConfigError(
        f"{what} {path} is outside the project root {root}; costguard only reads files inside "
        "it (list the directory under `allowed_paths:` in costguard.yaml if it is meant)",
        file=file,
        line=line,
        key=key,
    )
