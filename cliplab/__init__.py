"""cliplab: evaluate CLIP-style vision-language models — cached, reproducible, fast.

Data flows one way: model + dataset -> cached embeddings -> task -> result rows -> report.

From Python, every study is one call (:mod:`cliplab.api`)::

    import cliplab
    m = cliplab.load_model("tiny-shapes")
    r = cliplab.zeroshot(m, "shapes:color")
    r.metrics

``import cliplab`` stays light: the API (and torch with it) is imported on first use of one of its names.
"""
from cliplab.version import __version__
from cliplab.errors import CliplabError, DatasetError, ModelLoadError, ParameterError

_API = ("load_model", "load_dataset", "embed", "embed_texts", "zeroshot", "prompts", "probe", "compare", "inspect",
        "attack", "retrieval", "search", "similar", "cluster", "read_results")


def __getattr__(name: str):
    if name in _API:
        from cliplab import api  # heavy (torch, open_clip): only when a study function is first used

        return getattr(api, name)
    raise AttributeError(f"module 'cliplab' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API, "CliplabError", "ModelLoadError", "DatasetError", "ParameterError"]
