"""The command line as a door over the declared studies: one Typer command per :class:`~cliplab.registry.Study`,
its options made from the study's parameter declarations (flags, defaults, bounds and help), its body the same for
every study: check the output paths, run the study through :func:`cliplab.studies.execute` (which checks every
value and loads the inputs), then :func:`finish`: the tables, the output files and the store rows.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from cliplab.cli.options import FLAG_SPELLING, check_output, check_results, cli_errors, stdout
from cliplab.errors import ParameterError
from cliplab.files import printable
from cliplab.params import Param, Spelling, render
from cliplab.progress import ConsoleProgress, console, note, use
from cliplab.registry import Study

_CLI_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "path": Path, "ints": str, "strs": List[str],
              "paths": List[Path], "model": str, "models": List[str], "dataset": str, "datasets": List[str],
              "split": str}


def help_text(p: Param, spell) -> str:
    """A parameter's help as ``--help`` shows it: other parameters spelled as flags, bounds and choices added."""
    text = render(p.help, spell)
    bounds = p.bounds_text()
    return f"{text} [{bounds}]" if bounds and bounds not in text else text


def cli_default(p: Param) -> Any:
    """The default as Typer takes it (comma lists as text, sequences as lists)."""
    if p.required:
        return ...
    if p.kind.name == "ints":
        return ",".join(map(str, p.default)) if p.default else ("" if p.default == () else None)
    if p.kind.many:
        return list(p.default) if p.default else None
    return p.default


def option(p: Param, spell) -> tuple[Any, Any]:
    """(annotation, default) of a Typer parameter for ``p``."""
    base = _CLI_TYPES[p.kind.name]
    default = cli_default(p)
    optional = default is None or p.optional
    annotation = Optional[base] if optional and default is not ... else base
    if p.argument:
        info = typer.Argument(help=help_text(p, spell), metavar=p.metavar, show_default=default not in (None, ...))
        return Annotated[annotation, info], default
    decls = [p.cli_flag, *p.aliases]
    if p.kind.name == "bool" and p.default is not False:
        decls = [f"{p.cli_flag}/--no-{p.cli_flag[2:]}"]
    if p.short:
        decls.append(p.short)
    info = typer.Option(*decls, help=help_text(p, spell), metavar=p.metavar,
                        show_default=default not in (None, "", ...))
    return Annotated[annotation, info], default


def signature(params: list[Param], spell) -> inspect.Signature:
    out = []
    for p in params:
        annotation, default = option(p, spell)
        out.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                     default=inspect.Parameter.empty if default is ... else default))
    return inspect.Signature(out)


def command_for(study: Study):
    """The Typer command of ``study`` (a function whose signature is made from the declarations)."""
    params = study.parameters("cli")
    spell = Spelling(study.all_params(), "cli")
    outputs = {o.name: o for o in study.outputs}

    def command(**given):
        quiet = bool(given.pop("quiet", False))
        if _defaulted("model"):  # the study says which model it used when none was named
            given.pop("model", None)
        with cli_errors(spell), use(ConsoleProgress(quiet=quiet, spell=spell)):
            files = {name: given.pop(name, None) for name in outputs}
            results, fmt = given.pop("results", None), given.pop("results_format", "parquet")
            for name, path in files.items():  # outputs fail before any work
                o = outputs[name]
                check_output(path, o.param.cli_flag, o.suffixes, folder=o.folder, warn_existing=False)
                if path is not None and o.requires and not given.get(o.requires):
                    raise ParameterError(name, path, f"{{p:{name}}} shows the results of {{p:{o.requires}}}: give "
                                         f"{{p:{o.requires}}} too", prefix=False)
            if not study.tool:
                check_results(results, fmt)
            from cliplab.results import guard
            from cliplab.studies import execute

            planned = [guard.Planned(path, name, Path(named), folder=outputs[name].folder)
                       for name, named in files.items() if named is not None
                       for path in outputs[name].paths(Path(named).expanduser())]
            result = execute(study, given, before=lambda reads: guard.check(planned, reads, spell))
            finish(result, files={outputs[n].artifact: p for n, p in files.items()}, results=results,
                   results_format=fmt, quiet=quiet, show=True, spell=spell)

    sig = signature(params, spell)
    command.__signature__ = sig  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()}
    command.__name__ = study.name.replace("-", "_")
    command.__doc__ = render(study.summary + ("\n\n" + study.description if study.description else ""), spell)
    return command


def _defaulted(name: str) -> bool:
    """Whether the running command's option ``name`` took its default (it was not on the command line)."""
    try:  # typer >= 0.22 ships its own copy of click
        from typer._click import core, globals as context
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import core, globals as context

    ctx = context.get_current_context(silent=True)
    return ctx is not None and name in ctx.params and \
        ctx.get_parameter_source(name) == core.ParameterSource.DEFAULT


def register(app: typer.Typer, studies: list[Study]) -> None:
    """A command for every study (nested under a group for paths like ``attack typographic``)."""
    groups: dict[str, typer.Typer] = {}
    for study in studies:
        fn = command_for(study)
        *parents, leaf = study.path
        target = app
        for name in parents:
            if name not in groups:
                groups[name] = typer.Typer(help=GROUP_HELP.get(name, ""), no_args_is_help=True)
                app.add_typer(groups[name], name=name)
            target = groups[name]
        target.command(leaf, help=fn.__doc__)(fn)


GROUP_HELP = {"attack": "Adversarial-style probes of a model (typographic attack)."}


def finish(result, *, files: dict[str, Optional[Path]] | None = None, results: Optional[Path] = None,
           results_format: str = "parquet", quiet: bool = False, show: bool = True, artifacts: dict | None = None,
           command: str | None = None, config: dict | None = None, spell=None) -> None:
    """Everything after the study, the same for every study: its tables on stdout (unless not ``show``), skipped
    inputs on stderr, its notes, the requested files (``files``: artifact name -> path; ``record`` is the JSON
    document; ``artifacts`` replaces the result's own), then the store rows (``command`` and ``config`` as the
    result carries them unless given)."""
    from cliplab.report.tables import render as render_table
    from cliplab.results.exports import write_artifact
    from cliplab.results.store import RunRecorder

    command = command or getattr(result, "command", result.task)
    config = config if config is not None else getattr(result, "config", None) or {}
    out = stdout(not show)
    if hasattr(result, "tables"):
        for item in result.tables() if show else ():
            out.print(printable(item) if isinstance(item, str) else render_table(item))
    report_failures(result.failures)
    for message in getattr(result, "notes", ()):  # what a person should know about how the numbers were made
        note(render(message, spell or FLAG_SPELLING))
    rec = RunRecorder(command, config)
    if hasattr(result, "metric_rows"):
        rec.add_result(result)
    if artifacts is None:
        artifacts = result.artifacts() if files and any(files.values()) else {}
    for name, path in (files or {}).items():
        if path is None:
            continue
        written = write_artifact(path, result, name, artifacts, config)
        many = len(written) > 1 or (name in artifacts and getattr(artifacts[name], "many", False))
        for p, caption in written:
            if caption is not None:
                rec.add_figure(p, result, caption, model=getattr(artifacts.get(name), "model", None),
                               group=name if many else None)
        stdout(quiet).print(f"wrote {len(written)} file(s) to {path}" if many else f"wrote {path}")
    path = rec.write(results, results_format)
    if path is not None:
        stdout(quiet).print(f"added {len(rec.rows)} rows to the results store: {path}")


def report_failures(failures) -> None:
    """Skipped inputs on stderr (also with --quiet: they change what the numbers mean)."""
    from rich.markup import escape

    if not failures:
        return
    failures = [(None, f.id, f.reason) if hasattr(f, "reason") else f for f in failures]
    console.print(f"[yellow]skipped {len(failures)} image(s) that could not be used:[/yellow]")
    for _, ident, reason in failures[:20]:
        console.print(f"  {escape(printable(str(ident)))}: {escape(printable(str(reason)))}")
    if len(failures) > 20:
        console.print(f"  ... and {len(failures) - 20} more (all listed in --output JSON)")
