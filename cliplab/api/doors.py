"""The Python API as a door over the declared studies: one function per :class:`~cliplab.registry.Study`, its
signature, defaults and numpydoc docstring made from the study's parameter declarations, its body the same for every
study: bars through ``tqdm.auto`` (none with ``quiet=True``; a progress the caller installed with
:func:`cliplab.progress.use` is kept), :func:`cliplab.studies.execute` (which checks every value and loads the
inputs), then the skipped inputs as a warning and the study's notes. Errors are the library's
(:class:`~cliplab.errors.CliplabError`), with parameters spelled as this function's keywords, raised from this
function's frame; a misspelled keyword gets a "did you mean".
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import textwrap
from typing import Any, Callable

from cliplab.errors import CliplabError, ParameterError
from cliplab.params import REQUIRED, Param, Spelling, render
from cliplab.progress import NotebookProgress, current, installed, note, use, warn
from cliplab.registry import Study


def api_default(p: Param) -> Any:
    return inspect.Parameter.empty if p.required else p.default


def signature(study: Study) -> tuple[inspect.Signature, list[Param]]:
    """The function's signature (positional parameters first, the rest keyword-only) and its parameters in order."""
    params = study.parameters("api")
    by_name = {p.name: p for p in params}
    lead = [by_name[n] for n in study.positional if n in by_name]
    rest = [p for p in params if p.name not in study.positional]
    out, required_after = [], False
    for p in reversed(lead):  # a positional parameter before a required one cannot have a default
        required_after = required_after or p.required
        default = inspect.Parameter.empty if required_after else api_default(p)
        out.append(inspect.Parameter(p.api_name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                     annotation=annotation(p)))
    out.reverse()
    out += [inspect.Parameter(p.api_name, inspect.Parameter.KEYWORD_ONLY, default=api_default(p),
                              annotation=annotation(p)) for p in rest]
    ret = inspect.signature(study.run).return_annotation if study.api_result is None else \
        inspect.signature(study.api_result).return_annotation
    return inspect.Signature(out, return_annotation=ret), lead + rest


def annotation(p: Param) -> str:
    return p.kind.api + (" | None" if (p.optional or p.default is None) and not p.kind.many else "")


def docstring(study: Study, params: list[Param], spell) -> str:
    """A numpydoc docstring from the declarations (docs/api.md is written from the same declarations)."""
    lines = [render(study.summary, spell)]
    if study.description:
        lines += ["", render(study.description, spell)]
    lines += ["", "Parameters", "----------"]
    for p in params:
        kind = annotation(p) + ("" if p.required else f", default {p.default!r}")
        lines.append(f"{p.api_name} : {kind}")
        text = render(p.help, spell)
        bounds = p.bounds_text()
        if bounds and bounds not in text:
            text += f" ({bounds})"
        lines += textwrap.wrap(text, 100, initial_indent="    ", subsequent_indent="    ") or ["    "]
    ret = inspect.signature(study.run).return_annotation if study.api_result is None else \
        inspect.signature(study.api_result).return_annotation
    lines += ["", "Returns", "-------", str(ret).strip("'\"")]
    if study.returns:
        lines += textwrap.wrap(render(study.returns, spell), 100, initial_indent="    ", subsequent_indent="    ")
    if study.example:
        lines += ["", "Examples", "--------", *[f">>> {ln}" for ln in study.example.strip().splitlines()]]
    return "\n".join(lines)


def function_for(study: Study) -> Callable:
    """The Python function of ``study``."""
    sig, params = signature(study)
    names = {p.api_name: p.name for p in params}
    spell = Spelling(study.all_params(), "api")

    def call(*args, **kwargs):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(_did_you_mean(study.name, exc, kwargs, names)) from None
        quiet = bool(bound.arguments.get("quiet", False))
        values = {names[k]: v for k, v in bound.arguments.items() if k != "quiet"}
        # a progress the caller installed (e.g. a web app's, with cliplab.progress.use) is kept; else one tqdm bar
        own = None if installed() else NotebookProgress(quiet=quiet, spell=spell)
        with use(own or current()), own or contextlib.nullcontext():
            try:
                from cliplab.studies import execute

                result = execute(study, values)
            except ParameterError as exc:
                exc.args = (exc.render(spell),)
                raise exc.with_traceback(None) from None
            except CliplabError as exc:
                raise exc.with_traceback(None) from None
            if not study.tool:
                report(result, spell)
            if study.api_result is not None:
                return study.api_result(result, values)
        return result

    fn = functools.update_wrapper(call, study.run, assigned=("__module__",), updated=())
    fn.__name__ = fn.__qualname__ = study.name
    fn.__module__ = "cliplab.api"
    fn.__signature__ = sig  # type: ignore[attr-defined]
    fn.__doc__ = docstring(study, params, spell)
    fn.study = study  # type: ignore[attr-defined]
    return fn


def _did_you_mean(name: str, exc: TypeError, kwargs: dict, names: dict[str, str]) -> str:
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(names), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; its keywords: {', '.join(names)}"
        return f"{name}() got an unexpected keyword argument {unknown[0]!r}{hint}"
    return f"{name}(): {exc}"


def report(result, spell) -> None:
    """What the CLI prints after a study besides its tables: skipped inputs (a warning: they change what the numbers
    mean) and the study's notes."""
    failures = list(result.failures)
    if failures:
        warn(f"{len(failures)} input(s) could not be used and are left out, e.g. {failures[0].id}: "
             f"{failures[0].reason} (all of them: .failures)")
    for message in getattr(result, "notes", ()):
        note(render(message, spell))


_FUNCTIONS: dict[str, Callable] = {}


def function(name: str) -> Callable | None:
    """The API function of the registered study ``name`` (made on first use; None when there is no such study)."""
    from cliplab.registry import get
    from cliplab.studies import discover

    study = get(name)
    if study is None:
        discover()
        study = get(name)
    if study is None:
        return None
    fn = _FUNCTIONS.get(name)
    if fn is None or fn.study is not study:  # type: ignore[attr-defined]
        fn = _FUNCTIONS[name] = function_for(study)
    return fn


__all__ = ["function", "function_for", "signature", "docstring", "REQUIRED"]
