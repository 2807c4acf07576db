"""Studies: one module per study, ``run_<study>(inputs, params)`` returning a result on the contract of
:mod:`cliplab.results.result`. A study module may also declare ``REPORT_SECTIONS`` (how the HTML report shows its
task's rows); :func:`report_sections` collects them, so adding a study touches its own module and its command."""
from __future__ import annotations

import importlib
import pkgutil


def report_sections() -> list:
    """Every study module's ``REPORT_SECTIONS``, in page order."""
    out = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        out += list(getattr(module, "REPORT_SECTIONS", ()))
    return sorted(out, key=lambda s: (s.order, s.task))
