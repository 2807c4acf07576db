"""Studies: one module per study, each declaring itself once (``STUDY = register(Study(...))``, see
:mod:`cliplab.registry`) with ``run_<study>(inputs, params)`` returning a result on the contract of
:mod:`cliplab.results.result`. :func:`execute` runs any declared study the same way for every door: the values
checked against the declarations, the inputs loaded (:func:`cliplab.inputs.load_inputs`), the study run, and the
result stamped with the store's command name and the run's config."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from cliplab.inputs import DEFAULT_MODEL, load_inputs, run_config
from cliplab.params import check_values
from cliplab.progress import note
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


def execute(study: Study, values: dict[str, Any]) -> Any:
    """Run ``study`` with parameter ``values`` (library names; missing ones take their defaults): the result, with
    ``command`` (the store's command name) and ``config`` (the run's configuration) set, as every door records it."""
    own = study.own()
    declared = own + list(study.inputs)
    unknown = set(values) - {p.name for p in declared}
    if unknown:
        raise TypeError(f"{study.name}: unknown parameters {sorted(unknown)}")
    checked = check_values(declared, values)
    own_names = {p.name for p in own}
    inputs = load_inputs({k: v for k, v in checked.items() if k not in own_names} | _shared(study, checked),
                         fitting=study.fitting, templates=study.templates, model_extra=study.model_extra)
    if "model" in {p.name for p in study.inputs} and values.get("model") in (None, ()) \
            and not values.get("models_file"):  # said once the inputs loaded: an error stays one line
        note(f"no {{p:model}} given: using {DEFAULT_MODEL}, the small model shipped with cliplab (trained on the "
             "shapes data)")
    params = study.params(**{p.name: checked[p.name] for p in own}) if study.params is not None else None
    result = study.run(inputs, params)
    if not study.tool:
        result.command = study.store_command
        result.config = run_config(study.parameters("api"), checked, inputs)
    return result


def _shared(study: Study, checked: dict) -> dict:
    """Own parameters that steer the loading of inputs (e.g. ``ensemble``, ``select``, ``probe``)."""
    names = {n for n in (getattr(study.templates, "ensemble", None), getattr(study.fitting, "when", None),
                         getattr(study.fitting, "dataset", None)) if isinstance(n, str)}
    names |= set(study.model_extra)
    return {k: checked[k] for k in names if k in checked}
