"""What every command shares: the one error handler that turns library errors into ``error:`` lines (parameters
spelled as flags), checks of output paths that run before any work, and Typer options made from the shared
parameter declarations (:mod:`cliplab.inputs`) for the commands that are not studies (models, train, report, demo)."""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.markup import escape

from cliplab.errors import CliplabError, ParameterError
from cliplab.params import Param, Spelling

FLAG_SPELLING = Spelling((), "cli")  # a library name as a flag: --name-with-dashes


@contextlib.contextmanager
def cli_errors(spell: Callable[[str], str] = FLAG_SPELLING) -> Iterator[None]:
    """User errors become one line on stderr and exit code 2, never a traceback; parameters are spelled by
    ``spell`` (the command's flags)."""
    try:
        yield
    except ParameterError as exc:
        typer.echo(f"error: {one_line(exc.render(spell))}", err=True)
        raise typer.Exit(2)
    except CliplabError as exc:
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        raise typer.Exit(2)
    except OSError as exc:  # a file we were asked to read or write (outputs are checked up front; this is the rest)
        if exc.filename is None:
            raise
        typer.echo(f"error: {exc.filename}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt as exc:
        raise typer.Exit(stopped(exc))


def stopped(exc: KeyboardInterrupt) -> int:
    """Say, on one line, that a signal stopped the run; the exit code a shell gives it (128 + the signal)."""
    import signal

    signum = getattr(exc, "signum", signal.SIGINT)
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    typer.echo(f"{what}; finished shards are cached and the next run resumes from them", err=True)
    return 128 + int(signum)


def one_line(message: str) -> str:
    """A message on one line (a parser's multi-line message quoted inside one of ours)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def handle_errors(fn):
    """A command whose user errors become one ``error:`` line (see :func:`cli_errors`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with cli_errors():
            return fn(*args, **kwargs)

    return wrapper


def stdout(quiet: bool):
    from cliplab.report.tables import stdout_console

    return stdout_console(quiet)


def option(p: Param):
    """A Typer ``Annotated`` option for a shared parameter (the commands that are not studies use these)."""
    from cliplab.cli.doors import option as make

    annotation, _ = make(p, FLAG_SPELLING)
    return annotation


def check_output(path: Optional[Path], flag: str, suffixes: tuple[str, ...] = (), folder: bool = False,
                 warn_existing: bool = True) -> None:
    """Fail before any work when an output cannot be written: a folder given for a file (or the reverse), a
    suffix the command cannot write, or a place that is not a writable folder."""
    if path is None:
        return
    path = Path(path).expanduser()
    if folder:
        if path.exists() and not path.is_dir():
            raise CliplabError(f"{flag} {path}: is a file; give a folder")
    else:
        if path.is_dir():
            raise CliplabError(f"{flag} {path}: is a folder; give a file name"
                               + (f" ending in {' or '.join(suffixes)}" if suffixes else ""))
        if suffixes and path.suffix.lower() not in suffixes:
            raise CliplabError(f"{flag} {path}: cannot write {path.suffix or 'a file without extension'}; "
                               f"use {' or '.join(suffixes)}")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CliplabError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliplabError(f"{flag} {path}: no permission to write in {existing}; choose another place")
    if warn_existing and not folder and path.is_file():
        from cliplab.progress import console

        console.print(f"[yellow]warning: {flag} {escape(str(path))} exists and will be replaced when this run "
                      "finishes (give another name to keep it)[/yellow]")


TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")


def check_results(results: Optional[Path], fmt: str) -> None:
    from cliplab.results.store import FORMATS

    if fmt not in FORMATS:
        raise CliplabError(f"--results-format {fmt!r}: choose {' or '.join(FORMATS)}")
    check_output(results, "--results", folder=True)


def check_device(device: Optional[str], precision: Optional[str], backend: Optional[str] = "auto") -> None:
    """Device, backend and precision are checked before any data is loaded or model trained."""
    from cliplab.models import check_options  # heavy (torch): only when a command runs

    check_options(device, precision, backend)
