"""One progress-bar helper (rich) for every long step; ``quiet`` silences it."""
from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# People-facing output goes to stderr so stdout stays clean for tables and machine output.
console = Console(stderr=True, soft_wrap=True)  # notes and warnings stay one line each (grep-able)


class _Null:
    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task):
        self.progress, self.task = progress, task

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def set_total(self, total: int) -> None:
        self.progress.update(self.task, total=total)


@contextlib.contextmanager
def progress_bar(total: int, description: str, quiet: bool = False, unit: str = "img") -> Iterator[_Bar | _Null]:
    if quiet or total <= 0:
        yield _Null()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    with progress:
        yield _Bar(progress, progress.add_task(description, total=total))
