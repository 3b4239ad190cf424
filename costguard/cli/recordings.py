"""`costguard recordings stats|prune` and `costguard merge`: the measured data live runs leave behind.

Thin over the facade (`costguard.api.Costguard`: recordings, merge).
"""

from __future__ import annotations

import json

import click

from costguard.cli.compare import DEFAULT_REPORT, session
from costguard.cli.options import config_option, file_option, fixtures_option, format_option


@click.group("recordings")
def recordings_group() -> None:
    """Recorded responses (what live runs measured; offline runs reuse them)."""


@recordings_group.command("stats")
@config_option
@fixtures_option
@format_option
def stats(config: str, fixtures: tuple[str, ...], fmt: str) -> None:
    """How many recordings match the current fixtures and tiers, and which are stale."""
    cg = session(config, fixtures)
    project = cg.project
    store = cg.recordings()
    audit = cg.audit_recordings()
    covered = {
        fx.id for fx in project.fixtures if any(store.get(fx, t) for t in project.config.tiers)
    }
    data = {
        "path": str(store.path),
        **audit.to_dict(),
        "fixtures": len(project.fixtures),
        "fixtures_recorded": len(covered),
        "stale_detail": [{"fixture": f, "tier": t, "why": why} for f, t, why in audit.stale],
        "orphaned_detail": [{"fixture": f, "tier": t} for f, t in audit.orphaned],
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['path']}: {audit.entries} recorded response(s)")
    click.echo(
        f"  current:  {audit.current}  ({', '.join(f'{t}: {n}' for t, n in sorted(audit.per_tier.items())) or 'none'})"
    )
    click.echo(f"  fixtures with a recording: {len(covered)} of {len(project.fixtures)}")
    click.echo(
        f"  stale:    {len(audit.stale)}  (the fixture, its template or the tier's model changed)"
    )
    for fixture, tier, why in audit.stale[:20]:
        click.echo(f"    {fixture} on {tier}: {why}")
    if len(audit.stale) > 20:
        click.echo(f"    ... and {len(audit.stale) - 20} more")
    click.echo(f"  orphaned: {len(audit.orphaned)}  (the fixture no longer exists)")


@recordings_group.command("prune")
@config_option
@fixtures_option
@click.option(
    "--keep-orphaned", is_flag=True, help="Keep recordings of fixtures that no longer exist."
)
def prune(config: str, fixtures: tuple[str, ...], keep_orphaned: bool) -> None:
    """Drop recordings that no current fixture x tier uses (stale and orphaned)."""
    cg = session(config, fixtures)
    store = cg.recordings()
    before = len(store)
    dropped = cg.prune_recordings(keep_orphaned=keep_orphaned)
    click.echo(
        f"dropped {dropped} of {before} recorded response(s); {len(store)} left in {store.path}"
    )


@recordings_group.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@config_option
def merge_recordings(sources: tuple[str, ...], config: str) -> None:
    """Fold other recordings directories (e.g. from sharded CI jobs) into this project's."""
    taken, tiers, store = session(config, ()).merge_recordings(sources)
    click.echo(
        f"took {taken} recorded response(s) and {tiers} throughput profile(s); {len(store)} in {store.path}"
    )


@click.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
@config_option
@fixtures_option
@file_option("--out", "-o", default=DEFAULT_REPORT)
@click.option("--quiet", "-q", is_flag=True)
def merge(
    reports: tuple[str, ...], config: str, fixtures: tuple[str, ...], out: str, quiet: bool
) -> None:
    """Join the reports of `costguard run --shard i/n` into one RunReport."""
    merged = session(config, fixtures).merge(reports)
    merged.write(out)
    if not quiet:
        from costguard.render.terminal import print_run

        print_run(merged)
        click.echo(f"Report written to {out}")
    if not merged.complete:
        click.echo(
            f"costguard: error: merged run incomplete: {merged.get('incomplete_reason')}", err=True
        )
        raise SystemExit(2)


def register_commands(cli: click.Group) -> None:
    cli.add_command(recordings_group)
    cli.add_command(merge)
