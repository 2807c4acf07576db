"""The ``cliplab`` command line. Presentation only: flags in, one study call, output out. This module only wires
one command per declared study (:mod:`cliplab.cli.doors`) and the commands that manage models, reports and the demo
(:mod:`cliplab.cli.manage`) into one app."""
from __future__ import annotations

import inspect
import sys
import typing

import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer >= 0.22 ships its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors

from cliplab.cli import doors, manage
from cliplab.cli.options import stopped


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad value, missing argument) as one ``error:`` line and exit code 2, like
    every other bad input, instead of click's multi-line box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except click_errors.NoArgsIsHelpError as exc:  # `cliplab attack` alone: its help (rich has printed it)
            message = exc.format_message()
            if message:
                typer.echo(message)
            rv = exc.exit_code
        except click_errors.ClickException as exc:
            cmd = exc.ctx.command_path if getattr(exc, "ctx", None) else "cliplab"
            typer.echo(f"error: {exc.format_message()} (see `{cmd} --help`)", err=True)
            rv = exc.exit_code
        except typer.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # a signal outside a command's own handler
                rv = stopped(exc.__cause__)
            else:
                typer.echo("aborted", err=True)
                rv = 1
        except KeyboardInterrupt as exc:
            rv = stopped(exc)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _version(value: bool) -> None:
    if value:
        from cliplab.version import __version__

        typer.echo(f"cliplab {__version__}")
        raise typer.Exit()


HELP = ("Evaluate CLIP-style vision-language models: zero-shot, prompt studies, probes, retrieval, search, "
        "clustering, attacks and reports — cached and reproducible.")


def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit.")) -> None:
    """Evaluate CLIP-style vision-language models: zero-shot, prompt studies, probes, retrieval, search,
    clustering, attacks and reports — cached and reproducible."""


def build_app() -> typer.Typer:
    """The app with a command for every registered study (a study registered after import -- a test's, a plugin's
    -- appears in a new app)."""
    from cliplab.studies import discover

    new = typer.Typer(cls=_OneLineErrors, name="cliplab", help=HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False)
    new.callback()(_root)
    doors.register(new, [s for s in discover() if "cli" in s.doors])
    manage.register(new)
    _escape_help(new)
    return new


def _escape_help(typer_app: typer.Typer, done: set[int] | None = None) -> None:
    """Help texts are plain text: escape what rich would take for markup (``{class: [texts]}``,
    ``'cliplab[hf]'``), so ``--help`` shows them as written."""
    done = set() if done is None else done
    for info in typer_app.registered_commands:
        if info.help is None and info.callback.__doc__:
            info.help = inspect.cleandoc(info.callback.__doc__)
        if info.help:
            info.help = escape(info.help)
        hints = typing.get_type_hints(info.callback, include_extras=True)
        for param in inspect.signature(info.callback).parameters.values():
            extras = getattr(hints.get(param.name), "__metadata__", ())
            for option in (param.default, *extras):  # old-style defaults and Annotated aliases
                if getattr(option, "help", None) and id(option) not in done:  # shared Option objects: once
                    option.help = escape(option.help)
                    done.add(id(option))
    for group in typer_app.registered_groups:
        _escape_help(group.typer_instance, done)


def main() -> None:
    """The ``cliplab`` command. Text it prints that holds a file name that is not UTF-8 spells those bytes
    ``\\xNN`` (as the files it writes do) instead of failing to encode them. SIGTERM stops it as Ctrl-C does (one
    line, exit code 143, committed cache shards kept), not by ending the process where it stands."""
    import signal

    from cliplab.errors import Interrupted
    from cliplab.files import ESCAPE

    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=ESCAPE)

    def terminate(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, terminate)
    app()


app = build_app()

if __name__ == "__main__":
    main()
