"""`baseline: artifact:NAME`: find the run whose artifact NAME is the baseline.

The newest unexpired artifact NAME uploaded by a run of this repository (never a fork's run) on
the base branch: input baseline-branch, else the pull request's base branch, else this run's
branch. The next step (actions/download-artifact) fetches it into `dir`; `costguard ci` then
reads it with `--baseline dir`. No such artifact yet: a notice, no download, and the comparison
says "no baseline yet".

Outputs: run-id (empty when none was found), name, dir.
"""

from __future__ import annotations

import os

from step import fail, guarded


def main() -> None:
    from costguard.integrations.actions import escape_data, pull_request_context, write_outputs
    from costguard.integrations.github import GitHubClient

    spec = os.environ.get("INPUT_BASELINE", "")
    name = spec.removeprefix("artifact:").strip()
    if not spec.startswith("artifact:") or not name:
        fail(f"input baseline: expected artifact:NAME, got {spec!r}", 2)
    ctx = pull_request_context()
    branch = (
        os.environ.get("INPUT_BASELINE_BRANCH")
        or ctx.base_ref
        or os.environ.get("GITHUB_REF_NAME")
        or None
    )
    if not ctx.repo:
        fail("GITHUB_REPOSITORY is not set: cannot look up the baseline artifact", 2)
    out = {"run-id": "", "name": name, "dir": os.environ.get("BASELINE_DIR", "")}
    with GitHubClient() as client:
        artifact = client.latest_artifact(ctx.repo, name, branch=branch)
    where = f"branch {branch}" if branch else "any branch"
    if artifact is None:
        print(
            f"::notice title=costguard::{escape_data(f'no artifact {name} from {where} yet: comparing without a baseline')}"
        )
    else:
        run = artifact["workflow_run"]
        out["run-id"] = str(run["id"])
        print(
            f"costguard: baseline: artifact {name} of run {run['id']} ({where}, commit "
            f"{str(run.get('head_sha', ''))[:12]}, {artifact.get('created_at')})"
        )
    write_outputs(out)


if __name__ == "__main__":
    guarded(main)
