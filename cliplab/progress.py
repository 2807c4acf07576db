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
import functools
import os
import sys
import warnings
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress as _RichProgress, ProgressColumn, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from cliplab.params import Spelling, render
from cliplab.threads import catch_warnings

# People-facing output goes to stderr so stdout stays clean for tables and machine output.
console = Console(stderr=True, soft_wrap=True)  # notes and warnings stay one line each (grep-able)


class Bar:
    """A bar that counts nothing (the base of every bar)."""

    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass


class Progress:
    """Where long work reports. The base class reports nothing (see :class:`Silent`). ``spell``: how parameters
    written ``{p:name}`` in notes and warnings are spelled (a door's :class:`~cliplab.params.Spelling`)."""

    spell: Callable[[str], str] = Spelling((), "api")

    @contextlib.contextmanager
    def bar(self, total: int, description: str, unit: str = "img") -> Iterator[Bar]:
        yield Bar()

    def note(self, message: str) -> None:
        pass

    def note_once(self, message: str) -> None:
        """A note about a measurement taken now (not a fact of the model or the data): said by this run only, never
        replayed by a later run that reuses what this one found (:mod:`cliplab.models.memo`)."""
        self.note(message)

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


class _Rate(ProgressColumn):
    """Items a second (rich's estimate over the last seconds), blank until there is one: ``41.3 img/s``."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("")
        return Text(f"{speed:,.1f} {self.unit}/s" if speed < 100 else f"{speed:,.0f} {self.unit}/s")


class ConsoleProgress(Progress):
    """rich bars, ``note:`` and ``warning:`` lines on stderr (the CLI's default); ``quiet``: warnings only."""

    def __init__(self, out: Console = console, quiet: bool = False, spell: Callable[[str], str] | None = None):
        self.out, self.quiet = out, quiet
        self.spell = spell or Spelling((), "cli")

    @contextlib.contextmanager
    def bar(self, total: int, description: str, unit: str = "img") -> Iterator[Bar]:
        if self.quiet:
            yield Bar()
            return
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   _Rate(unit), TimeElapsedColumn(), TimeRemainingColumn())
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


BAR_MIN_WORK = 2e7  # a step doing less (e.g. query x item scores) ends well within a second: no bar for it


def bar_total(total: int, work: float) -> int:
    """``total`` when a step of ``work`` units (scores, pairs, flops / 100, ...) may take a second or more, else 0:
    the total to give :func:`progress_bar` (which shows nothing for 0)."""
    return total if work >= BAR_MIN_WORK else 0


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "img") -> Iterator[Bar]:
    """A bar on the current progress (nothing when there is nothing to count)."""
    if total <= 0:
        yield Bar()
        return
    with current().bar(total, description, unit) as bar:
        yield bar


def note(message: str, *, once: bool = False) -> None:
    """Something a person should know about the run (the current progress may leave it out: quiet); parameters
    written ``{p:name}`` are spelled as the caller's door spells them. ``once``: about a measurement this run took
    (:meth:`Progress.note_once`), not to be said again by the runs that reuse it."""
    progress = current()
    (progress.note_once if once else progress.note)(render(message, progress.spell))


def warn(message: str) -> None:
    """Something that may change what the numbers mean (never silenced); ``{p:name}`` as in :func:`note`."""
    progress = current()
    progress.warn(render(message, progress.spell))


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def interactive() -> bool:
    """Whether a person watches the bars as they move: a Jupyter kernel running cells for a person (nbclient,
    ``jupyter nbconvert --execute`` and papermill run them without stdin, and keep every redraw of a bar as text), or
    a terminal."""
    kernel = _kernel()
    if kernel is not None:
        return bool(getattr(kernel, "_allow_stdin", True))
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _kernel():
    """The running IPython kernel, if this process is one."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return None
    shell = sys.modules["IPython"].get_ipython()
    return getattr(shell, "kernel", None)


def quiet_tqdm_import() -> None:
    """Import ``tqdm.auto`` once without its "IProgress not found" warning (a kernel without ipywidgets; libraries
    under open_clip import it, and cliplab's bars do not need widgets)."""
    if "tqdm.autonotebook" in sys.modules:
        return
    with catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import tqdm.auto  # noqa: F401 - the import is the point: later imports of it are silent


def _tqdm_class():
    """Widgets in a kernel that has ipywidgets, else text."""
    if _kernel() is not None and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


_PLUMBING = (contextlib.__file__, functools.__file__)  # frames between cliplab's own: a with-block's exit, a partial


def _user_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the first frame outside cliplab (the caller's line); the
    standard library's ``contextlib`` / ``functools`` frames between cliplab's (a warning from a ``with`` block's
    exit) are passed over too, else the warning would name ``contextlib.py``."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or frame.f_code.co_filename in _PLUMBING):
        frame, level = frame.f_back, level + 1
    return level


class _TqdmBar(Bar):
    def __init__(self, bar):
        self.bar = bar

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()


class NotebookProgress(Progress):
    """The Python API's default: one ``tqdm`` bar per call (a widget in Jupyter with ipywidgets, else text) that each
    step of the call reuses and that is gone when the call returns; no bars where nobody watches them (an executed
    notebook, a script whose stderr is not a terminal: :func:`interactive`); notes on stderr; warnings through
    :mod:`warnings` (category :class:`CliplabWarning`, so they can be filtered or made errors), attributed to the
    caller's line. ``quiet=True`` (the API's ``quiet``): no bars and no notes, but still the warnings. Use it as a
    context manager (``with NotebookProgress() as p``) or :meth:`close` it, to remove the bar."""

    def __init__(self, quiet: bool = False, spell: Callable[[str], str] | None = None, bars: bool | None = None):
        self.quiet = quiet
        self.spell = spell or Spelling((), "api")
        self.bars = not quiet and (interactive() if bars is None else bars)
        self._tqdm = None  # the call's bar, made by its first step
        self._busy = False  # a step holds it (a step inside a step gets a bar of its own)
        quiet_tqdm_import()

    def __enter__(self) -> "NotebookProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the call's bar."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    @contextlib.contextmanager
    def bar(self, total: int, description: str, unit: str = "img") -> Iterator[Bar]:
        if not self.bars:
            yield Bar()
            return
        tqdm = _tqdm_class()
        if self._busy:
            with tqdm(total=total, desc=description, unit=f" {unit}", leave=False, file=sys.stderr) as inner:
                yield _TqdmBar(inner)
            return
        if self._tqdm is None:
            self._tqdm = tqdm(total=total, desc=description, unit=f" {unit}", leave=False, file=sys.stderr)
        else:
            self._tqdm.unit = f" {unit}"
            self._tqdm.set_description_str(description, refresh=False)
            self._tqdm.reset(total=total)
        self._busy = True
        try:
            yield _TqdmBar(self._tqdm)
        finally:
            self._busy = False

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"note: {message}", file=sys.stderr)

    def warn(self, message: str) -> None:
        warnings.warn(message, CliplabWarning, stacklevel=_user_stacklevel())


class CliplabWarning(UserWarning):
    """A warning from cliplab that may change what the numbers mean (e.g. a probe fit that did not converge)."""
