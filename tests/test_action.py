"""The GitHub Action: action.yml run step by step in a simulated pull-request job, and its examples.

The job is simulated by `tests/doubles/actions_runner.py` (the real action.yml: inputs, `if:`,
expressions, `run:` steps in bash, step outputs), a real git repository with a base and a head
commit, a `pull_request` event in GITHUB_EVENT_PATH, and the GitHub API double on 127.0.0.1
(GITHUB_API_URL). The inputs come from the README's workflow, which must be one of the example
workflow files, and every example validates against GitHub's workflow schema.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from costguard.integrations.github import is_ours, marker
from tests.conftest import REPO, git, write
from tests.doubles.actions_runner import ActionRun, CompositeRunner, Evaluator
from tests.doubles.github_api import GitHubAPI
from tests.test_pr_comment import OVER_BUDGET as POLICY

ACTION_REF = "costguard/costguard@v1"
EXAMPLES = REPO / "action" / "examples"
README_EXAMPLE = EXAMPLES / "pull-request.yml"
TOKEN = "ghs_Act10nT0k3n_never_print_me_1234567890"
OWNER, NAME = "octo", "widgets"
PR = 7


def _yaml(path: Path) -> dict:
    # PyYAML reads a bare `on:` key as True (YAML 1.1); workflows only need the other keys here
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _action() -> dict:
    return _yaml(REPO / "action.yml")


def _check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    cmd = [exe] if exe else [sys.executable, "-m", "check_jsonschema"]
    return subprocess.run(
        [*cmd, "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _action_steps(workflow: dict) -> list[dict]:
    return [
        s
        for job in workflow["jobs"].values()
        for s in job.get("steps", [])
        if s.get("uses") == ACTION_REF
    ]


# -- static checks ---------------------------------------------------------------------------------


def test_action_and_every_example_workflow_validate_against_githubs_schemas(tmp_path: Path) -> None:
    proc = _check_jsonschema("vendor.github-actions", REPO / "action.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    examples = sorted(EXAMPLES.glob("*.yml"))
    assert len(examples) >= 6
    proc = _check_jsonschema("vendor.github-workflows", *examples)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the check can fail: a typo'd key does not validate
    broken = write(
        tmp_path / "broken.yml", "name: x\non: push\njobs:\n  j:\n    runs-on: x\n    step: []\n"
    )
    assert _check_jsonschema("vendor.github-workflows", broken).returncode != 0
    action = _action()
    action["runs"]["steps"][0]["uses:"] = action["runs"]["steps"][0].pop("uses")
    bad_action = tmp_path / "action.yml"
    bad_action.write_text(yaml.safe_dump(action))
    assert _check_jsonschema("vendor.github-actions", bad_action).returncode != 0


def _fenced_yaml_after(markdown: str, anchor: str) -> str:
    """The first ```yaml block after the line that mentions `anchor`."""
    from markdown_it import MarkdownIt

    start = markdown.index(anchor)
    for token in MarkdownIt().parse(markdown[start:]):
        if token.type == "fence" and token.info.strip() == "yaml":
            return token.content
    raise AssertionError(f"no yaml block after {anchor!r}")


def test_readme_workflow_is_the_tested_example_and_the_docs_show_every_example_verbatim() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert _fenced_yaml_after(
        readme, "action/examples/pull-request.yml"
    ) == README_EXAMPLE.read_text(encoding="utf-8")
    docs = (REPO / "docs" / "github-action.md").read_text(encoding="utf-8")
    for example in sorted(EXAMPLES.glob("*.yml")):
        rel = f"action/examples/{example.name}"
        assert rel in docs, f"docs/github-action.md does not show {rel}"
        assert _fenced_yaml_after(docs, rel) == example.read_text(encoding="utf-8"), rel


def test_examples_use_only_declared_inputs_and_pinned_actions() -> None:
    declared = set(_action()["inputs"])
    for example in sorted(EXAMPLES.glob("*.yml")):
        workflow = _yaml(example)
        for step in (s for job in workflow["jobs"].values() for s in job.get("steps", [])):
            uses = step.get("uses")
            if uses == ACTION_REF:
                assert set(step.get("with") or {}) <= declared, (
                    example.name,
                    set(step["with"]) - declared,
                )
            elif uses:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+(\.\d+)*", uses), (example.name, uses)
    for step in _action()["runs"]["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"actions/[\w-]+@v\d+", step["uses"]), step["uses"]


def test_action_expressions_name_declared_inputs_and_earlier_steps() -> None:
    action = _action()
    inputs = set(action["inputs"])
    seen_ids: set[str] = set()
    ids = [s.get("id") for s in action["runs"]["steps"] if s.get("id")]
    assert len(ids) == len(set(ids))

    def refs(value: object) -> list[str]:
        return re.findall(r"\b(inputs|steps)\.([\w-]+)", json.dumps(value))

    for step in action["runs"]["steps"]:
        for kind, name in refs({k: v for k, v in step.items() if k != "id"}):
            if kind == "inputs":
                assert name in inputs, (step["name"], name)
            else:
                assert name in seen_ids, f"step {step['name']!r} reads steps.{name} before it ran"
        if "run" in step:
            assert "${{" not in step["run"], (
                f"{step['name']}: inputs reach scripts through env, not the script text"
            )
            assert step.get("shell") == "bash"
        if step.get("id"):
            seen_ids.add(step["id"])
    for name, out in action["outputs"].items():
        expected = {"artifact-url": "upload", "comment-url": "publish"}.get(name, "ci")
        assert refs(out["value"]) == [("steps", expected)], name


def test_the_verdict_is_the_last_step_and_cleanup_always_runs() -> None:
    steps = _action()["runs"]["steps"]
    names = [s["name"] for s in steps]
    assert names[-1] == "Verdict" and "exit" in steps[-1]["run"] and "if" not in steps[-1]
    ci = names.index("Project, compare and comment")
    for name in (
        "Collect the vLLM logs",
        "Stop the vLLM stack",
        "Upload the report, diff and logs",
    ):
        step = steps[names.index(name)]
        assert names.index(name) > ci and step["if"].startswith("always()"), name
    gpu, install = names.index("Check the GPU"), names.index("Install costguard")
    assert gpu < install and steps[gpu]["if"] == "inputs.backend == 'vllm'"


def _stack_invocations() -> dict[str, list[str]]:
    """`costguard stack ...` argument lists in action.yml, with $VARS replaced by sample values."""
    found = {}
    for step in _action()["runs"]["steps"]:
        run = step.get("run", "")
        if "-m costguard stack" in run:
            args = shlex.split(run.split("-m costguard", 1)[1])
            found[args[1]] = [
                re.sub(r"\$\{?(\w+)\}?", lambda m: "1800" if "TIMEOUT" in m[1] else "/tmp/x", a)
                for a in args
            ]
    return found


def test_vllm_steps_call_the_stack_commands_with_options_the_cli_accepts() -> None:
    from tests.doubles.fake_vllm import DEFAULT_VERSION

    # the vLLM the Action installs is the one the backend is tested against
    assert _action()["inputs"]["vllm-version"]["default"] == DEFAULT_VERSION
    calls = _stack_invocations()
    assert set(calls) == {"up", "logs", "down"}
    assert (
        calls["up"][:2] == ["stack", "up"]
        and "--config" in calls["up"]
        and "--timeout" in calls["up"]
    )
    assert "--out" in calls["logs"]
    from costguard.cli.main import cli

    if "stack" not in cli.commands:
        pytest.skip("`costguard stack` is not on this branch yet (live backends)")
    for args in calls.values():  # click parses them as the real CLI would
        cli.make_context("costguard", list(args), resilient_parsing=False)


# -- the scripts' argument building ------------------------------------------------------------------


def _script(name: str):
    import importlib.util

    sys.path.insert(0, str(REPO / "action"))
    try:
        spec = importlib.util.spec_from_file_location(
            f"action_{name}", REPO / "action" / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "action"))
    return module


def test_ci_script_maps_inputs_to_costguard_commands() -> None:
    ci = _script("ci")
    base = {
        "OUT_DIR": "/t/out",
        "INPUT_CONFIG": "stack.yaml",
        "INPUT_TAG": "gpu",
        "INPUT_FAIL_ON": "warn",
    }
    [offline] = ci.commands({**base, "INPUT_FIXTURES": "fixtures/a\n\nfixtures/b c\n"})
    assert offline == [
        "ci",
        "--config",
        "stack.yaml",
        "--fixtures",
        "fixtures/a",
        "--fixtures",
        "fixtures/b c",
        "--report-out",
        "/t/out/costguard-report.json",
        "--diff-out",
        "/t/out/costguard-diff.json",
        "--html",
        "/t/out/costguard-report.html",
        "--tag",
        "gpu",
        "--no-comment",
        "--no-summary",
        "--fail-on",
        "warn",
    ]
    run, live = ci.commands(
        {
            **base,
            "INPUT_BACKEND": "vllm",
            "INPUT_POLICY": "p.yaml",
            "INPUT_COMMENT_MODE": "off",
            "INPUT_BASELINE": "artifact:costguard-live",
            "BASELINE_DIR": "/t/base",
            "INPUT_SKIP_NO_DIFF": "true",
            "INPUT_ACKNOWLEDGE_LABEL": "ok",
        }
    )
    assert run == [
        "run",
        "--config",
        "stack.yaml",
        "--backend",
        "vllm",
        "--out",
        "/t/out/costguard-report.json",
        "--quiet",
    ]
    assert live[:2] == ["ci", "/t/out/costguard-report.json"] and "--report-out" not in live
    for option in (
        ["--policy", "p.yaml"],
        ["--baseline", "/t/base"],
        ["--no-comment"],
        ["--acknowledge-label", "ok"],
    ):
        assert any(live[i : i + len(option)] == option for i in range(len(live))), option
    assert ci.baseline_args({"INPUT_BASELINE": "ref:origin/main"}) == ["--base-ref", "origin/main"]
    assert ci.baseline_args({"INPUT_BASELINE": "reports/base.json"}) == [
        "--baseline",
        "reports/base.json",
    ]
    assert ci.baseline_args({"INPUT_BASELINE": "file:a:b.json"}) == ["--baseline", "a:b.json"]
    from costguard.cli.main import cli

    for args in (offline, live, run):  # every option exists on the real command
        cli.make_context("costguard", list(args))
    with pytest.raises(SystemExit) as exc:
        ci.baseline_args({"INPUT_BASELINE": "artefact:x"})
    assert exc.value.code == 2
    for bad in ({"INPUT_COMMENT_MODE": "sometimes"}, {"INPUT_SKIP_NO_DIFF": "yes"}):
        with pytest.raises(SystemExit) as exc:
            ci.commands({**base, **bad})
        assert exc.value.code == 2


def test_publish_script_posts_the_finished_diff_after_the_upload() -> None:
    publish = _script("publish")
    env = {
        "OUT_DIR": "/t/out",
        "INPUT_TAG": "gpu",
        "GITHUB_TOKEN": "t",
        "INPUT_SKIP_NO_DIFF": "true",
    }
    args = publish.comment_args(env, 7)
    assert args == [
        "comment", "github", "--diff", "/t/out/costguard-diff.json", "--pr", "7", "--tag", "gpu",
        "--mode", "update", "--fail-on", "never", "--skip-no-diff",
    ]  # fmt: skip
    assert publish.comment_args({**env, "INPUT_COMMENT_MODE": "off"}, 7) is None
    assert publish.comment_args(env, None) is None  # not a pull request
    assert publish.comment_args({**env, "GITHUB_TOKEN": ""}, 7) is None
    from costguard.cli.main import cli

    cli.make_context("costguard", list(args))


def test_gpu_check_says_what_is_missing(tmp_path: Path) -> None:
    script = REPO / "action" / "gpu_check.py"
    bare = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(script)], env=bare, capture_output=True, text=True)
    assert proc.returncode == 1
    assert (
        "::error title=costguard::backend vllm needs an NVIDIA GPU, but nvidia-smi is not on PATH"
        in proc.stdout
    )
    smi = write(tmp_path / "nvidia-smi", "#!/bin/sh\necho '0, NVIDIA L4, 23034 MiB, 550.54.15'\n")
    smi.chmod(0o755)
    proc = subprocess.run([sys.executable, str(script)], env=bare, capture_output=True, text=True)
    assert (
        proc.returncode == 0
        and "1 GPU(s) on this runner" in proc.stdout
        and "NVIDIA L4" in proc.stdout
    )
    smi.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2\nexit 9\n"
    )
    proc = subprocess.run([sys.executable, str(script)], env=bare, capture_output=True, text=True)
    assert (
        proc.returncode == 1 and "nvidia-smi failed (exit 9: NVIDIA-SMI has failed" in proc.stdout
    )


# -- the simulated pull-request job ------------------------------------------------------------------


@pytest.fixture
def gh():
    with GitHubAPI(token=TOKEN) as api:
        yield api


@pytest.fixture
def pr_repo(git_project: Path) -> Path:
    """Three commits: v1 of the prompt; v2 (longer, costs more); the policy and a README only."""
    write(git_project / readme_inputs()["policy"], POLICY)
    write(git_project / "README.md", "# widgets\n")
    git(git_project, "add", "-A")
    git(git_project, "commit", "-qm", "policy and readme")
    return git_project


class Job:
    """One simulated `pull_request` job in `repo` running the Action with the README's inputs."""

    def __init__(
        self, repo: Path, gh: GitHubAPI, runner_dir: Path, *, base: str, labels: list[str] = ()
    ) -> None:
        self.repo, self.gh, self.dir = repo, gh, runner_dir
        self.base_sha = git(repo, "rev-parse", base).strip()
        self.head_sha = git(repo, "rev-parse", "HEAD").strip()
        gh.add_pr(OWNER, NAME, PR, head_sha=self.head_sha)
        for label in labels:
            gh.add_label(OWNER, NAME, PR, label, actor="alice")
        self.event = {
            "action": "synchronize",
            "number": PR,
            "pull_request": {
                "number": PR,
                "base": {"sha": self.base_sha, "ref": "main"},
                "head": {"sha": self.head_sha, "ref": "feature"},
                "labels": [{"name": label} for label in labels],
            },
            "repository": {"full_name": f"{OWNER}/{NAME}"},
        }
        (runner_dir / "event.json").write_text(json.dumps(self.event))
        self.uploads: list[dict[str, str]] = []

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.dir / "home"),
            "PYTHONPATH": str(REPO),
            "HF_HOME": str(self.dir / "hf"),
            "HF_HUB_OFFLINE": "1",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_EVENT_PATH": str(self.dir / "event.json"),
            "GITHUB_REPOSITORY": f"{OWNER}/{NAME}",
            "GITHUB_API_URL": self.gh.url,
            "GITHUB_REF_NAME": f"{PR}/merge",
            "GITHUB_RUN_ID": "1001",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_WORKSPACE": str(self.repo),
            "RUNNER_OS": "Linux",
        }

    def upload(self, with_: dict[str, str]) -> dict[str, str]:
        files = sorted(p.name for p in Path(with_["path"]).iterdir())
        self.uploads.append({**with_, "files": files})
        n = len(self.uploads)  # what actions/upload-artifact@v4 outputs
        return {
            "artifact-id": str(n),
            "artifact-url": f"https://github.com/{OWNER}/{NAME}/actions/runs/1001/artifacts/{n}",
        }

    def run(self, inputs: dict[str, str], **stand_ins) -> ActionRun:
        runner = CompositeRunner(
            REPO,
            workspace=self.repo,
            temp=self.dir / "temp",
            env=self.env(),
            github={
                "token": TOKEN,
                "repository": f"{OWNER}/{NAME}",
                "event_name": "pull_request",
                "event": self.event,
                "sha": self.head_sha,
                "run_id": "1001",
            },
            uses={
                "actions/setup-python": lambda w: {
                    "python-version": "3.11",
                    "python-path": sys.executable,
                },
                "actions/cache": lambda w: {"cache-hit": "false"},
                "actions/upload-artifact": self.upload,
                **stand_ins,
            },
        )
        result = runner.run(inputs)
        for step in result.steps:
            assert TOKEN not in step.stdout + step.stderr, step.name
        return result

    def ours(self) -> list[dict]:
        return [
            c for c in self.gh.comments(OWNER, NAME, PR) if is_ours(c["body"], marker("default"))
        ]


def artifact_dir(outputs: dict[str, str]) -> Path:
    return Path(outputs["diff-path"]).parent


def readme_inputs() -> dict[str, str]:
    """The `with:` of the README workflow's costguard step; nothing is installed in the test."""
    [step] = _action_steps(_yaml(README_EXAMPLE))
    return {**step["with"], "install": "false"}


def test_a_pull_request_without_a_cost_change_passes_and_says_so(
    pr_repo, gh, tmp_path_factory
) -> None:
    job = Job(pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~1")
    result = job.run(readme_inputs())
    assert not result.failed, result.log
    out = result.outputs
    assert out["verdict"] == "pass" and out["changed"] == "false" and out["has-baseline"] == "true"
    assert out["delta-usd"] == "0.00" and out["delta-pct"] == "0.00"
    assert out["monthly-cost"] == out["base-monthly-cost"] and float(out["monthly-cost"]) > 0
    diff = json.loads(Path(out["diff-path"]).read_text())
    assert out["monthly-cost"] == f"{diff['totals']['cost_per_month']['head']:.2f}"
    assert (
        Path(out["report-path"]).is_file()
        and Path(out["report-path"]).parent == Path(out["diff-path"]).parent
    )
    [comment] = job.ours()
    assert (
        "Projected monthly spend unchanged" in comment["body"]
        and out["comment-url"] == comment["html_url"]
    )
    assert f"Compared with the PR base main ({job.base_sha[:12]})" in comment["body"]
    assert result.summary.startswith("## 💰 Projected monthly spend unchanged")
    assert [s.name for s in result.steps if s.outcome == "skipped"] == [
        "Check the GPU",
        "Cache pip downloads",  # install: false
        "Cache model weights and tokenizers",
        "Fetch tokenizers from the Hugging Face hub",  # local tokenizers
        "Start the vLLM stack",
        "Verify token counts against the servers",
        "Find the baseline artifact",
        "Download the baseline artifact",
        "Collect the vLLM logs",
        "Stop the vLLM stack",
    ]
    [upload] = job.uploads
    assert upload["name"] == "costguard-default" and upload["if-no-files-found"] == "ignore"
    assert upload["files"] == [
        "costguard-diff.json",
        "costguard-report.html",
        "costguard-report.json",
        "pr-number",
    ]
    html = Path(out["html-path"]).read_text()
    assert html.startswith("<!DOCTYPE html>") and Path(out["html-path"]).parent == artifact_dir(out)
    # the comment and the job summary link the run and the artifact they were uploaded in
    run_url = f"https://github.com/{OWNER}/{NAME}/actions/runs/1001"
    assert out["artifact-url"] == f"{run_url}/artifacts/1"
    for text in (comment["body"], result.summary):
        assert f"[workflow run]({run_url})" in text
        assert f"[report artifact costguard-default]({run_url}/artifacts/1)" in text
    assert result.step("publish").outcome == "success"
    assert "costguard: verdict pass (fail-on: fail)" in result.step("Verdict").stdout
    # the caches are keyed as documented: token counts restored from the newest run of this tag
    cache = result.step("models").outputs
    assert (
        cache["tokens-key"] == "costguard-tokens-Linux-default-1001-1" and cache["models-key"] == ""
    )
    assert cache["tokens-path"] == str((pr_repo / ".costguard" / "cache").resolve())


def test_an_over_budget_pull_request_gets_the_comment_then_fails(
    pr_repo, gh, tmp_path_factory
) -> None:
    job = Job(pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~2")
    result = job.run(readme_inputs())
    assert result.failed
    ci, verdict = result.step("ci"), result.step("Verdict")
    assert (
        ci.outcome == "success" and ci.outputs["exit-code"] == "1"
    )  # the comment step did not fail...
    assert (
        verdict.outcome == "failure" and verdict.returncode == 1
    )  # ...the last step failed the job
    assert "costguard: verdict fail (fail-on: fail)" in verdict.stdout
    [comment] = job.ours()
    assert "❌ failed" in comment["body"] and "| ❌ | spend&#95;increase |" in comment["body"]
    # the top mover links its fixture line at the PR's head commit
    diff = json.loads(Path(result.outputs["diff-path"]).read_text())
    mover = diff["fixtures"]["items"][0]
    path, line = mover["location"].rsplit(":", 1)
    blob = f"https://github.com/{OWNER}/{NAME}/blob/{job.head_sha}/{path}#L{line}"
    assert f"]({blob})" in comment["body"]
    line = POLICY.splitlines().index("  spend_increase:") + 1
    policy = readme_inputs()["policy"]
    assert f"::error file={policy},line={line},title=costguard%3A spend_increase::" in ci.stdout
    out = result.outputs
    assert out["verdict"] == "fail" and out["changed"] == "true" and float(out["delta-usd"]) > 0.01
    assert result.summary.startswith("## 💰 Projected monthly spend +$")
    assert job.uploads and result.step("Upload the report, diff and logs").outcome == "success"


def test_the_acknowledge_label_turns_the_failure_into_a_warning(
    pr_repo, gh, tmp_path_factory
) -> None:
    job = Job(
        pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~2", labels=["cost-increase-ok"]
    )
    result = job.run(readme_inputs())
    assert not result.failed, result.log
    assert result.outputs["verdict"] == "warn" and result.step("ci").outputs["exit-code"] == "0"
    body = job.ours()[0]["body"]
    assert "⚠️ passed with warnings" in body
    assert "Regressions acknowledged by the label cost-increase-ok (added by @&#8203;alice)" in body
    assert f"::warning file={readme_inputs()['policy']}" in result.step("ci").stdout
    # fail-on: warn makes the same run fail
    strict = job.run({**readme_inputs(), "fail-on": "warn"})
    assert strict.failed and strict.step("Verdict").returncode == 1


def test_bad_input_fails_at_the_costguard_step_and_the_artifacts_still_upload(
    pr_repo, gh, tmp_path_factory
) -> None:
    job = Job(pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~1")
    policy = readme_inputs()["policy"]
    write(pr_repo / policy, "rules:\n  budget: {metric: monthly_spend, maxx: 1}\n")
    result = job.run(readme_inputs())
    assert result.failed
    ci = result.step("ci")
    assert ci.outcome == "failure" and ci.returncode == 2
    assert f"{policy}:2: rules.budget.maxx" in ci.stderr and "Traceback" not in ci.stderr
    assert result.step("Verdict").outcome == "skipped"
    assert result.step("Upload the report, diff and logs").outcome == "success"
    assert job.ours() == []


def test_artifact_baseline_from_the_newest_run_on_the_base_branch(
    pr_repo, gh, tmp_path_factory
) -> None:
    runner_dir = tmp_path_factory.mktemp("runner")
    job = Job(pr_repo, gh, runner_dir, base="HEAD~1")
    # main's run (a report of the v1 prompt), then newer ones that must not be the baseline:
    # a fork's run on a branch it named main, a run on another branch, an expired artifact
    gh.add_artifact(OWNER, NAME, "costguard-live", run_id=501, head_branch="main")
    gh.add_artifact(OWNER, NAME, "costguard-live", run_id=502, head_branch="main", fork=True)
    gh.add_artifact(OWNER, NAME, "costguard-live", run_id=503, head_branch="feature")
    gh.add_artifact(OWNER, NAME, "costguard-live", run_id=504, head_branch="main", expired=True)
    gh.add_artifact(OWNER, NAME, "costguard-other", run_id=505, head_branch="main")
    git(pr_repo, "checkout", "-q", "HEAD~2")
    from costguard.cli.main import main as cli_main

    old = Path.cwd()
    os.chdir(pr_repo)
    try:
        with pytest.raises(SystemExit):
            cli_main(["run", "--quiet", "--out", str(runner_dir / "v1-report.json")])
    finally:
        os.chdir(old)
        git(pr_repo, "checkout", "-q", "-")
    downloads = []

    def download(with_: dict[str, str]) -> dict[str, str]:
        downloads.append(with_)
        Path(with_["path"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(runner_dir / "v1-report.json", Path(with_["path"]) / "costguard-report.json")
        return {"download-path": with_["path"]}

    result = job.run(
        {**readme_inputs(), "baseline": "artifact:costguard-live", "tag": "live"},
        **{"actions/download-artifact": download},
    )
    assert result.failed, result.log  # the v2 prompt costs more than main's report: over budget
    [dl] = downloads
    assert dl["run-id"] == "501" and dl["name"] == "costguard-live" and dl["github-token"] == TOKEN
    assert "artifact" in json.loads(Path(result.outputs["diff-path"]).read_text())["base"]["source"]
    assert result.outputs["has-baseline"] == "true" and float(result.outputs["delta-usd"]) > 0
    assert job.uploads[0]["name"] == "costguard-live"
    # no artifact on the branch yet: a notice, no download, no baseline
    gh2 = Job(pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~1")
    again = gh2.run(
        {**readme_inputs(), "baseline": "artifact:never-uploaded"},
        **{"actions/download-artifact": download},
    )
    assert not again.failed, again.log
    assert (
        "::notice title=costguard::no artifact never-uploaded from branch main yet"
        in again.step("baseline").stdout
    )
    assert again.step("Download the baseline artifact").outcome == "skipped" and len(downloads) == 1
    assert again.outputs["has-baseline"] == "false"


def test_the_runner_double_evaluates_expressions_like_github() -> None:
    ev = Evaluator(
        {
            "inputs": {"backend": "VLLM", "n": "3"},
            "steps": {"a": {"outputs": {}, "outcome": "skipped"}},
        },
        lambda: False,
    )
    assert ev.evaluate("inputs.backend == 'vllm'") is True  # case-insensitive strings
    assert ev.evaluate("steps.a.outputs.missing || 'fallback'") == "fallback"
    assert ev.evaluate("inputs.n == 3 && !(steps.a.outcome != 'skipped')") is True
    assert (
        ev.render("costguard-${{ format('{0}-{1}', inputs.backend, inputs['n']) }}")
        == "costguard-VLLM-3"
    )
    assert ev.condition("always() && steps.a.outcome != 'skipped'") is False
    failed = Evaluator({}, lambda: True)
    assert failed.condition(None) is False and failed.condition("always()") is True
    assert failed.condition("failure()") is True and failed.condition("true") is False
    with pytest.raises(Exception, match="unknown context 'input'"):
        ev.evaluate("input.backend")


# -- hub tokenizers: keyed into the model cache, fetched before the projection ---------------------


def test_hub_tokenizers_are_keyed_fetched_and_then_counted_offline(
    project_dir: Path, tmp_path: Path
) -> None:
    from tests.conftest import minilm_dir
    from tests.doubles.hf_hub import HubDouble

    tok = Path(minilm_dir())
    stack = (project_dir / "costguard.yaml").read_text()
    stack = stack.replace(f'hf: "{tok}", chat_template: chat.jinja', 'hf: "acme/tiny-chat"', 1)
    stack = stack.replace(f'hf: "{tok}", chat_template: chat.jinja', 'hf: "acme/gated-chat"', 1)
    (project_dir / "costguard.yaml").write_text(stack)
    files = {
        "tokenizer.json": (tok / "tokenizer.json").read_bytes(),
        "tokenizer_config.json": (tok / "tokenizer_config.json").read_bytes(),
        "chat_template.jinja": (project_dir / "chat.jinja").read_bytes(),
    }
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "HF_HOME": str(tmp_path / "hf"),
        "INPUT_CONFIG": "costguard.yaml",
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "RUNNER_OS": "Linux",
    }

    def models(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "action" / "models.py"), *args],
            cwd=project_dir,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    from tests.doubles.actions_runner import parse_output_file

    assert models("plan", INPUT_BACKEND="offline").returncode == 0
    offline_key = parse_output_file((tmp_path / "out").read_text())["models-key"]
    (tmp_path / "out").write_text("")
    assert models("plan", INPUT_BACKEND="vllm").returncode == 0
    planned = parse_output_file((tmp_path / "out").read_text())
    assert (
        offline_key.startswith("costguard-hf-Linux-") and planned["models-key"] != offline_key
    )  # + weights
    assert planned["models-paths"] == str(tmp_path / "hf" / "hub")

    with HubDouble() as hub:
        hub.add_repo("acme/tiny-chat", files)
        hub.add_repo("acme/gated-chat", files, gated_token="hf_granted")
        denied = models("fetch-tokenizers", HF_ENDPOINT=hub.url)
        assert denied.returncode == 2, denied.stderr
        assert "costguard.yaml:" in denied.stderr and "tiers[1].tokenizer.hf" in denied.stderr
        assert (
            "'acme/gated-chat' is gated on the Hugging Face hub" in denied.stderr
            and "HF_TOKEN" in denied.stderr
        )
        assert "Traceback" not in denied.stderr and "::error title=costguard::" in denied.stdout
        fetched = models("fetch-tokenizers", HF_ENDPOINT=hub.url, HF_TOKEN="hf_granted")
        assert fetched.returncode == 0, fetched.stderr
        assert "tokenizer acme/tiny-chat already in the Hugging Face cache" in fetched.stdout
        assert "fetched the tokenizer of acme/gated-chat" in fetched.stdout
        weights = [p for _, p in hub.requests if "model.safetensors" in p]
        assert weights == []  # tokenizer files only, never the weights
    # the projection now counts with the fetched tokenizers, without any network
    proc = subprocess.run(
        [sys.executable, "-m", "costguard", "run", "--quiet"],
        cwd=project_dir,
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((project_dir / "costguard-report.json").read_text())
    assert report["complete"] is True


def test_fork_flow_computes_without_commenting_then_the_workflow_run_job_comments(
    pr_repo, gh, tmp_path_factory
) -> None:
    job = Job(pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~2")
    [compute] = _action_steps(_yaml(EXAMPLES / "fork-pull-request.yml"))
    result = job.run({**compute["with"], "install": "false"})
    assert result.failed and job.ours() == []  # over budget, but a fork's token cannot comment
    [upload] = job.uploads
    artifact = Path(upload["path"])
    assert (artifact / "pr-number").read_text() == f"{PR}\n"

    # step 2, as fork-comment.yml runs it: the artifact downloaded to ./costguard, nothing checked out
    workflow = _yaml(EXAMPLES / "fork-comment.yml")
    steps = workflow["jobs"]["comment"]["steps"]
    download = next(s for s in steps if s.get("uses", "").startswith("actions/download-artifact"))
    assert download["with"]["name"] == upload["name"]
    [comment_step] = [s for s in steps if s.get("name") == "Comment on the pull request"]
    work = tmp_path_factory.mktemp("workflow-run")
    shutil.copytree(artifact, work / download["with"]["path"])
    shim = write(
        work / "bin" / "costguard", f'#!/bin/sh\nexec "{sys.executable}" -m costguard "$@"\n'
    )
    shim.chmod(0o755)

    def comment(head_sha: str) -> subprocess.CompletedProcess:
        github = {"token": TOKEN, "event": {"workflow_run": {"head_sha": head_sha, "id": 1001}}}
        ev = Evaluator({"github": github}, lambda: False)
        env = {k: ev.render(v) for k, v in comment_step["env"].items()}
        env.update(
            PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
            PYTHONPATH=str(REPO),
            HOME=str(work),
            GITHUB_REPOSITORY=f"{OWNER}/{NAME}",
            GITHUB_API_URL=gh.url,
            GITHUB_SERVER_URL="https://github.com",
            GITHUB_RUN_ID="2002",  # the comment workflow's own run
            GITHUB_WORKSPACE=str(work),
        )
        proc = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", comment_step["run"]],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert TOKEN not in proc.stdout + proc.stderr
        return proc

    stale = comment("f" * 40)  # the PR moved on (or the number was forged): no comment
    assert stale.returncode == 0, stale.stderr
    assert f"not commenting: pull request #{PR} is at commit {job.head_sha[:12]}" in stale.stderr
    assert job.ours() == []
    posted = comment(job.head_sha)
    assert posted.returncode == 0, (
        posted.stderr
    )  # --fail-on never: the verdict is the compute job's
    [c] = job.ours()
    assert "❌ failed" in c["body"] and "posted the PR comment" in posted.stderr
    # it links the computing run's artifact and the fixtures at the PR's head, not this run's
    run_url = f"https://github.com/{OWNER}/{NAME}/actions/runs/1001"
    assert f"[report artifact costguard-default]({run_url}#artifacts)" in c["body"]
    assert f"/blob/{job.head_sha}/fixtures/" in c["body"]


def test_backend_vllm_on_a_runner_without_a_gpu_stops_before_installing(
    pr_repo, gh, tmp_path_factory
) -> None:
    assert shutil.which("nvidia-smi") is None or pytest.skip("this machine has nvidia-smi")
    job = Job(pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~1")
    result = job.run({**readme_inputs(), "backend": "vllm"})
    assert result.failed
    gpu = result.step("Check the GPU")
    assert gpu.outcome == "failure" and "nvidia-smi is not on PATH" in gpu.stdout
    ran = [s.name for s in result.steps if s.outcome != "skipped"]
    assert ran == [
        "Set up Python",
        "Check the GPU",
    ]  # no install, no stack to stop, nothing to upload
    assert job.ours() == [] and job.uploads == []


def test_verify_input_checks_the_servers_counts_and_a_mismatch_fails_the_job(
    pr_repo, gh, tmp_path_factory
) -> None:
    """`verify: true` runs `costguard verify` against the tiers' endpoints before projecting.
    The vLLM double counts with its own tokenizer, not the project's MiniLM one: the counts
    differ, the job fails at that step, and the verify result is still uploaded."""
    from tests.doubles.fake_vllm import FakeVLLM

    small = FakeVLLM("test/small-8b").start_in_thread()
    large = FakeVLLM("test/large-70b").start_in_thread()
    try:
        config = pr_repo / readme_inputs().get("config", "costguard.yaml")
        text = config.read_text()
        text = text.replace(
            "    pricing: {input_per_mtok: 0.10",
            f'    endpoint: {{base_url: "{small.base_url}"}}\n    pricing: {{input_per_mtok: 0.10',
            1,
        ).replace(
            "    serve: {tensor_parallel_size: 4}",
            f'    serve: {{tensor_parallel_size: 4}}\n    endpoint: {{base_url: "{large.base_url}/v1"}}',
        )
        config.write_text(text)
        git(pr_repo, "commit", "-qam", "endpoints")
        job = Job(pr_repo, gh, tmp_path_factory.mktemp("runner"), base="HEAD~1")
        result = job.run({**readme_inputs(), "verify": "true"})
        assert result.failed
        step = result.step("verify")
        assert step.outcome == "failure"
        assert "Worst offenders on small:" in step.stdout and "counts differ" in step.stdout
        assert result.step("ci").outcome == "skipped" and not job.ours()
        [upload] = job.uploads
        assert upload["files"] == ["costguard-verify.json"]
        assert small.server.requests == [] and large.server.requests == []  # /tokenize only
    finally:
        small.stop()
        large.stop()
