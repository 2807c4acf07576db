"""Tables for people: a study's :class:`cliplab.results.result.Table` rendered with rich, and the stdout console."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from cliplab.files import printable


def stdout_console(quiet: bool = False) -> Console:
    """Console for tables on stdout; wide enough for the tables when stdout is a file or pipe."""
    return Console(quiet=quiet, width=None if sys.stdout.isatty() else 160, markup=False)  # names and paths as written


def render(table) -> Table:
    """A study's :class:`cliplab.results.result.Table` as a rich table (file names that are not UTF-8 spelled
    ``\\xNN``, :func:`~cliplab.files.printable`, so any terminal or file can take them)."""
    out = Table(title=printable(table.title))
    for col in table.columns:
        width = table.wrap.get(col)
        out.add_column(col, justify="right" if col in table.right else "left", no_wrap=width is None,
                       max_width=width)
    for row in table.rows:
        out.add_row(*(printable(c) for c in row))
    if table.caption:
        out.caption = printable(table.caption)
    return out
