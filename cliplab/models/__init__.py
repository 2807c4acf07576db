"""Models: one ``open_model`` for open_clip names/tags, hf-hub/local-dir, config JSON + checkpoint, and HF CLIP
(:mod:`cliplab.models.loader`). Importing this package is light; torch and open_clip load with the first model."""
from __future__ import annotations

import importlib

_EXPORTS = {"open_model": "loader", "check_options": "loader", "resolve_backend": "loader", "resolve_device": "loader",
            "resolve_precision": "loader", "PRECISIONS": "loader", "LoadedModel": "base"}


def __getattr__(name: str):
    if name in _EXPORTS:
        from cliplab.progress import quiet_tqdm_import

        quiet_tqdm_import()  # open_clip's imports bring tqdm.auto: no "IProgress not found" in a notebook
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
