"""The Python API: every study one function call, named as its CLI command, returning the study's result object.

The functions are made from the studies' declarations (:mod:`cliplab.registry`, :mod:`cliplab.api.doors`): they take
what the CLI takes, as Python values (models and datasets as objects or as the CLI's strings, lists, paths), run the
same study code, and so give the CLI's numbers and store the same config. Results render inline in Jupyter (tables,
figures, image grids), print a text summary in a terminal, and export (``.metrics``, ``.to_json()``,
``.to_parquet()``, ``.save(results_dir)``). Progress bars use ``tqdm.auto``; ``quiet=True`` silences them. Errors
are Python exceptions (:class:`cliplab.CliplabError` and its subclasses) whose messages name the keyword arguments.
"""
from cliplab.api.doors import function
from cliplab.results.store import read_results

BUILTIN = ("load_model", "load_dataset", "embed", "embed_texts", "zeroshot", "prompts", "probe", "compare",
           "inspect", "attack", "retrieval", "search", "similar", "cluster")


def names() -> list[str]:
    """Every function of the API: the registered studies' and tools' (found on first use), and read_results."""
    from cliplab.registry import studies
    from cliplab.studies import discover

    discover()
    return [s.name for s in studies() if "api" in s.doors] + ["read_results"]


def __getattr__(name: str):
    fn = function(name) if not name.startswith("_") else None
    if fn is None:
        raise AttributeError(f"module 'cliplab.api' has no attribute {name!r}")
    return fn


def __dir__():
    return sorted({*globals(), *names()})


__all__ = [*BUILTIN, "read_results"]
