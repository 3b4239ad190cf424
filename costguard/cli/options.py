"""Click options shared by several commands (the same flag means the same thing everywhere)."""

from __future__ import annotations

from typing import Any

import click

COMMENT_MODES = ("update", "new", "hide-and-new", "delete-and-new")
"""`costguard.integrations.github.MODES`, spelled out so that building the CLI does not import the client."""


def file_option(*decls: str, **attrs: Any) -> Any:
    """An option naming a file (not a directory); a default it has is shown in --help."""
    attrs.setdefault("type", click.Path(dir_okay=False))
    if "default" in attrs:
        attrs.setdefault("show_default", True)
    return click.option(*decls, **attrs)


def policy_option(help: str, **attrs: Any) -> Any:
    """`--policy/-p FILE`; `help` says what the command does with the policy."""
    return file_option("--policy", "-p", "policy", help=help, **attrs)


def baseline_spec(baseline: str | None, base_ref: str | None) -> Any:
    """The baseline that `--baseline` / `--base-ref` ask for, or None when neither was given
    (the facade then finds one itself, e.g. the pull request's base)."""
    if baseline is None and base_ref is None:
        return None
    from costguard.api import baseline_from_options

    return baseline_from_options(baseline, base_ref)


def config_option(f: Any) -> Any:
    return click.option(
        "--config",
        "-c",
        "config",
        default="costguard.yaml",
        show_default=True,
        type=click.Path(dir_okay=False),
        help="Stack config (tiers, router, caches, traffic).",
    )(f)


def fixtures_option(f: Any) -> Any:
    return click.option(
        "--fixtures",
        "-f",
        "fixtures",
        multiple=True,
        type=click.Path(),
        help="Fixture files or directories (repeatable). Default: `fixtures:` in the config.",
    )(f)


def baseline_options(f: Any) -> Any:
    """--baseline PATH | --base-ref REF: where the run to compare with comes from."""
    f = click.option(
        "--base-ref",
        "base_ref",
        metavar="REF",
        help="Project this git commit/branch offline in a temporary worktree and compare with it "
        "(e.g. origin/main, HEAD~1).",
    )(f)
    return click.option(
        "--baseline",
        "baseline",
        metavar="PATH",
        type=click.Path(),
        help="Baseline RunReport file, or a directory holding one (a downloaded CI artifact). "
        "A path that does not exist means: no baseline yet.",
    )(f)


def comment_options(f: Any) -> Any:
    """How the PR comment is found and refreshed."""
    for decorator in reversed(
        (
            click.option(
                "--tag",
                default="default",
                show_default=True,
                help="Comment tag: one comment per PR and tag (e.g. per matrix job).",
            ),
            click.option(
                "--mode",
                type=click.Choice(COMMENT_MODES),
                default="update",
                show_default=True,
                help="update: edit in place; new: always post; hide-and-new / delete-and-new: "
                "post, then hide/delete the previous ones.",
            ),
            click.option(
                "--skip-no-diff",
                is_flag=True,
                help="Post nothing new when nothing changed and the policy passed "
                "(an existing comment is still refreshed if it is out of date).",
            ),
            click.option(
                "--acknowledge-label",
                metavar="LABEL",
                help="When the PR carries this label, regression rules warn instead of failing.",
            ),
        )
    ):
        f = decorator(f)
    return f


def fail_on_option(f: Any) -> Any:
    return click.option(
        "--fail-on",
        type=click.Choice(["fail", "warn", "never"]),
        default="fail",
        show_default=True,
        help="Which policy verdict makes the exit code 1.",
    )(f)


def format_option(f: Any) -> Any:
    """`--format terminal|json`: the same choice on every command that prints a result."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["terminal", "json"]),
        default="terminal",
        show_default=True,
    )(f)
