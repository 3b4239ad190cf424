"""`costguard frontier`: stack variants on cost, quality and p95 latency, from recorded responses.

Gathers the inputs, calls the facade (`Costguard.frontier`), renders. Exit code 0; 1 when a policy
was given and no variant meets it; 2 on bad input.
"""

from __future__ import annotations

import sys

import click

from costguard.cli.options import config_option, fixtures_option, format_option, policy_option


@click.command("frontier")
@config_option
@fixtures_option
@policy_option(
    "Policy whose floors a variant must meet to be recommended (the cheapest that does)."
)
@click.option(
    "--variant",
    "-v",
    "only",
    multiple=True,
    help="Evaluate only these variants, by name (repeatable; `current` is always included).",
)
@click.option(
    "--no-auto",
    is_flag=True,
    help="Leave out the standard variants (tiers alone, caches, thresholds).",
)
@click.option(
    "--list", "list_only", is_flag=True, help="List the variants and their overrides; run nothing."
)
@format_option
def frontier_command(
    config: str,
    fixtures: tuple[str, ...],
    policy: str | None,
    only: tuple[str, ...],
    no_auto: bool,
    list_only: bool,
    fmt: str,
) -> None:
    """Compare stack variants (routing, tiers on/off, precision, caches) on the same recorded responses.

    Prints every variant's projected spend, quality and p95 latency, the non-dominated set and,
    with --policy, the cheapest variant that meets the policy. Variants come from `frontier:` in
    the config (overrides and sweeps) plus the standard ones.
    """
    import json

    from costguard.api import Costguard

    cg = Costguard(config, fixtures or None)
    variants = cg.variants(only=only, auto=False if no_auto else None)
    if list_only:
        for v in variants:
            click.echo(f"{v.name}: {v.description}")
        return
    result = cg.frontier(variants, policy=policy)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from costguard.render.terminal import print_frontier

        print_frontier(result)
    sys.exit(result.exit_code)


def register_commands(cli: click.Group) -> None:
    cli.add_command(frontier_command)
