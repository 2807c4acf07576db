"""cliplab: evaluate CLIP-style vision-language models — cached, reproducible, fast.

Data flows one way: model + dataset -> cached embeddings -> task -> result rows -> report.

From Python, every study is one call (:mod:`cliplab.api`)::

    import cliplab
    m = cliplab.load_model("tiny-shapes")
    r = cliplab.zeroshot(m, "shapes:color")
    r.metrics

``import cliplab`` stays light: the API (and torch with it) is imported on first use of one of its names.
"""
import sys as _sys
import types as _types

from cliplab.version import __version__
from cliplab.errors import CliplabError, DatasetError, ModelLoadError, ParameterError

_API = ("load_model", "load_dataset", "embed", "embed_texts", "zeroshot", "prompts", "probe", "compare", "inspect",
        "attack", "retrieval", "search", "similar", "cluster", "read_results")  # the built-in ones; any registered
# study is found too (cliplab.api)


def __getattr__(name: str):
    if not name.startswith("_") and name != "api":
        import importlib

        api = importlib.import_module("cliplab.api")  # on first use only: the studies are found, their functions made
        value = getattr(api, name, None)
        if value is not None:
            globals()[name] = value  # straight into the namespace: found directly from now on
            return value
    raise AttributeError(f"module 'cliplab' has no attribute {name!r}")


class _Package(_types.ModuleType):
    """``cliplab`` itself. Some API functions share their name with a submodule (``cliplab.prompts``: template sets;
    ``cliplab.embed``: the embedding engine). Importing a submodule sets it as an attribute of the package, which
    would hide the function (``cliplab.prompts(...)``: "'module' object is not callable"); here the function keeps the
    name. The submodules stay importable by their dotted path (``from cliplab.prompts import resolve_all``)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __dir__():
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API, "CliplabError", "ModelLoadError", "DatasetError", "ParameterError"]
