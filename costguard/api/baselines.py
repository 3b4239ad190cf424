"""Where a baseline comes from, in one grammar for every front end.

```
ref:REF          a git commit or branch, projected offline in a temporary worktree (ref:origin/main)
artifact:NAME    the CI artifact NAME, downloaded into a directory (the Action's BASELINE_DIR)
file:PATH        a RunReport file, or a directory holding one (a downloaded artifact)
PATH             the same as file:PATH
```
A path that does not exist means "no baseline yet" (an artifact never uploaded), never an error.
Front ends spell the same thing their own way and parse it here: the CLI's `--baseline SPEC`
(and `--base-ref REF` = `ref:REF`), the pytest plugin's `--costguard-baseline SPEC` (a bare value
that is not an existing path is read as a git ref there, as `costguard_baseline` always was), and
the Action's `baseline:` input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from costguard.errors import UsageError

KINDS = ("ref", "artifact", "file")


@dataclass(frozen=True)
class BaselineSpec:
    """A parsed baseline: `none`, a `path` (file or artifact directory) or a git `ref`."""

    kind: Literal["none", "path", "ref"]
    value: str = ""
    text: str = ""  # as the user wrote it

    def __str__(self) -> str:
        return {"none": "", "path": f"file:{self.value}", "ref": f"ref:{self.value}"}[self.kind]


NO_BASELINE = BaselineSpec("none")


def parse_baseline(
    text: str | None,
    *,
    artifact_dir: str | Path | None = None,
    bare: Literal["path", "path-or-ref"] = "path",
    option: str = "baseline",
) -> BaselineSpec:
    """Parse a baseline spec (see the module docstring); bad specs are a one-line UsageError
    naming `option`. `artifact_dir`: where `artifact:NAME` was downloaded."""
    spec = (text or "").strip()
    if not spec:
        return NO_BASELINE
    kind, sep, value = spec.partition(":")
    if not sep or kind not in KINDS:
        # `C:\reports`, `a:b.json` and plain paths are paths; `artefact:x` is a typo of a kind
        if sep and re.fullmatch(r"[a-z]+", kind) and len(kind) > 1:
            raise UsageError(
                f"{option}: unknown kind {kind!r} in {spec!r} (use ref:REF, artifact:NAME, "
                "file:PATH or a path)"
            )
        if bare == "path-or-ref" and not Path(spec).exists():
            return BaselineSpec("ref", spec, spec)
        return BaselineSpec("path", spec, spec)
    value = value.strip()
    if not value:
        raise UsageError(f"{option}: {spec!r} names nothing")
    if kind == "ref":
        return BaselineSpec("ref", value, spec)
    if kind == "artifact":
        if not artifact_dir:
            raise UsageError(
                f"{option}: {spec!r} needs the directory the artifact was downloaded to "
                "(the Action sets BASELINE_DIR); locally, pass that directory as the baseline"
            )
        return BaselineSpec("path", str(artifact_dir), spec)
    return BaselineSpec("path", value, spec)


def baseline_from_options(
    baseline: str | None, base_ref: str | None, *, option: str = "--baseline"
) -> BaselineSpec:
    """The CLI's two spellings (`--baseline SPEC`, `--base-ref REF`) as one spec."""
    if baseline is not None and base_ref is not None:
        raise UsageError("give either a baseline file/directory or --base-ref, not both")
    if base_ref is not None:
        return parse_baseline(f"ref:{base_ref}", option="--base-ref")
    return parse_baseline(baseline, option=option)
