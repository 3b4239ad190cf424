"""What every terminal table and line shares: the console, the house table, fitting it to the
width, and user text shown literally."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any


def make_console(**kwargs: Any) -> Any:
    """A console that is wide enough for the tables in CI logs (not a terminal: 120 columns,
    unless COLUMNS says otherwise)."""
    import os
    import sys

    from rich.console import Console

    if "width" not in kwargs and not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        kwargs["width"] = 120
    return Console(**kwargs)


def table(title: str | None, columns: Iterable[str], left: Collection[str] = ()) -> Any:
    """A rich Table in the house style (title on the left, bold headers) with `columns`: those
    named in `left` justified left, the others (figures) right."""
    from rich.table import Table

    out = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        out.add_column(col, justify="left" if col in left else "right")
    return out


def say(console: Any, text: str) -> None:
    """One plain line: no markup, no highlighting (text from the report stays as it is)."""
    console.print(text, highlight=False, markup=False)


def fit(table: Any, width: int | None = None) -> Any:
    """Give each column a width no narrower than its longest word (header or cell), shrinking the
    columns with the most room first, so a narrow terminal (e.g. 100 columns) wraps cells at
    spaces instead of cutting headers and names with "…". `width`: the console's width."""
    from rich.text import Text

    if width is None:
        width = make_console().width

    def lines(cell: Any) -> list[str]:
        if isinstance(cell, Text):
            return cell.plain.splitlines() or [""]
        if isinstance(cell, str):
            return _strip_markup(cell).splitlines() or [""]
        return []

    natural, least = [], []
    for column in table.columns:
        texts = [line for cell in [column.header, *column._cells] for line in lines(cell)]
        natural.append(max([len(t) for t in texts] or [1]))
        least.append(max([len(w) for t in texts for w in t.split()] or [1]))
    n = len(table.columns)
    available = width - (n + 1) - 2 * n  # borders and one space of padding either side
    widths = list(natural)
    excess = sum(widths) - available
    if excess <= 0:
        return table
    while excess > 0:
        k = max(range(n), key=lambda i: widths[i] - least[i])
        if widths[k] <= least[k]:
            break  # every column at its longest word: rich must cut; nothing better to do
        widths[k] -= 1
        excess -= 1
    for column, w in zip(table.columns, widths, strict=True):
        column.width = w
    return table


def _strip_markup(text: str) -> str:
    from rich.markup import render

    return render(text).plain


def plain(text: Any) -> Any:
    """User text shown literally (rich markup in a suite or rule name stays text)."""
    from rich.text import Text

    return Text(str(text))


def escape(text: Any) -> str:
    """User text inside a line that has markup of its own."""
    from rich.markup import escape

    return escape(str(text))
