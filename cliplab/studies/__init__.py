"""Studies: one module per study, each declaring itself once (``STUDY = register(Study(...))``, see
:mod:`cliplab.registry`) with ``run_<study>(inputs, params)`` returning a result on the contract of
:mod:`cliplab.results.result`. :func:`execute` runs any declared study the same way for every door: the values
checked against the declarations, the inputs loaded (:func:`cliplab.inputs.load_inputs`), the study run, and the
result stamped with the store's command name and the run's config."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

from cliplab.inputs import DEFAULT_MODEL, load_inputs, run_config
from cliplab.params import check_values
from cliplab.progress import note
from cliplab.embed import long_text
from cliplab.quarantine import one_report
from cliplab.results.guard import Inputs as ReadFiles, dataset_inputs
from cliplab.registry import Study, studies

_DISCOVERED = False


def discover() -> list[Study]:
    """Import every study module of this package (each registers its declaration); every registered study."""
    global _DISCOVERED
    if not _DISCOVERED:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _DISCOVERED = True
    return studies()


def execute(study: Study, values: dict[str, Any], before: Callable | None = None) -> Any:
    """Run ``study`` with parameter ``values`` (library names; missing ones take their defaults): the result, with
    ``command`` (the store's command name) and ``config`` (the run's configuration) set, as every door records it.
    ``before(reads)`` runs once the inputs are loaded and before the study, with what the run reads from disk
    (:class:`cliplab.results.guard.Inputs`: a door's output guard)."""
    own = study.own()
    declared = own + list(study.inputs)
    unknown = set(values) - {p.name for p in declared}
    if unknown:
        raise TypeError(f"{study.name}: unknown parameters {sorted(unknown)}")
    checked = check_values(declared, values)
    # damaged cache entries met anywhere in the run, and prompts longer than the text context: one warning each
    with one_report(), long_text.one_report():
        return _run(study, checked, own, declared, before, values)


def _run(study: Study, checked: dict[str, Any], own: list, declared: list, before: Callable | None,
         values: dict[str, Any]) -> Any:
    own_names = {p.name for p in own}
    inputs = load_inputs({k: v for k, v in checked.items() if k not in own_names} | _shared(study, checked),
                         fitting=study.fitting, templates=study.templates, model_extra=study.model_extra)
    params = study.params(**{p.name: checked[p.name] for p in own}) if study.params is not None else None
    reads = read_files(declared, checked, inputs)
    if before is not None:
        before(reads)
    result = study.run(inputs, params)
    if "model" in {p.name for p in study.inputs} and values.get("model") in (None, ()) \
            and not values.get("models_file"):  # said once the study ran: any error stays one line
        note(f"no {{p:model}} given: used {DEFAULT_MODEL}, the small model shipped with cliplab (trained on the "
             "shapes data)")
    if not study.tool or hasattr(result, "__dict__"):
        try:
            result.input_files = reads  # what the run read: its exports must not write over one of them
        except AttributeError:  # a loaded model or dataset that does not take attributes
            pass
    if not study.tool:
        result.command = study.store_command
        result.config = run_config(study.parameters("api"), checked, inputs)
    return result


def read_files(params, checked: dict, inputs) -> ReadFiles:
    """What a run reads from disk: every file a parameter names (template, class-name, query, model files...),
    the folders a dataset parameter names, and the loaded datasets' own files."""
    import os

    out = ReadFiles.empty()
    for p in params:
        value = checked.get(p.name)
        for v in value if isinstance(value, tuple) else (value,):
            if not isinstance(v, (str, os.PathLike)) or p.name in ("cache_dir",):
                continue
            v = os.fspath(v)
            local = v.split("#", 1)[0] if p.kind.name in ("dataset", "datasets") else v
            if os.path.isfile(local):
                out.add_file(local, f"{p.name} {v}")
            elif os.path.isdir(local):
                out.folders.add(local)  # nothing the next run reads as an image is written into it
                if p.kind.name not in ("dataset", "datasets"):  # a dataset's files come with the loaded dataset
                    out.add_path(local, f"{p.name} {v}")
    for ds in [*inputs.datasets, *(f for f in inputs.fitting if f is not None)]:
        dataset_inputs(out, ds)
    return out


def _shared(study: Study, checked: dict) -> dict:
    """Own parameters that steer the loading of inputs (e.g. ``ensemble``, ``select``, ``probe``)."""
    names = {n for n in (getattr(study.templates, "ensemble", None), getattr(study.fitting, "when", None),
                         getattr(study.fitting, "dataset", None)) if isinstance(n, str)}
    names |= set(study.model_extra)
    return {k: checked[k] for k in names if k in checked}
