"""Baselines: the run a head is compared with, from one of three stores behind one interface.

- a RunReport file (`--baseline costguard-report.json`);
- an artifact path: a directory holding a downloaded CI artifact (`--baseline artifacts/base/`);
- a git ref (`--base-ref origin/main`): the base commit is checked out into a temporary
  `git worktree` and projected offline there (no GPU, no network), with the head's token cache.

When there is no baseline (the base commit has no costguard config yet, an artifact that was
never uploaded, nothing given) the answer is a `Baseline` with `report=None` and a plain
`reason`; renderers then say "no baseline yet" and regression rules are skipped, saying why.
A baseline that exists but cannot be read is an error naming the file (exit 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from costguard.compare.diff import Baseline
from costguard.compare.projection_cache import BaseProjectionCache, projection_key
from costguard.errors import CostguardError, UsageError
from costguard.report.run_report import DEFAULT_REPORT, RunReport, load_report

Projector = Callable[
    [Path, "list[str] | None", "Path | None", Path], "tuple[RunReport, dict[str, str] | None]"
]
"""Projects a checkout offline: (config path, fixture paths or None, token cache dir or None,
the checkout) -> its RunReport and the files outside the checkout it read ({path: sha256}, None
when the projection must not be cached: see `projection_cache.external_inputs`)."""

__all__ = ["Baseline", "baseline_from_path", "baseline_from_git_ref", "no_baseline"]

_PEEK_BYTES = 4096


def no_baseline(reason: str, source: str = "none") -> Baseline:
    return Baseline(report=None, source=source, reason=reason)


def baseline_from_path(path: str | Path) -> Baseline:
    """A RunReport file, or a directory (a CI artifact) holding one. Missing -> no baseline yet."""
    p = Path(path)
    if p.is_dir():
        report = _find_report(p)
        if report is None:
            return no_baseline(f"no costguard RunReport in artifact directory {p}", f"artifact {p}")
        return _usable(load_report(report), f"artifact {report}")
    if p.is_file():
        return _usable(load_report(p), f"file {p}")
    return no_baseline(f"baseline {p} does not exist", f"file {p}")


def _usable(report: RunReport, source: str) -> Baseline:
    """An incomplete run is never a baseline: its totals cover only part of the fixtures, so
    comparing with it would read the missing part as $0 and hide a regression."""
    if report.complete:
        return Baseline(report, source)
    why = report.get("incomplete_reason")
    return no_baseline(
        f"no usable baseline: {source.split(' ', 1)[-1]} is an incomplete run"
        + (f" ({why})" if isinstance(why, str) and why else "")
        + "; re-run the baseline to completion",
        source,
    )


def _find_report(directory: Path) -> Path | None:
    named = sorted(directory.rglob(DEFAULT_REPORT))
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise UsageError(
            f"artifact directory {directory} holds several {DEFAULT_REPORT} files "
            f"({', '.join(str(n) for n in named[:4])}); pass the one to compare with"
        )
    runs = [f for f in sorted(directory.rglob("*.json")) if _looks_like_run_report(f)]
    if len(runs) > 1:
        raise UsageError(
            f"artifact directory {directory} holds several RunReports "
            f"({', '.join(str(r) for r in runs[:4])}); pass the one to compare with"
        )
    return runs[0] if runs else None


def _looks_like_run_report(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(_PEEK_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    return '"kind": "run"' in head or '"kind":"run"' in head


# -- git ------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_LFS_SKIP_SMUDGE": "1", "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError("--base-ref needs git on PATH") from None


def _repo_root(start: Path) -> Path:
    proc = _git("rev-parse", "--show-toplevel", cwd=start)
    if proc.returncode != 0:
        raise UsageError(f"--base-ref needs a git repository: {start} is not inside one")
    return Path(proc.stdout.strip()).resolve()


def resolve_commit(ref: str, *, cwd: Path) -> str:
    """The full commit id of `ref`, or a one-line error saying how to make it available."""
    if not ref or ref.startswith("-"):
        raise UsageError(f"invalid git ref {ref!r}")
    proc = _git(
        "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", cwd=cwd
    )
    if proc.returncode != 0:
        raise UsageError(
            f"git ref {ref!r} not found in {cwd} (in CI, fetch the base first: actions/checkout "
            "with fetch-depth: 0, or `git fetch origin BRANCH`)"
        )
    return proc.stdout.strip()


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def baseline_from_git_ref(
    ref: str,
    *,
    config: str | Path,
    project: Projector,
    fixtures: Sequence[str | Path] | None = None,
    cache_dir: Path | None = None,
) -> Baseline:
    """Project the commit `ref` offline in a temporary worktree and return its RunReport.

    `config` and `fixtures` are the head's paths (relative to the working directory); the same
    paths are used inside the base checkout. `cache_dir` (the head's token-count cache) is shared:
    it is keyed by content, so the base only tokenizes what the head has not already.
    `project` runs the offline projection (the facade passes its own: this layer cannot run one).
    """
    config_path = Path(config).resolve()
    root = _repo_root(config_path.parent if config_path.parent.exists() else Path.cwd())
    sha = resolve_commit(ref, cwd=root)
    source = f"git ref {ref} ({sha[:12]})"
    rel_config = _relative(config_path, root)
    if rel_config is None:
        raise UsageError(f"--base-ref: the config {config} is outside the git repository {root}")
    if _git("cat-file", "-e", f"{sha}:{rel_config}", cwd=root).returncode != 0:
        return no_baseline(
            f"{rel_config} does not exist at {ref} (costguard is new in this change)", source
        )

    rel_fixtures = None
    if fixtures:
        rel_fixtures = [_relative(Path(f), root) or str(Path(f).resolve()) for f in fixtures]
    cache_root = _cache_root(config_path, cache_dir)
    cache = BaseProjectionCache(cache_root / "base-projections") if cache_root else None
    key = projection_key(sha, rel_config, rel_fixtures)
    cached = cache.get(key) if cache is not None else None
    if cached is not None:
        return Baseline(cached, f"{source}, projection cached")

    base_fixtures: list[str] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="costguard-base-"))
    tree = tmp / "tree"
    try:
        proc = _git("worktree", "add", "--detach", "--quiet", str(tree), sha, cwd=root)
        if proc.returncode != 0:
            message = " ".join(proc.stderr.split()) or f"exit code {proc.returncode}"
            raise UsageError(f"could not check out {ref} into a temporary worktree: {message}")
        if fixtures:
            base_fixtures = []
            for f in fixtures:
                rel = _relative(Path(f), root)
                base_fixtures.append(str(tree / rel) if rel is not None else str(Path(f).resolve()))
        try:
            report, external = project(
                tree / rel_config,
                base_fixtures,
                Path(cache_dir).resolve() if cache_dir else None,
                tree,
            )
        except CostguardError as exc:
            raise _at_ref(exc, tree, ref) from None
        if cache is not None and external is not None:
            cache.put(key, report, external, commit=sha)
        return Baseline(report, source)
    finally:
        _git("worktree", "remove", "--force", str(tree), cwd=root)
        shutil.rmtree(tmp, ignore_errors=True)
        _git("worktree", "prune", cwd=root)


def _cache_root(config_path: Path, cache_dir: Path | None) -> Path | None:
    """The head's cache directory: given, else `cache_dir:` of the head's config (default
    .costguard/cache beside it); None when the head has no readable config (no cache then)."""
    if cache_dir is not None:
        return Path(cache_dir).resolve()
    from costguard.model.config import load_stack

    try:
        stack = load_stack(config_path)
    except CostguardError:
        return None
    path = Path(stack.config.cache_dir)
    return path if path.is_absolute() else stack.root / path


def _at_ref(exc: CostguardError, tree: Path, ref: str) -> CostguardError:
    """The same error, with paths inside the throw-away checkout shown as `REF:path`."""
    prefix = str(tree) + os.sep

    def fix(text: str | None) -> str | None:
        return text.replace(prefix, f"{ref}:").replace(str(tree), ref) if text else text

    file = fix(exc.file)
    message = f"{fix(exc.message)} (in the base {ref})"
    new = type(exc)(message, file=file, line=exc.line, key=exc.key)
    return new
