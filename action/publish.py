"""The Action's step after the artifact upload: the PR comment and the job summary, linking it.

Runs `costguard comment github --diff` on the DiffReport the `ci` step wrote (the verdict is
already decided there: `--fail-on never`), with `COSTGUARD_ARTIFACT_URL` (upload-artifact's
`artifact-url`) and the run in the environment, so the comment's footer links the workflow run
and the artifact (HTML report, RunReport, DiffReport) and its top movers link their fixture
lines at the head commit. Then appends the job summary with the same links. A comment that
cannot be posted (a fork's read-only token) is a warning, as before: the verdict step decides.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from step import comment_mode, fail, flag, guarded

DIFF = "costguard-diff.json"


def comment_args(env: Mapping[str, str], pr: int | None) -> list[str] | None:
    """`costguard comment github` arguments, or None when no comment is wanted or possible."""
    mode = comment_mode(env)
    if mode == "off" or not pr or not env.get("GITHUB_TOKEN"):
        return None
    args = ["comment", "github", "--diff", str(Path(env["OUT_DIR"]) / DIFF), "--pr", str(pr)]
    args += ["--tag", env.get("INPUT_TAG") or "default", "--mode", mode, "--fail-on", "never"]
    if flag(env, "INPUT_SKIP_NO_DIFF"):
        args.append("--skip-no-diff")
    return args


def main() -> None:
    from costguard.api.ci import job_summary
    from costguard.integrations.actions import (
        append_summary,
        escape_data,
        pull_request_context,
        write_outputs,
    )

    env = dict(os.environ)
    if not env.get("OUT_DIR"):
        fail("OUT_DIR is not set (the Action sets it to a directory under RUNNER_TEMP)", 2)
    diff_path = Path(env["OUT_DIR"]) / DIFF
    if not diff_path.is_file():
        fail(f"no DiffReport at {diff_path}: the costguard step did not finish", 2)
    url = ""
    args = comment_args(env, pull_request_context().number)
    if args is not None:
        print(f"costguard: $ costguard {shlex.join(args)}", flush=True)
        outputs = Path(env.get("RUNNER_TEMP") or env["OUT_DIR"]) / "costguard-publish-outputs"
        outputs.unlink(missing_ok=True)
        code = subprocess.run(
            [sys.executable, "-m", "costguard", *args], env={**env, "GITHUB_OUTPUT": str(outputs)}
        ).returncode
        if code != 0:
            message = f"could not post the PR comment (costguard exited {code}); see the log above"
            print(f"::warning title=costguard::{escape_data(message)}", flush=True)
        elif outputs.is_file():
            for line in outputs.read_text(encoding="utf-8").splitlines():
                if line.startswith("comment-url="):
                    url = line.split("=", 1)[1]
    project_dir = Path.cwd() / Path(env.get("INPUT_CONFIG") or "costguard.yaml").parent
    append_summary(job_summary(diff_path, project_dir=project_dir))
    write_outputs({"comment-url": url})


if __name__ == "__main__":
    guarded(main)
