"""The `costguard` command line: parses arguments, calls `costguard.api`, renders, sets the exit code.

Exit codes: 0 pass, 1 policy violation, 2 usage or input error (one line, no traceback).
Heavy modules are imported inside commands so `costguard --help` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from costguard import STARTED, __version__
from costguard.cli import compare as _compare
from costguard.cli import frontier as _frontier
from costguard.cli import recordings as _recordings
from costguard.cli import report as _report
from costguard.cli import stack as _stack
from costguard.cli import verify as _verify
from costguard.cli.compare import DEFAULT_REPORT
from costguard.cli.options import baseline_options, file_option, format_option, policy_option
from costguard.cli.options import config_option as _config_option
from costguard.cli.options import fixtures_option as _fixtures_option
from costguard.cli.report import html_option
from costguard.cli.running import run_projection
from costguard.errors import EXIT_USAGE, CostguardError


def render_profile(stages: dict[str, float], wall: float) -> str:
    """`--profile`: seconds and share of the wall time per stage, slowest first."""
    covered = sum(stages.values())
    lines = [f"costguard: profile ({wall:.2f} s wall since costguard was imported)"]
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {stage:<16} {seconds:9.3f} s {seconds / wall:6.1%}")
    lines.append(f"  {'stages cover':<16} {covered:9.3f} s {covered / wall:6.1%} of the wall time")
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="costguard")
def cli() -> None:
    """Project and gate the token use, spend and quality of a routed LLM stack."""


@cli.command()
@_config_option
@_fixtures_option
@file_option("--out", "-o", default=DEFAULT_REPORT, help="Where to write the RunReport JSON.")
@click.option(
    "--backend",
    type=click.Choice(["offline", "endpoint", "vllm"]),
    default="offline",
    show_default=True,
    help="offline: projection (recorded responses make outputs measured); endpoint: each tier's "
    "endpoint.base_url (or the external router); vllm: the launched stack (started for the run "
    "unless `costguard stack up` runs).",
)
@click.option(
    "--shard",
    metavar="I/N",
    help="Serve only shard I of N (a contiguous block of the arrival order); "
    "`costguard merge` joins the shard reports.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Live: requests in flight (default: replay.concurrency).",
)
@click.option(
    "--request-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Live: Poisson arrivals per second (default: replay.request_rate_per_s, else as fast as allowed).",
)
@click.option(
    "--no-record", is_flag=True, help="Live: do not store the replies as recorded responses."
)
@click.option(
    "--variant",
    metavar="NAME",
    help="Run a stack variant instead (`costguard frontier --list`), e.g. "
    "'only large' to record every fixture on the large tier.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "json"]),
    default="terminal",
    show_default=True,
    help="What to print on stdout.",
)
@click.option(
    "--summary/--details",
    default=False,
    help="--summary: print only the answer (spend, saving, what is estimated, warnings); "
    "--details (default): the tables and the routing section too.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; just write the report.")
@click.option(
    "--profile",
    is_flag=True,
    help="Print on stderr where the time went: seconds per stage (start-up, loading, tokens, "
    "each pipeline stage, the report, writing it) and how much of the wall time they cover.",
)
@html_option
def run(
    config: str,
    fixtures: tuple[str, ...],
    out: str,
    backend: str,
    shard: str | None,
    concurrency: int | None,
    request_rate: float | None,
    no_record: bool,
    variant: str | None,
    fmt: str,
    summary: bool,
    quiet: bool,
    profile: bool,
    html_out: str | None,
) -> None:
    """Replay the fixtures through the stack and write the RunReport.

    A live run that stops early (Ctrl-C, a request failing after its retries) still writes its
    report, marked incomplete (it fails every policy), and exits 2 (130 on Ctrl-C).
    """
    from costguard.api import parse_shard

    replay: dict[str, Any] = {}
    if concurrency is not None:
        replay["concurrency"] = concurrency
    if request_rate is not None:
        replay["request_rate_per_s"] = request_rate
    if no_record:
        replay["record"] = False
    from costguard.api import Costguard  # noqa: F401 (importing the engine is start-up too)

    startup = time.perf_counter() - STARTED
    report = run_projection(
        config,
        fixtures,
        backend,
        variant=variant,
        shard=parse_shard(shard) if shard else None,
        replay_settings=replay,
    )
    clock = time.perf_counter()
    report.write(out)
    if profile:
        stages = dict(report.get("timing", {}).get("stages") or {})
        stages = {"startup": startup, **stages, "write": time.perf_counter() - clock}
        click.echo(render_profile(stages, time.perf_counter() - STARTED), err=True)
    if html_out:
        from costguard.cli.report import write_html_report

        write_html_report(html_out, report, config=config, quiet=quiet)
    if not quiet:
        if fmt == "json":
            click.echo(report.to_json(), nl=False)
        else:
            from costguard.render.terminal import print_run

            print_run(report, details=not summary)
            click.echo(f"Report written to {out}")
    if not report.complete:
        reason = report.get("incomplete_reason") or "stopped early"
        click.echo(
            f"costguard: error: run incomplete: {reason}; partial report written to {out} "
            "(it fails every policy)",
            err=True,
        )
        sys.exit(130 if reason.startswith("interrupted") else EXIT_USAGE)


@cli.command()
@policy_option("Policy YAML file.", required=True)
@click.argument("report", required=False, type=click.Path(dir_okay=False))
@baseline_options
@_config_option
@_fixtures_option
@format_option
def check(
    policy: str,
    report: str | None,
    baseline: str | None,
    base_ref: str | None,
    config: str,
    fixtures: tuple[str, ...],
    fmt: str,
) -> None:
    """Check a RunReport against a policy (runs the offline projection when no REPORT is given).

    Regression rules compare with --baseline (a RunReport file or artifact directory) or
    --base-ref (a git ref projected offline); without one they are skipped ("no baseline yet").
    Exit code 0: every rule passed (warnings allowed); 1: a `fail` rule was broken; 2: bad input.
    """
    from costguard import api
    from costguard.cli.compare import (
        emit_annotations,
        head_report,
        load_baseline,
        say_no_baseline,
    )

    run_report, head_source = head_report(report, config, fixtures)
    base = load_baseline(baseline, base_ref, config, fixtures)
    if baseline is not None or base_ref is not None:
        say_no_baseline(base)
    diff, result = api.compare(run_report, base, policy=policy, head_source=head_source)
    assert result is not None
    if fmt == "json":
        import json

        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from costguard.render.terminal import diff_headline, print_check

        click.echo(diff_headline(diff))  # the spend (and its change) first, then the verdict
        print_check(result)
    emit_annotations(diff)
    sys.exit(result.exit_code)


@cli.command()
@click.option(
    "--out-dir",
    "-o",
    default="schemas",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for the JSON Schema files.",
)
def schema(out_dir: str) -> None:
    """Write JSON Schemas for costguard.yaml, policy and fixture files (for editor validation) and
    for the RunReport and DiffReport JSON."""
    from costguard.api import Costguard

    for path in Costguard.write_schemas(Path(out_dir)):
        click.echo(f"wrote {path}")


@cli.command()
@_config_option
@_fixtures_option
@click.option(
    "--target-strong-share",
    type=click.FloatRange(0, 1),
    metavar="SHARE",
    help="Share of requests (0-1) the strongest tier should get, e.g. 0.15.",
)
@click.option(
    "--target-share",
    "target_shares",
    multiple=True,
    metavar="TIER=SHARE",
    help="Target share for one tier (repeatable); tiers without a target keep their current proportions.",
)
@click.option(
    "--holdout",
    multiple=True,
    type=click.Path(exists=True),
    metavar="PATH",
    help="Fixture files or directories NOT used to calibrate: reports how far the shares drift on them.",
)
@click.option(
    "--write",
    is_flag=True,
    help="Write the new thresholds into the config file (only the numbers change).",
)
@format_option
def calibrate(
    config: str,
    fixtures: tuple[str, ...],
    target_strong_share: float | None,
    target_shares: tuple[str, ...],
    holdout: tuple[str, ...],
    write: bool,
    fmt: str,
) -> None:
    """Pick router thresholds from the fixtures' score quantiles so each tier gets a target share."""
    from costguard.api import Costguard
    from costguard.errors import UsageError

    targets: dict[str, float] = {}
    for item in target_shares:
        tier, sep, value = item.partition("=")
        try:
            targets[tier.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not tier.strip():
            raise UsageError(f"--target-share takes TIER=SHARE, e.g. large=0.15 (got {item!r})")
    result = Costguard(config, fixtures or None).calibrate(
        target_strong_share=target_strong_share,
        target_shares=targets,
        holdout=list(holdout),
        write=write,
    )
    written = write and result.changed  # nothing to write when the config already holds them
    if fmt == "json":
        import json

        click.echo(json.dumps({**result.to_dict(), "written": written, "config": config}, indent=2))
        return
    from costguard.render.terminal import print_calibration

    print_calibration(result, config=config, written=written, asked=write)


@cli.command("import-logs")
@click.argument("log", type=click.Path(dir_okay=False))
@click.option("--suite", required=True, help="Suite name for the imported fixtures.")
@file_option("--out", "-o", required=True, help="Fixture file to write (.yaml or .jsonl).")
@click.option("--id-prefix", default="log", show_default=True)
@click.option(
    "--dedupe", is_flag=True, help="Merge identical requests into one fixture with a higher weight."
)
def import_logs(log: str, suite: str, out: str, id_prefix: str, dedupe: bool) -> None:
    """Turn OpenAI-format request logs (JSONL of chat-completion bodies) into fixtures."""
    import json

    import yaml

    from costguard.api import Costguard

    fixtures = Costguard.import_logs(log, suite=suite, id_prefix=id_prefix, dedupe=dedupe)
    out_path = Path(out)
    if out_path.suffix == ".jsonl":
        text = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in fixtures)
    else:
        text = yaml.safe_dump(
            {"suite": suite, "fixtures": fixtures}, sort_keys=False, allow_unicode=True, width=100
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {len(fixtures)} fixtures to {out_path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: every CostguardError becomes one line on stderr and exit code 2.

    SIGTERM and SIGHUP are handled like SIGINT (costguard.serving.interrupts)."""
    from costguard.api import interrupts

    try:
        with interrupts.installed():
            cli.main(args=argv, prog_name="costguard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("costguard: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CostguardError as exc:
        click.echo(f"costguard: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("costguard: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        if exc.filename is None:
            raise
        # a path the input names that the system refuses (too long, a loop, no permission...)
        name = str(exc.filename)
        shown = name if len(name) <= 120 else name[:80] + "…" + name[-30:]
        click.echo(f"costguard: error: {shown}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(0)


for _module in (_compare, _stack, _recordings, _frontier, _verify, _report):
    _module.register_commands(cli)

if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["cli", "main", "EXIT_USAGE"]
