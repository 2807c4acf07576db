"""The one progress interface: long steps report bars, notes and warnings to the current :class:`Progress`.

Library code never prints. It calls :func:`progress_bar`, :func:`note` and :func:`warn`; where they go is chosen
by the caller, and only the caller decides what is printed: the CLI uses :class:`ConsoleProgress` (rich bars and
notes on stderr, so stdout stays clean for tables and machine output; ``quiet=True`` drops bars and notes), the
Python API :class:`NotebookProgress`, tests can run under ``use(Silent())``, and a web app can install its own
:class:`Progress` that turns the same calls into events. Warnings are never silenced.
"""
from __future__ import annotations

import contextlib
import importlib.util
import contextvars
import sys
import warnings
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress as _RichProgress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

# People-facing output goes to stderr so stdout stays clean for tables and machine output.
console = Console(stderr=True, soft_wrap=True)  # notes and warnings stay one line each (grep-able)


class Bar:
    """A bar that counts nothing (the base of every bar)."""

    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass


class Progress:
    """Where long work reports. The base class reports nothing (see :class:`Silent`)."""

    @contextlib.contextmanager
    def bar(self, total: int, description: str, unit: str = "img") -> Iterator[Bar]:
        yield Bar()

    def note(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class Silent(Progress):
    """No bars, notes or warnings."""


class _RichBar(Bar):
    def __init__(self, progress: _RichProgress, task):
        self.progress, self.task = progress, task

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def set_total(self, total: int) -> None:
        self.progress.update(self.task, total=total)


class ConsoleProgress(Progress):
    """rich bars, ``note:`` and ``warning:`` lines on stderr (the CLI's default); ``quiet``: warnings only."""

    def __init__(self, out: Console = console, quiet: bool = False):
        self.out, self.quiet = out, quiet

    @contextlib.contextmanager
    def bar(self, total: int, description: str, unit: str = "img") -> Iterator[Bar]:
        if self.quiet:
            yield Bar()
            return
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with _RichProgress(*columns, console=self.out) as progress:
            yield _RichBar(progress, progress.add_task(description, total=total))

    def note(self, message: str) -> None:
        if not self.quiet:
            self.out.print(f"note: {escape(message)}", highlight=False)

    def warn(self, message: str) -> None:
        self.out.print(f"[yellow]warning: {escape(message)}[/yellow]", highlight=False)


_DEFAULT = ConsoleProgress()
_current: contextvars.ContextVar[Progress] = contextvars.ContextVar("cliplab_progress", default=_DEFAULT)


def current() -> Progress:
    return _current.get()


def installed() -> bool:
    """Whether a caller chose where progress goes (``with use(...)``), rather than the default."""
    return _current.get() is not _DEFAULT


@contextlib.contextmanager
def use(progress: Progress) -> Iterator[Progress]:
    """Report to ``progress`` inside the ``with`` block."""
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "img") -> Iterator[Bar]:
    """A bar on the current progress (nothing when there is nothing to count)."""
    if total <= 0:
        yield Bar()
        return
    with current().bar(total, description, unit) as bar:
        yield bar


def note(message: str) -> None:
    """Something a person should know about the run (the current progress may leave it out: quiet)."""
    current().note(message)


def warn(message: str) -> None:
    """Something that may change what the numbers mean (never silenced)."""
    current().warn(message)


class _TqdmBar(Bar):
    def __init__(self, bar):
        self.bar = bar

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()


class NotebookProgress(Progress):
    """The Python API's default: ``tqdm.auto`` bars (widgets in Jupyter, text in a terminal), notes on stderr,
    warnings through :mod:`warnings` (category :class:`CliplabWarning`, so they can be filtered or made errors).
    ``quiet=True`` (the API's ``quiet``): no bars and no notes, but still the warnings."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    @contextlib.contextmanager
    def bar(self, total: int, description: str, unit: str = "img") -> Iterator[Bar]:
        if self.quiet:
            yield Bar()
            return
        if importlib.util.find_spec("ipywidgets") is not None:  # widgets in Jupyter; else tqdm.auto would warn
            from tqdm.auto import tqdm  # only here: the CLI and `import cliplab` never need it
        else:
            from tqdm import tqdm

        with tqdm(total=total, desc=description, unit=f" {unit}", leave=False, file=sys.stderr) as bar:
            yield _TqdmBar(bar)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"note: {message}", file=sys.stderr)

    def warn(self, message: str) -> None:
        warnings.warn(message, CliplabWarning, stacklevel=3)


class CliplabWarning(UserWarning):
    """A warning from cliplab that may change what the numbers mean (e.g. a probe fit that did not converge)."""
