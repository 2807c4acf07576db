"""The studies cliplab knows, each declared once (:class:`Study`): its name, its ``run`` function, its parameters,
the shared inputs it takes, the files it can write, how the report shows its rows, and its help. Every door builds
its interface from these declarations: the CLI a command (``cliplab.cli.doors``), the Python API a function
(``cliplab.api.doors``), docs/api.md a section, the HTML report and the notebook display their figures.

A study module registers its declaration when it is imported (``STUDY = register(Study(...))``); the built-in ones
are found by :func:`cliplab.studies.discover`. A study registered anywhere else (a test, a plugin) is met by every
door the same way. This module sits below the studies and the report and imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cliplab.inputs import QUIET_P, Fitting, Templates
from cliplab.params import PATH, STR, Param, declared


@dataclass(frozen=True)
class Output:
    """A file (or folder) a study can write on the command line: ``artifact`` is ``"record"`` (the JSON document of
    :meth:`record`) or a name of the result's ``artifacts()``; ``suffixes`` the file types it can write; ``folder``:
    a folder of files; ``requires``:
    a parameter without which there is nothing to write; ``beside(path)``: every file written for ``path`` (a sidecar
    such as ``x.ids.csv``; the output guard checks them all before any work). In Python the result's methods and
    inline figures stand for these files."""
    name: str
    artifact: str
    help: str
    suffixes: tuple[str, ...] = ()
    folder: bool = False
    flag: str | None = None
    short: str | None = None
    requires: str | None = None
    beside: Callable[[Path], list[Path]] | None = None

    def paths(self, path: Path) -> list[Path]:
        """Every file this output writes when named ``path``: the file itself (unless ``beside`` says otherwise)
        and the files beside it (a sidecar, another format)."""
        return list(self.beside(Path(path))) if self.beside is not None else [Path(path)]

    @property
    def param(self) -> Param:
        return Param(self.name, PATH, None, help=self.help, flag=self.flag, short=self.short, doors=frozenset({"cli"}),
                     config=False)


@dataclass(frozen=True)
class Study:
    """One study, declared once. ``run(inputs, params)`` returns the result (on the contract of
    :mod:`cliplab.results.result`); ``params`` is the frozen dataclass of the study's own parameters (made with
    :func:`cliplab.params.param`); ``inputs`` the shared parameters it takes (:mod:`cliplab.inputs`), in the order
    ``--help`` lists them; ``fitting`` and ``templates`` how the split it fits on and its template sets are chosen.
    ``command``: its CLI path when not its name (``("attack", "typographic")``); ``store`` the store's ``command``
    column (default: the CLI path joined with ``-``). ``tool``: not a study (no store, no report; e.g. ``embed``);
    ``api_result(result, values)``: what the Python function returns, when not the result itself; ``positional``:
    the Python function's positional parameters; ``doors``: where the study is offered."""
    name: str
    run: Callable
    summary: str
    params: type | None = None
    inputs: tuple[Param, ...] = ()
    outputs: tuple[Output, ...] = ()
    fitting: Fitting | None = None
    templates: Templates | None = None
    description: str = ""
    command: tuple[str, ...] = ()
    store: str | None = None
    group: str = "Studies"
    returns: str = ""
    example: str = ""
    sections: tuple = ()
    tool: bool = False
    api_result: Callable | None = None
    model_extra: tuple[str, ...] = ()
    positional: tuple[str, ...] = ("model", "dataset")
    doors: frozenset[str] = frozenset({"cli", "api"})
    order: int = 100

    @property
    def path(self) -> tuple[str, ...]:
        return self.command or (self.name,)

    @property
    def store_command(self) -> str:
        return self.store or "-".join(self.path)

    def own(self) -> list[Param]:
        """The study's own parameters (its ``params`` dataclass), in declaration order."""
        return declared(self.params) if self.params is not None else []

    def parameters(self, door: str) -> list[Param]:
        """Every parameter a door offers, in its order: arguments first, then the inputs up to the templates, the
        study's own parameters, the other inputs; on the command line the output files, the store, the run options
        and ``--quiet``; in Python the run options and ``quiet``."""
        own = self.own()
        args = [p for p in own + list(self.inputs) if p.argument]
        lead = [p for p in self.inputs if p.name in LEAD and not p.argument]
        rest = [p for p in self.inputs if p.name not in LEAD and not p.argument]
        mine = [p for p in own if not p.argument]
        if door == "cli":
            files = [o.param for o in self.outputs] + ([] if self.tool else STORE)
            out = args + lead + mine + files + rest + [QUIET_P]
        else:
            out = args + lead + mine + rest + [QUIET_P]
        seen, unique = set(), []
        for p in out:
            if door in p.doors and p.name not in seen:
                seen.add(p.name)
                unique.append(p)
        return unique

    def all_params(self) -> list[Param]:
        """Every parameter of the study at any door (for spelling names in messages)."""
        return list({p.name: p for p in self.parameters("cli") + self.parameters("api")}.values())


# the shared inputs listed before a study's own parameters (the rest, run options, after them)
LEAD = {"model", "pretrained", "models_file", "dataset", "split", "data_root", "limit", "classnames", "train_split",
        "train_limit", "templates"}

RESULTS_P = Param("results", PATH, None, doors=frozenset({"cli"}), config=False, help=(
    "results store folder: this run's rows (model, dataset, task, metric, value, CI, seed, fingerprints, config) are "
    "added as a new file; read it with pandas or `cliplab report`."))
RESULTS_FORMAT_P = Param("results_format", STR, "parquet", choices=("parquet", "jsonl"),
                         doors=frozenset({"cli"}), config=False, help="the store's file format.")
STORE = [RESULTS_P, RESULTS_FORMAT_P]

_STUDIES: dict[str, Study] = {}
_SECTIONS: list = []


def register(study: Study) -> Study:
    """Add a study (a second study of the same name replaces the first: a reloaded module); returns it."""
    _STUDIES[study.name] = study
    return study


def unregister(name: str) -> None:
    """Remove a study (tests that register a toy study clean up with this)."""
    _STUDIES.pop(name, None)


def studies() -> list[Study]:
    """Every registered study and tool, in their declared order."""
    return sorted(_STUDIES.values(), key=lambda s: (s.order, s.name))


def get(name: str) -> Study | None:
    return _STUDIES.get(name)


def report_sections() -> list:
    """How the HTML report and the notebook show each task's rows: the sections of every registered study, in
    page order."""
    out = [s for st in _STUDIES.values() for s in st.sections] + list(_SECTIONS)
    return sorted(out, key=lambda s: (s.order, s.task))


def sections_for(task: str) -> list:
    return [s for s in report_sections() if s.task == task]


__all__ = ["Study", "Output", "register", "unregister", "studies", "get", "report_sections", "sections_for"]
