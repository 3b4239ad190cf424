"""`costguard verify` in the terminal: per tier the exact-match rate and the worst offenders."""

from __future__ import annotations

from typing import Any

from costguard.render.terminal import make_console


def print_verify(data: dict[str, Any], console: Any | None = None) -> None:
    """The verify result (a VerifyReport's dict form)."""
    from rich.table import Table

    console = console or make_console()
    console.print(
        f"costguard verify of stack {data['stack']}: {data['fixtures']} fixtures, "
        f"{data['checks']} checks",
        highlight=False,
        markup=False,
    )
    table = Table(
        title="Offline vs server prompt tokens", title_justify="left", header_style="bold"
    )
    for col in ("tier", "server", "via", "offline counts", "matched", "exact-match rate", "errors"):
        table.add_column(col)
    for name, tier in data["tiers"].items():
        rate = tier["exact_match_rate"]
        style = "green" if tier["matched"] == tier["fixtures"] else "red"
        table.add_row(
            name,
            tier["server"] or "",
            ", ".join(tier["via"]),
            tier["offline_source"] or "",
            f"{tier['matched']}/{tier['fixtures']}",
            f"[{style}]{100 * rate:.1f}%[/]" if rate is not None else "n/a",
            str(tier["errors"]),
        )
    console.print(table)
    for name, tier in data["tiers"].items():
        if not tier["worst"]:
            continue
        console.print(f"Worst offenders on {name}:", highlight=False, markup=False)
        for row in tier["worst"]:
            if row["server"] is None:
                what = f"no count: {row.get('error', 'no reply')}"
            else:
                pct = f" ({row['delta_pct']:+.1f}%)" if row["delta_pct"] is not None else ""
                what = f"offline {row['offline']} vs server {row['server']}: {row['delta']:+d}{pct}"
            console.print(
                f"  {row['fixture']} ({row['location']}, via {row['via']}): {what}",
                highlight=False,
                markup=False,
            )
    for warning in data["warnings"]:
        console.print(f"warning: {warning}", highlight=False, markup=False)
    if data["passed"]:
        console.print(f"[green]all {data['checks']} prompt token counts equal the server's[/]")
    else:
        mismatched = data["checks"] - data["matched"]
        console.print(
            f"[bold red]{mismatched} of {data['checks']} counts differ from the server's[/]"
        )
