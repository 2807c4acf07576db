"""What every API function shares: models and datasets given as objects or as the CLI's strings, template sets,
the notebook progress and errors that name the API's own parameters."""
from __future__ import annotations

import contextlib
import functools
import inspect
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from cliplab.data import ImageDataset, SplitError, limit_dataset, load_dataset as _load_dataset
from cliplab.errors import DatasetParameterError, ModelParameterError, ParameterError
from cliplab.models import LoadedModel, check_options, load_model as _load_model
from cliplab.models.specs import ModelSpec, model_specs
from cliplab.progress import NotebookProgress, current, installed, note, use, warn
from cliplab.prompts import TemplateSet, resolve_all
from cliplab.train.tiny import DEFAULT_MODEL, ensure_tiny_model

F = TypeVar("F", bound=Callable)
Model = LoadedModel | str  # what a study takes as its model: a loaded one or a name
Data = ImageDataset | str | Path  # and as its dataset: a loaded one or a spec

# Library parameters whose API keyword has another name (the CLI spells them as flags: cli/options.FLAGS). The API
# keywords are the CLI's flags with underscores: --target, --text, --select-split, --descriptor, --gt, --query,
# --model (repeatable: a list), --models (the models file), --kmeans, --output-dir.
API_NAMES = {"template_sets": "templates", "rule": "target", "text_format": "text", "select_from": "select_split",
             "pooling": "descriptor", "gt_dir": "gt", "query_images": "query", "models": "model",
             "models_file": "models", "implementation": "kmeans", "out_dir": "output_dir"}


# The CLI's bounds on numbers (typer's min/max of the same flags; tests/api checks that they agree): checked before
# any work, as the CLI does, instead of a crash or a silently meaningless number later.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "limit": (1, None), "train_limit": (1, None), "topk": (1, None), "k": (1, None), "seeds": (1, None),
    "bootstrap": (100, None), "batch_size": (0, None), "workers": (0, None), "n_examples": (1, None),
    "levels": (1, None), "gem_p": (1.0, None), "pca_dim": (1, None), "qe": (0, None), "per_cluster": (1, None),
    "shard_batches": (1, None), "wd": (0.0, None), "val_fraction": (0.01, 1.0)}
FUNCTION_BOUNDS = {("probe", "val_fraction"): (0.01, 0.9)}


def api_name(param: str) -> str:
    return API_NAMES.get(param, param)


def check_bounds(function: str, arguments: dict) -> None:
    for key, value in arguments.items():
        lo, hi = FUNCTION_BOUNDS.get((function, key), BOUNDS.get(key, (None, None)))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue  # None (the default), or a list (cluster's k: checked by the study)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            where = (f"at least {lo}" if hi is None else f"between {lo} and {hi}")
            raise ParameterError(key, value, f"must be {where}")


def study(fn: F) -> F:
    """An API entry point: bars through ``tqdm.auto`` (none with ``quiet=True``), notes on stderr (none with
    ``quiet=True``), warnings through :mod:`warnings` (always) -- unless the caller installed its own progress with
    :func:`cliplab.progress.use`, which then gets them --, and :class:`~cliplab.errors.ParameterError`
    messages naming this function's keywords. A study result remembers the call (``command``: the function's name,
    as the CLI's command; ``config``: its arguments, defaults included), which ``save`` and ``to_json`` record as
    the CLI does; its notes are printed and its skipped inputs warned about, as the CLI does."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet = bool(kwargs.get("quiet", False))
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return fn(*args, **kwargs)  # Python's own message for a missing or unknown argument
        bound.apply_defaults()
        # a progress the caller installed (e.g. a web app's, with cliplab.progress.use) is kept; else tqdm bars
        with use(current() if installed() else NotebookProgress(quiet=quiet)):
            try:
                check_bounds(fn.__name__, bound.arguments)
                check_model_options(bound.arguments)
                out = fn(*args, **kwargs)
            except ParameterError as exc:
                exc.args = (exc.render(api_name),)
                raise
            if hasattr(out, "metric_rows"):
                out.command, out.config = fn.__name__, _config(bound.arguments)
                _report(out, quiet)
        return out

    return wrapper  # type: ignore[return-value]


def _report(result, quiet: bool) -> None:
    """What the CLI prints after a study besides its tables: skipped inputs (a warning: they change what the numbers
    mean) and the study's notes."""
    failures = list(result.failures)
    if failures:
        warn(f"{len(failures)} input(s) could not be used and are left out, e.g. {failures[0].id}: "
             f"{failures[0].reason} (all of them: .failures)")
    for message in getattr(result, "notes", ()):
        note(message, quiet)


def _config(arguments: dict) -> dict:
    """The call's arguments as JSON-friendly values (models and datasets by name)."""
    def plain(v):
        if isinstance(v, LoadedModel):
            return v.name
        if isinstance(v, ImageDataset):
            return f"{v.name} ({v.split})" if v.split else v.name
        if isinstance(v, ModelSpec):
            return v.name
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)

    return {k: plain(v) for k, v in arguments.items() if k not in ("quiet", "cache_dir", "workers")}


@contextlib.contextmanager
def renamed(names: dict[str, str]) -> Iterator[None]:
    """Inside: a :class:`ParameterError` about a library parameter names the API keyword that set it instead (e.g.
    ``split`` -> ``train_split`` where a function loads a second split)."""
    try:
        yield
    except ParameterError as exc:
        exc.param = names.get(exc.param, exc.param)
        for old, new in names.items():
            exc.message = exc.message.replace(f"{{p:{old}}}", f"{{p:{new}}}")
        exc.args = (exc.render(lambda p: p),)
        raise


def as_model(model: LoadedModel | str | Path, pretrained: str | None = None, *, device=None, precision=None,
             backend: str | None = "auto", cache_dir=None, quiet: bool = False, **options) -> LoadedModel:
    """A loaded model as it is (``pretrained``, ``device``, ``precision`` and ``backend`` must then match it or be
    left out), or a model name loaded (the shipped ``tiny-shapes`` installed on first use)."""
    if isinstance(model, LoadedModel):
        _check_loaded(model, pretrained=pretrained, device=device, precision=precision, backend=backend)
        return model
    if not isinstance(model, (str, Path)):
        raise ModelParameterError("model", type(model).__name__, "expected a model name (str) or a model from "
                                  "cliplab.load_model(...)", quote=False)
    if str(model) == DEFAULT_MODEL and pretrained is None:
        ensure_tiny_model(cache_dir, quiet=quiet)
    return _load_model(str(model), pretrained, device=device, precision=precision, cache_dir=cache_dir,
                       backend=backend, **options)


def _check_loaded(m: LoadedModel, **given) -> None:
    """Loading options given with an already loaded model must describe it (they cannot change it)."""
    import torch

    for key, value in given.items():
        if value is None or (key == "backend" and value == "auto"):
            continue
        have = getattr(m, key)
        if key == "device":
            want = torch.device(value) if not isinstance(value, torch.device) else value
            same = want.type == have.type and (want.index is None or want.index == have.index)
        else:
            same = value == have
        if not same:
            raise ModelParameterError(key, value, f"{{p:model}} {m.name} is already loaded with {key} {have}; load "
                                      f"it with cliplab.load_model(..., {key}={value!r}) to use that", quote=False)


def check_model_options(arguments: dict) -> None:
    """A call's ``device``, ``precision`` and ``backend``, checked before any work (as the CLI does), when it will
    load a model: a name in ``model`` (one or a list; none means the default name) or a ``models`` file. With loaded
    models only, :func:`as_model` checks that they match instead."""
    if not {"device", "precision", "backend"} <= arguments.keys():
        return
    given = arguments.get("model")
    items = given if isinstance(given, (list, tuple)) else [given]
    if arguments.get("models") is None and items and all(isinstance(m, LoadedModel) for m in items):
        return
    check_options(arguments["device"], arguments["precision"], arguments["backend"])


def model_for(model, pretrained, device, precision, backend, cache_dir, quiet) -> LoadedModel:
    """A study's model: a loaded one as it is (its options must then be left out), else loaded with them."""
    return as_model(model, pretrained, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                    quiet=quiet)


def as_dataset(data: ImageDataset | str | Path, *, split: str | None = None, data_root: str | None = None,
               limit: int | None = None, classnames: str | None = None, cache_dir=None,
               names: dict[str, str] | None = None) -> ImageDataset:
    """A dataset as it is (``split`` must then be its split or left out; ``limit`` takes a seeded subset of it, as
    for a spec), or a dataset spec loaded. ``names``: the API keywords of this call's parameters, for errors
    (e.g. ``{"dataset": "train", "split": "train_split", "limit": "train_limit"}``)."""
    names = names or {}
    with renamed(names):
        if isinstance(data, ImageDataset):
            if split is not None and split != data.split:
                raise DatasetParameterError("split", split, f"{{p:dataset}} {data.name} is already loaded with split "
                                           f"{data.split!r}; load the {split!r} split with "
                                           f"cliplab.load_dataset(..., split={split!r})")
            for key, value in (("data_root", data_root), ("classnames", classnames)):
                if value is not None:
                    raise DatasetParameterError(key, value, f"{{p:{key}}} is for loading a dataset, and "
                                                f"{{p:dataset}} {data.name} is already loaded; give it to "
                                                "cliplab.load_dataset(...)", prefix=False)
            return limit_dataset(data, limit)
        if not isinstance(data, (str, Path)):
            raise DatasetParameterError("dataset", type(data).__name__, "expected a dataset spec (str or path) or a "
                                        "dataset from cliplab.load_dataset(...)", quote=False)
        try:
            return _load_dataset(str(data), split=split, data_root=data_root, limit=limit, classnames=classnames,
                                 cache_dir=cache_dir)
        except SplitError as exc:
            hint = " (choose one with {p:split})" if exc.available else ""
            raise DatasetParameterError("split", split, f"{exc}{hint}") from None


def other_split(dataset, split: str | None, *, param: str, cache_dir=None, names: dict[str, str] | None = None,
                **kw) -> ImageDataset:
    """Another split of ``dataset`` (a spec), e.g. the one probes train on; ``param`` is the keyword naming it
    (``names``: other keywords of this load, e.g. ``{"limit": "train_limit"}``)."""
    if isinstance(dataset, ImageDataset):
        raise DatasetParameterError(param, split, f"{{p:dataset}} {dataset.name} is already loaded (split "
                                    f"{dataset.split!r}), so its {split!r} split cannot be loaded from it: give the "
                                    "dataset by name, or load that split with "
                                    f"cliplab.load_dataset(..., split={split!r})")
    return as_dataset(dataset, split=split, cache_dir=cache_dir, names={"split": param, **(names or {})}, **kw)


def as_list(value, single: tuple[type, ...]) -> list:
    """``value`` as a list: one item (an instance of ``single``) or None/empty -> a list."""
    if value is None:
        return []
    return [value] if isinstance(value, single) else list(value)


def as_ints(value, param: str) -> list[int]:
    """An int, a list of ints, or the CLI's comma-separated string ("1,2,4")."""
    if isinstance(value, str):
        try:
            return [int(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise ParameterError(param, value, "expected comma-separated integers, e.g. 1,2,4,8,16") from None
    if isinstance(value, int):
        return [value]
    out = list(value or [])
    if not all(isinstance(v, int) for v in out):
        raise ParameterError(param, out, "expected integers")
    return out


def as_specs(model, pretrained, models_file) -> list[ModelSpec | LoadedModel]:
    """The models of compare/search: ``model`` (one or a list: names, loaded models or :class:`ModelSpec`),
    ``pretrained`` paired by position with the names (as the CLI's repeated --model/--pretrained), after the entries
    of the ``models`` file."""
    if models_file is not None and not isinstance(models_file, (str, Path)):
        raise ParameterError("models_file", type(models_file).__name__, "{p:models_file} is a file (YAML/TOML/JSON "
                             "list of {model, pretrained, label}); give the models themselves as {p:models}=[...]",
                             prefix=False)
    items = as_list(model, (str, Path, LoadedModel, ModelSpec))
    pre = as_list(pretrained, (str,))
    if all(isinstance(m, (str, Path)) for m in items):
        return model_specs([str(m) for m in items], pre, models_file)
    if pre:
        raise ParameterError("pretrained", pre, "{p:pretrained} pairs with model names; with loaded models, load "
                             "each with cliplab.load_model(name, pretrained) instead", prefix=False)
    specs = model_specs([], [], models_file) if models_file else []
    return specs + [ModelSpec(str(m)) if isinstance(m, (str, Path)) else m for m in items]


def template_sets(templates: str | Sequence[str] | None, default: Sequence[str], *, ensemble: bool) -> list[TemplateSet]:
    """``templates`` as the CLI's --templates values (a named set, a file or a template string, or a list of them),
    else ``default``."""
    values = [str(templates)] if isinstance(templates, (str, Path)) else list(templates or [])
    return resolve_all(values or list(default), ensemble=ensemble)
