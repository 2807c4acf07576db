"""Parameters, declared once: name, kind (type), default, bounds, choices, help, and the spelling of the CLI flag
where it is not ``--`` + the name with dashes. Every door derives its interface from these declarations: the CLI its
options (``cliplab.cli.doors``), the Python API its keyword arguments and docstrings (``cliplab.api.doors``),
docs/api.md its reference; and every door checks values with the one function here, :func:`check_values`, so a
bad value gets the same message whichever door it came through, with the parameter spelled as that door spells it.

A study declares its own parameters as a frozen dataclass whose fields are made with :func:`param` (the shape of
Hugging Face's ``HfArgumentParser`` dataclasses: the type annotation is the kind, the field's metadata the rest);
parameters shared by many studies (model, dataset, run options) are :class:`Param` objects in
:mod:`cliplab.inputs`. Help texts and error messages name other parameters as ``{p:name}``, which each door spells
its own way (``--templates`` on the command line, ``templates`` in Python).

Nothing here imports torch or any other heavy module: the CLI builds its ``--help`` from these declarations.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

from cliplab.errors import ParameterError

_META = "cliplab.param"


@dataclass(frozen=True)
class Kind:
    """What values of a parameter look like. ``name``: ``int``, ``float``, ``str``, ``bool``, ``path``, ``ints``
    (a list of integers: comma-separated on the command line), ``strs`` / ``paths`` (a list: a repeated flag on the
    command line), or ``model``, ``models``, ``dataset``, ``datasets`` (names, or loaded objects in Python, checked
    when they are loaded). ``api``: how the Python signature shows the type."""
    name: str
    api: str

    @property
    def many(self) -> bool:
        return self.name in ("ints", "strs", "paths", "models", "datasets")

    @property
    def repeated(self) -> bool:
        """A flag given once per value on the command line (``-t a -t b``); ``ints`` is one comma-separated value."""
        return self.many and self.name != "ints"


INT = Kind("int", "int")
FLOAT = Kind("float", "float")
STR = Kind("str", "str")
BOOL = Kind("bool", "bool")
PATH = Kind("path", "str | Path")
INTS = Kind("ints", "int | Sequence[int] | str")
STRS = Kind("strs", "str | Sequence[str]")
PATHS = Kind("paths", "str | Path | Sequence[str | Path]")
MODEL = Kind("model", "LoadedModel | str")
MODELS = Kind("models", "LoadedModel | str | Sequence[LoadedModel | str]")
DATASET = Kind("dataset", "ImageDataset | str | Path")
DATASETS = Kind("datasets", "ImageDataset | str | Sequence[ImageDataset | str]")

REQUIRED = dataclasses.MISSING  # the default of a parameter that must be given


@dataclass(frozen=True)
class Param:
    """One parameter, as every door sees it. ``name`` is the library's name and the Python keyword (unless
    ``keyword`` says otherwise); ``flag`` the CLI option when it is not ``--name-with-dashes``; ``aliases`` more
    flags that set it; ``argument``: a positional argument (CLI) / positional parameter (Python); ``doors``: where it
    exists (output files are the CLI's; the API returns objects instead); ``config``: recorded in the run's config
    (what changes a number; not where files go)."""
    name: str
    kind: Kind
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    flag: str | None = None
    short: str | None = None
    aliases: tuple[str, ...] = ()
    keyword: str | None = None
    argument: bool = False
    doors: frozenset[str] = frozenset({"cli", "api"})
    config: bool = True
    metavar: str | None = None
    hint: str = ""  # said after a type error (or, for a parameter with choices, a value that is not one of them)
    validate: Callable[[Any], Any] | None = None  # more checks of a value (a ParameterError), run with the others

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def api_name(self) -> str:
        return self.keyword or self.name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def with_(self, **changes) -> "Param":
        """This parameter with other attributes (e.g. a study's own help text for a shared parameter)."""
        return dataclasses.replace(self, **changes)

    def bounds_text(self) -> str:
        """The bounds and choices as a person reads them, for help texts (``''`` when there are none)."""
        if self.choices:
            return " | ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{_num(self.min)}..{_num(self.max)}"
        if self.min is not None:
            return f">= {_num(self.min)}"
        if self.max is not None:
            return f"<= {_num(self.max)}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def param(default: Any = None, help: str = "", **info) -> Any:
    """A study parameter: a dataclass field whose metadata declares the rest of it (see :class:`Param`; the kind
    comes from the field's type annotation). Use inside a frozen dataclass of the study's parameters."""
    if isinstance(default, list):
        default = tuple(default)
    kw: dict = {"metadata": {_META: {"help": help, **info}}}
    if default is REQUIRED:
        return field(**kw)
    return field(default=default, **kw)


_SIMPLE = {int: INT, float: FLOAT, str: STR, bool: BOOL, Path: PATH}
_SEQUENCES = {int: INTS, str: STRS, Path: PATHS}


def _kind_of(annotation) -> tuple[Kind, bool, tuple[str, ...] | None]:
    """(kind, whether None is allowed, choices) from a type annotation."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = False
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
        args, origin = typing.get_args(annotation), typing.get_origin(annotation)
    if origin is Literal:
        return STR, optional, tuple(str(a) for a in args)
    if annotation in _SIMPLE:
        return _SIMPLE[annotation], optional, None
    if origin in (tuple, list, Sequence, typing.Sequence) or origin is getattr(__import__("collections.abc"), "abc").Sequence:
        item = args[0] if args else str
        if item in _SEQUENCES:
            return _SEQUENCES[item], optional, None
    raise TypeError(f"no parameter kind for the annotation {annotation!r}")


def declared(params_class: type) -> list[Param]:
    """The parameters a study's dataclass declares, in field order."""
    hints = typing.get_type_hints(params_class)
    out = []
    for f in dataclasses.fields(params_class):
        info = dict(f.metadata.get(_META, {}))
        kind, optional, choices = _kind_of(hints[f.name])
        kind = info.pop("kind", kind)
        default = f.default if f.default is not dataclasses.MISSING else REQUIRED
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        out.append(Param(f.name, kind, default, choices=info.pop("choices", choices),
                         optional=optional or default is None, **info))
    return out


# ---- checking values: the one place types, bounds and choices are enforced ----

class Spelling:
    """How a door spells parameters in messages: a function from a library name to the door's spelling."""

    def __init__(self, params: Iterable[Param], door: str):
        self.door = door
        self.names = {p.name: ((p.metavar or p.name.upper()).rstrip(".") if p.argument else p.cli_flag)
                      if door == "cli" else p.api_name for p in params}

    def __call__(self, name: str) -> str:
        if name in self.names:
            return self.names[name]
        return "--" + name.replace("_", "-") if self.door == "cli" else name


def check_values(params: Sequence[Param], values: dict[str, Any]) -> dict[str, Any]:
    """The values of ``params`` (library names; missing ones take their defaults) checked against the declarations
    and made canonical (lists as tuples, paths as :class:`~pathlib.Path`); raises :class:`ParameterError` naming
    the first bad one."""
    out = {}
    for p in params:
        if p.name in values:
            out[p.name] = check_value(p, values[p.name])
        elif p.required:
            raise ParameterError(p.name, None, "is required")
        else:
            out[p.name] = () if p.default is None and p.kind.many else p.default
    return out


def check_value(p: Param, value: Any) -> Any:
    """One value checked against its declaration (see :func:`check_values`)."""
    if value is None:
        if p.kind.many:
            return ()
        if p.optional or p.default is None:
            return None
        raise ParameterError(p.name, value, f"expected {_EXPECTED[p.kind.name]}, not None", quote=False)
    value = _CHECKS[p.kind.name](p, value)
    items = value if p.kind.name in ("ints",) else (value,)
    for v in items:
        _check_bounds(p, v)
    if p.choices and p.kind.name in ("str",) and value not in p.choices:
        raise ParameterError(p.name, value, choose(p.choices, value) + (f": {p.hint}" if p.hint else ""))
    if p.choices and p.kind.name == "strs":
        for v in value:
            if v not in p.choices:
                raise ParameterError(p.name, v, choose(p.choices, v))
    if p.validate is not None:
        value = p.validate(value)
    return value


def choose(choices: Sequence[str], value: Any = None) -> str:
    """``choose one of a, b, c`` (with ``did you mean`` when ``value`` is close to one of them)."""
    text = f"choose one of {', '.join(map(str, choices))}"
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6) if value else []
    return text + (f" (did you mean {close[0]!r}?)" if close else "")


_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False",
             "path": "a file or folder path", "ints": "integers", "strs": "a string or a list of strings",
             "paths": "a path or a list of paths", "model": "a model", "models": "models", "dataset": "a dataset",
             "datasets": "datasets"}


def _type_error(p: Param, value) -> ParameterError:
    hint = f"; {p.hint}" if p.hint else ""
    return ParameterError(p.name, value, f"expected {_EXPECTED[p.kind.name]}, got {type(value).__name__}{hint}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _int(p: Param, v):
    if not _is_int(v):
        raise _type_error(p, v)
    return int(v)


def _float(p: Param, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _type_error(p, v)
    v = float(v)
    if math.isnan(v):
        raise ParameterError(p.name, v, "expected a number, got NaN", quote=False)
    return v


def _str(p: Param, v):
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if not isinstance(v, str):
        raise _type_error(p, v)
    return v


def _bool(p: Param, v):
    if type(v).__name__ == "bool_":  # numpy's bool
        return bool(v)
    if not isinstance(v, bool):
        raise _type_error(p, v)
    return v


def _path(p: Param, v):
    if not isinstance(v, (str, os.PathLike)):
        raise _type_error(p, v)
    return Path(v)


_INT_LIST = re.compile(r"^\s*-?\d+(\s*,\s*-?\d+)*\s*,?\s*$")


def _ints(p: Param, v):
    if isinstance(v, str):
        text = v.replace(" ", "")
        if text == "":
            return ()
        if not _INT_LIST.match(text):
            raise ParameterError(p.name, v, "expected comma-separated integers, e.g. 1,2,4,8,16")
        return tuple(int(x) for x in text.split(",") if x)
    if _is_int(v):
        return (int(v),)
    if isinstance(v, (list, tuple)) or (hasattr(v, "__iter__") and not isinstance(v, (str, bytes, dict))):
        items = list(v)
        if not all(_is_int(x) for x in items):
            raise ParameterError(p.name, items, "expected integers")
        return tuple(int(x) for x in items)
    raise _type_error(p, v)


def _seq(item: Callable):
    def check(p: Param, v):
        if isinstance(v, (str, os.PathLike)):
            return (item(p, v),)
        if isinstance(v, (list, tuple)):
            return tuple(item(p, x) for x in v)
        raise _type_error(p, v)

    return check


def _passthrough(p: Param, v):
    """Models and datasets: names or loaded objects, checked when they are loaded (:mod:`cliplab.inputs`)."""
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (list, tuple)) and p.kind.many:
        return tuple(os.fspath(x) if isinstance(x, os.PathLike) else x for x in v)
    if p.kind.many:
        return (v,)
    return v


_CHECKS: dict[str, Callable] = {"int": _int, "float": _float, "str": _str, "bool": _bool, "path": _path,
                                "ints": _ints, "strs": _seq(_str), "paths": _seq(_path), "model": _passthrough,
                                "models": _passthrough, "dataset": _passthrough, "datasets": _passthrough,
                                "split": _passthrough}


def _check_bounds(p: Param, v) -> None:
    if p.min is None and p.max is None or not isinstance(v, (int, float)) or isinstance(v, bool):
        return
    if (p.min is not None and v < p.min) or (p.max is not None and v > p.max):
        if p.max is None:
            where = f"at least {_num(p.min)}"
        elif p.min is None:
            where = f"at most {_num(p.max)}"
        else:
            where = f"between {_num(p.min)} and {_num(p.max)}"
        shown = ",".join(map(str, v)) if isinstance(v, tuple) else v
        raise ParameterError(p.name, shown, f"must be {where}", quote=False)


def render(text: str, spell: Callable[[str], str]) -> str:
    """A help text or message with every ``{p:name}`` spelled by ``spell``; ``{py:...}`` and ``{cli:...}`` keep
    their text only at that door (the door of ``spell``: :class:`Spelling`)."""
    door = getattr(spell, "door", "api")
    text = re.sub(r"\{(py|cli):([^{}]*)\}", lambda m: m.group(2) if (m.group(1) == "cli") == (door == "cli") else "",
                  text)
    return re.sub(r"\{p:(\w+)\}", lambda m: spell(m.group(1)), text)


def plain(value: Any) -> Any:
    """A checked value as JSON holds it (tuples as lists, paths as text)."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
