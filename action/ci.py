"""The Action's main step: `costguard run` for a live backend, then `costguard ci`.

`costguard ci` does the work (project or read the head, baseline, diff, policy, HTML report,
annotations, step outputs). This script only turns the Action's inputs into its arguments and
defers the verdict: a policy failure (exit 1) is recorded as the `exit-code` output and the step
succeeds, so the artifacts are uploaded and the Action's last step fails the job. Anything else
(2: bad input) fails here at once. The PR comment and the job summary come after the upload
(`publish.py`), so they can link the artifact.

Reports go to OUT_DIR (outside the repository; uploaded as the artifact costguard-TAG), with
`pr-number` beside them for a `workflow_run` job that comments on a fork's pull request.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from step import comment_mode, fail, flag, guarded

REPORT = "costguard-report.json"
DIFF = "costguard-diff.json"
HTML = "costguard-report.html"


def baseline_args(env: Mapping[str, str]) -> list[str]:
    """Input baseline -> costguard's options, through costguard's one baseline grammar
    (`costguard.api.baselines`). Empty: ci's default, the pull request's base commit."""
    from costguard.api.baselines import parse_baseline
    from costguard.errors import CostguardError

    try:
        spec = parse_baseline(
            env.get("INPUT_BASELINE"),
            artifact_dir=env.get("BASELINE_DIR") or None,
            option="input baseline",
        )
    except CostguardError as exc:
        fail(str(exc), 2)
    if spec.kind == "ref":
        return ["--base-ref", spec.value]
    if spec.kind == "path":
        return ["--baseline", spec.value]
    return []


def commands(env: Mapping[str, str]) -> list[list[str]]:
    """The costguard invocations (arguments after `costguard`), in order."""
    out = Path(env["OUT_DIR"])
    common = ["--config", env.get("INPUT_CONFIG") or "costguard.yaml"]
    for line in (env.get("INPUT_FIXTURES") or "").splitlines():
        if line.strip():
            common += ["--fixtures", line.strip()]
    backend = (env.get("INPUT_BACKEND") or "offline").strip()
    steps: list[list[str]] = []
    ci = ["ci"]
    if backend != "offline":
        steps.append(["run", *common, "--backend", backend, "--out", str(out / REPORT), "--quiet"])
        ci.append(str(out / REPORT))
    ci += common
    if env.get("INPUT_POLICY"):
        ci += ["--policy", env["INPUT_POLICY"]]
    ci += baseline_args(env)
    if backend == "offline":
        ci += ["--report-out", str(out / REPORT)]
    ci += ["--diff-out", str(out / DIFF), "--html", str(out / HTML)]
    ci += ["--tag", env.get("INPUT_TAG") or "default"]
    # the comment and the summary are written after the upload, by publish.py (they link it)
    ci += ["--no-comment", "--no-summary"]
    comment_mode(env)  # publish.py's inputs, checked before anything runs
    flag(env, "INPUT_SKIP_NO_DIFF")
    if env.get("INPUT_ACKNOWLEDGE_LABEL"):
        ci += ["--acknowledge-label", env["INPUT_ACKNOWLEDGE_LABEL"]]
    ci += ["--fail-on", env.get("INPUT_FAIL_ON") or "fail"]
    return [*steps, ci]


def _costguard(args: list[str]) -> int:
    print(f"costguard: $ costguard {shlex.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "costguard", *args]).returncode


def main() -> None:
    from costguard.integrations.actions import pull_request_context, write_outputs

    env = dict(os.environ)
    if not env.get("OUT_DIR"):
        fail("OUT_DIR is not set (the Action sets it to a directory under RUNNER_TEMP)", 2)
    out = Path(env["OUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    for stale in (REPORT, DIFF, HTML):
        (out / stale).unlink(missing_ok=True)
    plan = commands(env)
    pr = pull_request_context().number
    if pr:
        (out / "pr-number").write_text(f"{pr}\n", encoding="utf-8")
    *live, ci = plan
    for args in live:
        code = _costguard(args)
        # a run that stopped half-way writes a report marked incomplete: ci fails it and says why
        if code != 0 and not (out / REPORT).is_file():
            sys.exit(code)
    code = _costguard(ci)
    if code not in (0, 1):
        sys.exit(code)
    write_outputs({"exit-code": str(code)})


if __name__ == "__main__":
    guarded(main)
