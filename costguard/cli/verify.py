"""`costguard verify`: offline prompt token counts against a running server's.

Thin over `costguard.api.verify`; exit codes: 0 every count matches, 1 any mismatch (or a
request the server refused), 2 bad input or a server that cannot be reached.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from costguard.cli.options import config_option, file_option, fixtures_option


def _parse_urls(values: tuple[str, ...]) -> dict[str, str]:
    from costguard.errors import UsageError

    urls: dict[str, str] = {}
    for value in values:
        tier, sep, url = value.partition("=")
        if sep and not tier.startswith(("http://", "https://")):
            key, target = tier.strip(), url.strip()
        else:
            key, target = "*", value.strip()
        if not target.startswith(("http://", "https://")):
            raise UsageError(f"--url {value!r}: expected URL or TIER=URL with an http(s) URL")
        if key in urls:
            raise UsageError(f"--url given twice for {'every tier' if key == '*' else key}")
        urls[key] = target
    return urls


@click.command("verify")
@config_option
@fixtures_option
@click.option(
    "--url",
    "urls",
    multiple=True,
    help="Server to check: URL (every tier) or TIER=URL (repeatable). "
    "Default: each tier's endpoint.base_url.",
)
@click.option("--tier", "tiers", multiple=True, help="Check only these tiers (repeatable).")
@click.option(
    "--via",
    type=click.Choice(["auto", "tokenize", "completion", "both"]),
    default="auto",
    show_default=True,
    help="vLLM's /tokenize route, a one-token chat completion (usage.prompt_tokens), or both; "
    "auto falls back to completions where /tokenize is missing.",
)
@click.option("--concurrency", default=4, show_default=True, type=int)
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, type=float)
@file_option("--out", help="Write the result as JSON here.")
def verify(
    config: str,
    fixtures: tuple[str, ...],
    urls: tuple[str, ...],
    tiers: tuple[str, ...],
    via: str,
    concurrency: int,
    timeout_s: float,
    out: str | None,
) -> None:
    """Check that offline prompt token counts equal a running server's, fixture by fixture.

    Run it on the GPU runner when adopting costguard or changing a model, tokenizer or chat
    template: every fixture (with its tools) goes to the server's tokenizer, and any difference
    fails (exit 1).
    """
    import sys

    from costguard import api
    from costguard.render.verification import print_verify

    parsed = _parse_urls(urls)
    project = api.load_project(config, fixtures or None)
    report = api.verify(
        project,
        via=via,
        tiers=tiers or None,
        urls=parsed,
        concurrency=concurrency,
        timeout_s=timeout_s,
    )
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    print_verify(report.to_dict())
    sys.exit(report.exit_code)


def register_commands(cli: click.Group) -> None:
    cli.add_command(verify)
