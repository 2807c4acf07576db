"""What every API function shares: models and datasets given as objects or as the CLI's strings, template sets,
the notebook progress and errors that name the API's own parameters."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from cliplab.data import ImageDataset, limit_dataset, load_dataset as _load_dataset
from cliplab.errors import ParameterError
from cliplab.models import LoadedModel, load_model as _load_model
from cliplab.progress import NotebookProgress, Silent, use
from cliplab.prompts import TemplateSet, resolve_all
from cliplab.train.tiny import DEFAULT_MODEL, ensure_tiny_model

F = TypeVar("F", bound=Callable)

# Library parameters whose API keyword has another name (the CLI spells them as flags: cli/options.FLAGS).
API_NAMES = {"template_sets": "templates", "rule": "target", "text_format": "text", "select_from": "select_split",
             "pooling": "descriptor", "gt_dir": "gt", "query_images": "query", "models_file": "models",
             "implementation": "kmeans", "out_dir": "output_dir"}


def api_name(param: str) -> str:
    return API_NAMES.get(param, param)


def study(fn: F) -> F:
    """An API entry point: bars through ``tqdm.auto`` (silent with ``quiet=True``), warnings through
    :mod:`warnings`, and :class:`~cliplab.errors.ParameterError` messages naming this function's keywords. A study
    result remembers the call (``command``: the function's name, as the CLI's command; ``config``: its arguments),
    which ``save`` and ``to_json`` record as the CLI does."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with use(Silent() if kwargs.get("quiet") else NotebookProgress()):
            try:
                out = fn(*args, **kwargs)
            except ParameterError as exc:
                exc.args = (exc.render(api_name),)
                raise
        if hasattr(out, "metric_rows"):
            out.command, out.config = fn.__name__, _config(signature.bind(*args, **kwargs).arguments)
        return out

    return wrapper  # type: ignore[return-value]


def _config(arguments: dict) -> dict:
    """The call's arguments as JSON-friendly values (models and datasets by name)."""
    def plain(v):
        if isinstance(v, LoadedModel):
            return v.name
        if isinstance(v, ImageDataset):
            return f"{v.name} ({v.split})" if v.split else v.name
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)

    return {k: plain(v) for k, v in arguments.items() if k not in ("quiet", "cache_dir", "workers")}


def as_model(model: LoadedModel | str, pretrained: str | None = None, *, device=None, precision=None,
             backend: str = "auto", cache_dir=None, quiet: bool = False) -> LoadedModel:
    """A loaded model as it is, or a model name loaded (the shipped ``tiny-shapes`` installed on first use)."""
    if isinstance(model, LoadedModel):
        return model
    if model == DEFAULT_MODEL and pretrained is None:
        ensure_tiny_model(cache_dir, quiet=quiet)
    return _load_model(model, pretrained, device=device, precision=precision, cache_dir=cache_dir, backend=backend)


def as_dataset(data: ImageDataset | str | Path, *, split: str | None = None, data_root: str | None = None,
               limit: int | None = None, classnames: str | None = None, cache_dir=None,
               param: str = "dataset") -> ImageDataset:
    """A dataset as it is (``split`` and ``limit`` must then be left out), or a dataset spec loaded."""
    if isinstance(data, ImageDataset):
        if split is not None and split != data.split:
            raise ParameterError(param, data.name, f"is already loaded (split {data.split!r}); load the "
                                 f"{split!r} split with cliplab.load_dataset(..., split={split!r})")
        return limit_dataset(data, limit)
    return _load_dataset(str(data), split=split, data_root=data_root, limit=limit, classnames=classnames,
                         cache_dir=cache_dir)


def template_sets(templates: str | Sequence[str] | None, default: Sequence[str], *, ensemble: bool) -> list[TemplateSet]:
    """``templates`` as the CLI's --templates values (a named set, a file or a template string, or a list of them),
    else ``default``."""
    values = [templates] if isinstance(templates, str) else list(templates or [])
    return resolve_all(values or list(default), ensemble=ensemble)
