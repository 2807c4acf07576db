"""The offline default model: ``tiny-shapes``, a tiny CLIP trained on the ``shapes`` data with the recipe in
:mod:`cliplab.train.trainer` and shipped with the package."""
from __future__ import annotations

from pathlib import Path

from cliplab.errors import CliplabError
from cliplab.models.local import find_local_model
from cliplab.paths import resolve_cache_dir

DEFAULT_MODEL = "tiny-shapes"


def ensure_tiny_model(cache_dir: str | Path | None = None) -> Path:
    """The folder of the ``tiny-shapes`` model that ``--model tiny-shapes`` uses: the one shipped with the package,
    or a cache copy trained with ``cliplab train --name tiny-shapes --force``. Nothing is trained (loading it says
    which copy is used: :func:`cliplab.models.open_model`)."""
    cache = resolve_cache_dir(cache_dir)
    found = find_local_model(DEFAULT_MODEL, cache)
    if found is None:
        raise CliplabError(f"the shipped {DEFAULT_MODEL} model is missing from this cliplab installation "
                           f"(cliplab/models/weights/{DEFAULT_MODEL}); reinstall cliplab")
    return found.folder
