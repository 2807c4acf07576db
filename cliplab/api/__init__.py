"""The Python API: every study one function call, named as its CLI command, returning the study's result object.

The functions take what the CLI takes, as Python values (models and datasets as objects or as the CLI's strings,
lists, paths), call the same ``run_*`` code, and so give the CLI's numbers. Results render inline in Jupyter (tables,
figures, image grids), print a text summary in a terminal, and export (``.metrics``, ``.to_json()``,
``.to_parquet()``, ``.save(results_dir)``). Progress bars use ``tqdm.auto``; ``quiet=True`` silences them. Errors
are Python exceptions (:class:`cliplab.CliplabError` and its subclasses) whose messages name the keyword arguments.
"""
from cliplab.api.classify import attack, compare, inspect, probe, prompts, zeroshot
from cliplab.api.data import embed, embed_texts, load_dataset, load_model
from cliplab.api.retrieve import cluster, retrieval, search, similar
from cliplab.results.store import read_results

__all__ = ["load_model", "load_dataset", "embed", "embed_texts", "zeroshot", "prompts", "probe", "compare",
           "inspect", "attack", "retrieval", "search", "similar", "cluster", "read_results"]
