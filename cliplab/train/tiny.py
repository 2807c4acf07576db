"""The offline default model: ``tiny-shapes``, a tiny CLIP trained on the ``shapes`` data with the recipe in
:mod:`cliplab.train.trainer` and shipped with the package."""
from __future__ import annotations

from pathlib import Path

from cliplab.errors import CliplabError
from cliplab.models.local import find_local_model
from cliplab.paths import resolve_cache_dir
from cliplab.progress import note

DEFAULT_MODEL = "tiny-shapes"


def ensure_tiny_model(cache_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """The folder of the ``tiny-shapes`` model that ``--model tiny-shapes`` uses: the one shipped with the package,
    or a cache copy trained with ``cliplab train --name tiny-shapes --force`` (a note says so). Nothing is trained."""
    cache = resolve_cache_dir(cache_dir)
    found = find_local_model(DEFAULT_MODEL, cache)
    if found is None:
        raise CliplabError(f"the shipped {DEFAULT_MODEL} model is missing from this cliplab installation "
                           f"(cliplab/models/weights/{DEFAULT_MODEL}); reinstall cliplab")
    if not found.shipped:
        note(f"--model {DEFAULT_MODEL} is the model trained with --force in {found.folder}, not the one shipped "
             "with cliplab; remove that folder to use the shipped one again", quiet)
    return found.folder
