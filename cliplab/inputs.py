"""What a study runs on, loaded once below every door: the shared parameters (model, dataset, templates, the split
fitted on, run options), declared once here, and :func:`load_inputs`, which turns their values into
:class:`Inputs` -- models, datasets, the split each fits or selects on, template sets, and :class:`RunOptions`
(device, precision, backend, the cache folder resolved once, batch size, workers, cache on/off, pipeline).

The CLI, the Python API and any later door (a web server) call the same :func:`load_inputs` with library parameter
names and get the same objects, the same errors (:class:`~cliplab.errors.ParameterError`, spelled by each door) and
the same run ``config``. Checks run cheapest first: values, templates, device and precision, that the cache can be
written (when it is on), then the dataset and the fitted split, then the model (the slow part).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from cliplab.errors import DatasetParameterError, ModelParameterError, ParameterError
from cliplab.paths import require_writable
from cliplab.params import (BOOL, DATASET, DATASETS, FLOAT, INT, MODEL, MODELS, PATH, REQUIRED, STR, STRS, Kind,
                            Param, plain)

if TYPE_CHECKING:  # loading them imports torch: only when a model or dataset is loaded
    from cliplab.data.base import ImageDataset
    from cliplab.models.base import LoadedModel
    from cliplab.models.specs import ModelSpec
    from cliplab.prompts import TemplateSet

DEFAULT_MODEL = "tiny-shapes"
DEFAULT_DATASET = "shapes"
SPLIT_OR_DATASET = Kind("split", "str | ImageDataset")

def _backend_names() -> tuple[str, ...]:
    from cliplab.models.backends import names

    return names()


# ---- the shared parameters, each declared once ----
MODEL_P = Param("model", MODEL, DEFAULT_MODEL, short="-m", help=(
    "open_clip architecture (ViT-B-32; OpenAI's spellings such as ViT-B/32 or ViT-L/14@336px mean that "
    "architecture with the openai weights), hf-hub:org/name, local-dir:FOLDER, a model-config .json, hf:org/name "
    "(transformers), or a model trained by `cliplab train` (see `cliplab models`){py:, or a model from "
    "cliplab.load_model}."))
PRETRAINED_P = Param("pretrained", STR, None, short="-p", help=(
    "pretrained tag (openai, laion2b_s34b_b79k, ...) or a checkpoint file (.pt/.bin/.safetensors)."))
MODELS_P = Param("model", MODELS, None, short="-m", help=(
    "repeatable: the models, side by side (default: tiny-shapes); paired by position with {p:pretrained}."))
PRETRAINEDS_P = Param("pretrained", STRS, None, short="-p", help=(
    "repeatable; paired by position with {p:model} ('none' for a model without a tag)."))
MODELS_FILE_P = Param("models_file", PATH, None, flag="--models", keyword="models", help=(
    "YAML/TOML/JSON list of {model, pretrained, label} (compared before {p:model})."), hint=(
    "{p:models_file} is a file (YAML/TOML/JSON list of {model, pretrained, label}); give the models themselves as "
    "{p:model}=[...]"))
DATASET_P = Param("dataset", DATASET, DEFAULT_DATASET, short="-d", help=(
    "shapes[:ATTRIBUTE], a torchvision name (cifar10, cifar100, food101, eurosat, stl10, flowers102, oxford_pets,"
    " dtd, mnist), a folder of class subfolders or images, a manifest or caption file (.csv/.tsv/.jsonl/.parquet,"
    " FILE#image=COL,label=COL), webdataset .tar shards (a shard, folder or pattern, CLIP_benchmark ROOT; wds:PATH),"
    " a Hugging Face dataset (a save_to_disk folder, hf-datasets:org/name); manifests and shards may be URLs{py:; or "
    "a dataset from cliplab.load_dataset}."))
DATASETS_P = Param("dataset", DATASETS, None, short="-d", help="repeatable: the datasets (default: shapes).")
SPLIT_P = Param("split", STR, None, help=(
    "dataset split (named datasets: default test; a folder with split subfolders needs it). A split that does not "
    "exist is an error listing those that do."))
DATA_ROOT_P = Param("data_root", STR, None, help="where torchvision datasets are (downloaded when online).")
LIMIT_P = Param("limit", INT, None, min=1, help="use a seeded random subset of N images.")
CLASSNAMES_P = Param("classnames", STR, None, help=(
    "class names file (.txt one per line, or .json list/map); names the class numbers of manifests, tar shards and "
    "Hugging Face integer label columns."))
TRAIN_SPLIT_P = Param("train_split", SPLIT_OR_DATASET, "train", help=(
    "the split fitted on{py: (or a loaded dataset)}; never the evaluated split."))
TRAIN_LIMIT_P = Param("train_limit", INT, None, min=1, help="seeded subset of N images of the split fitted on.")
TEMPLATES_P = Param("templates", STRS, None, short="-t", help=(
    "repeatable: a named set (simple, bare, openai-imagenet-80, openai-imagenet-7, openai-cifar, openai-eurosat, "
    "openai-food101), a .txt/.json file, or a template like 'a sketch of a {}.' (default: the dataset's usual "
    "set)."))
TEMPLATE_P = Param("templates", STR, None, short="-t", help=(
    "one template set: a named set, a .txt/.json file or a template like 'a sketch of a {}.' (default: the "
    "dataset's usual set)."))
DEVICE_P = Param("device", STR, None, help="cpu, cuda, cuda:1 (default: cuda if available).")
PRECISION_P = Param("precision", STR, None, choices=("fp32", "amp", "amp_bf16", "fp16", "bf16"), help=(
    "default: amp on GPU, fp32 on CPU."))
BACKEND_P = Param("backend", STR, "auto", choices=_backend_names(), help=(
    "what runs the towers: auto (on the CPU with OpenVINO installed: the faster of torch and openvino, measured once "
    "per CPU, model and batch size and cached; torch for a few images; else torch), torch, or openvino (CPU; each "
    "tower converted once and cached; fp32, or {p:precision} bf16). Gradient-based work always uses torch."))
CACHE_DIR_P = Param("cache_dir", PATH, None, config=False, help=(
    "embedding/model/dataset cache (default: user cache dir, or $CLIPLAB_CACHE_DIR)."))
BATCH_SIZE_P = Param("batch_size", INT, 64, min=0, help="images per batch; 0 = chosen from free GPU memory (64 on CPU).")
WORKERS_P = Param("workers", INT, None, min=0, config=False, help="DataLoader worker processes (default: automatic).")
NO_CACHE_P = Param("no_cache", BOOL, False, config=False, help="recompute embeddings and don't write the cache.")
PIPELINE_P = Param("pipeline", STR, "pil", choices=("pil", "tensor", "auto"), help=(
    "image preprocessing: pil (open_clip's transform, the reference), tensor (torchvision decoding + batched tensor "
    "resize/normalise; JPEGs decoded on the GPU), auto (tensor on CUDA, else pil)."))
METRIC_P = Param("metric", STR, "cosine", choices=("cosine", "dot", "euclidean"), help=(
    "how embeddings are compared: cosine (the default, and what CLIP models are trained for), dot (dot product of the "
    "raw, not normalised, embeddings) or euclidean (L2 distance of the raw embeddings, nearest first; scores shown "
    "are distances). Results are keyed by it (variant ... metric=dot), FAISS indexes built for it."))
LONG_TEXT_P = Param("long_text", STR, "truncate", choices=("truncate", "windows"), help=(
    "prompts longer than the text tower's context (77 tokens for most CLIPs): truncate (cut them, as open_clip and "
    "transformers do; the run warns how many were cut and by how much) or windows (embed each whole: its tokens split "
    "into context-sized windows, the unit-normalised window embeddings averaged and renormalised; prompts that fit "
    "are embedded as with truncate)."))
QUIET_P = Param("quiet", BOOL, False, short="-q", config=False, help=(
    "no progress bars or notes (result tables, warnings and errors still print)."))

ONE_MODEL = (MODEL_P, PRETRAINED_P)
IMAGES = (DATASET_P, SPLIT_P, DATA_ROOT_P, LIMIT_P, CLASSNAMES_P)
RUN = (DEVICE_P, PRECISION_P, BACKEND_P, CACHE_DIR_P, BATCH_SIZE_P, WORKERS_P, NO_CACHE_P, PIPELINE_P)
TEXTS = (LONG_TEXT_P,)  # for every study that embeds texts
LOADING = (DEVICE_P, PRECISION_P, BACKEND_P, CACHE_DIR_P)  # how a model is loaded, for what embeds no images


@dataclass(frozen=True)
class Fitting:
    """The split a study fits or selects on, beside the evaluated one: named by the parameter ``split`` (a split of
    the same dataset, or a loaded dataset), ``limit`` (a seeded subset of it), ``dataset`` (a parameter naming
    another dataset to take it from), turned on by the parameter ``when`` (always, when None). It must share no
    image and the same classes with the evaluated split (the study checks, naming ``purpose``)."""
    split: str = "train_split"
    limit: str | None = "train_limit"
    dataset: str | None = None
    when: str | None = None
    purpose: str = "probe training"


@dataclass(frozen=True)
class Templates:
    """How a study's template sets are chosen: the user's (the ``templates`` parameter), else ``default`` (empty:
    the dataset's own templates, else its usual named set, else ``simple``); merged into one set when ``ensemble``
    is True or names a parameter that is True; ``one``: the study uses one set (the first)."""
    default: tuple[str, ...] = ()
    ensemble: bool | str = False
    one: bool = False


@dataclass(frozen=True)
class RunOptions:
    """How the towers run and where the cache is, for everything a study embeds: resolved once per run."""
    cache_dir: Path | None = None
    batch_size: int = 64
    workers: int | None = None
    use_cache: bool = True
    pipeline: str = "pil"
    device: str | None = None
    precision: str | None = None
    backend: str = "auto"
    long_text: str = "truncate"  # prompts longer than the text context: truncate | windows (cliplab.embed.long_text)

    @classmethod
    def of(cls, cache_dir: str | os.PathLike | None = None, **options) -> "RunOptions":
        """Options with the cache folder resolved (``$CLIPLAB_CACHE_DIR`` or the user cache dir when None; created
        where something is written into it)."""
        from cliplab.paths import cache_dir_path

        return cls(cache_dir=cache_dir_path(cache_dir), **options)

    def but(self, **changes) -> "RunOptions":
        return replace(self, **changes)


def as_options(options: "RunOptions | str | os.PathLike | None", **changes) -> RunOptions:
    """``options`` as :class:`RunOptions`: as they are, or a cache folder with the default options; ``changes``
    replace some of them."""
    out = options if isinstance(options, RunOptions) else RunOptions.of(options)
    if out.cache_dir is None:
        out = out.but(cache_dir=RunOptions.of(None).cache_dir)
    return out.but(**changes) if changes else out


@dataclass
class Inputs:
    """A study's inputs, loaded: ``model`` (one) or ``models`` (specs or loaded models, for studies that compare
    several: open each with :meth:`open_model`), the evaluated ``datasets`` with the split each fits on
    (``fitting``, None where there is none) and its template sets, and the run ``options``. ``values``: every
    parameter's checked value (library names)."""
    options: RunOptions
    values: dict[str, Any] = field(default_factory=dict)
    model: "LoadedModel | None" = None
    models: list = field(default_factory=list)
    datasets: list = field(default_factory=list)
    fitting: list = field(default_factory=list)
    template_sets: list = field(default_factory=list)

    @property
    def dataset(self) -> "ImageDataset | None":
        return self.datasets[0] if self.datasets else None

    @property
    def train(self) -> "ImageDataset | None":
        return self.fitting[0] if self.fitting else None

    @property
    def templates(self) -> "list[TemplateSet]":
        return self.template_sets[0] if self.template_sets else []

    @classmethod
    def of(cls, model=None, dataset=None, *, train=None, template_sets=None, options: RunOptions | None = None,
           **values) -> "Inputs":
        """Inputs from loaded objects (for code that already has them, e.g. the demo and tests)."""
        return cls(as_options(options), values, model, [], [dataset] if dataset is not None else [],
                   [train] if dataset is not None else [], [list(template_sets or [])])

    def open_model(self, spec: "ModelSpec | LoadedModel") -> "LoadedModel":
        """A model of ``models``, loaded with this run's options (a loaded one as it is)."""
        from cliplab.models.base import LoadedModel

        if isinstance(spec, LoadedModel):
            return spec
        return open_model(spec.model, spec.pretrained, self.options, images=self.images)

    @property
    def images(self) -> int | None:
        """How many images the run reads (its datasets and the splits they fit on): what ``--backend auto`` weighs
        a conversion against; None when there is no dataset."""
        sets = [d for d in (*self.datasets, *self.fitting) if d is not None]
        return sum(len(d) for d in sets) if sets else None

    def open_dataset(self, spec, *, param: str, split: str | None = None) -> "ImageDataset":
        """Another dataset a study reads (e.g. the images a PCA is learned on), errors naming ``param``."""
        return open_dataset(spec, self.options, names={"dataset": param}, split=split,
                            data_root=self.values.get("data_root"))


# ---- loading ----

def open_model(model: str, pretrained: str | None, options: RunOptions, images: int | None = None,
               **extra) -> "LoadedModel":
    """A model loaded by name with the run's device, precision, backend and batch size (``images``: how many images
    the run reads, for ``--backend auto``; ``extra``: channels_last, compile, force_quick_gelu). A model the memo
    knows loads only when first needed."""
    from cliplab.models.memo import open_model as load

    return load(str(model), pretrained, device=options.device, precision=options.precision,
                cache_dir=options.cache_dir, backend=options.backend, memo=options.use_cache,
                batch_size=options.batch_size or None, images=images, **extra)


def open_dataset(data, options: RunOptions, *, split=None, data_root=None, limit=None, classnames=None,
                 names: dict[str, str] | None = None) -> "ImageDataset":
    """A dataset as it is (``split`` must then be its split or left out; ``limit`` takes a seeded subset of it, as
    for a spec), or a dataset spec loaded. ``names``: the parameters that set these values when they are not the
    usual ones (e.g. ``{"split": "train_split", "limit": "train_limit"}``), for errors."""
    from cliplab.data import ImageDataset, SplitError, limit_dataset, open_dataset as load

    names = names or {}
    n = lambda key: names.get(key, key)  # noqa: E731
    if isinstance(data, ImageDataset):
        if split is not None and split != data.split:
            raise DatasetParameterError(n("split"), split, f"{{p:{n('dataset')}}} {data.name} is already loaded with "
                                        f"split {data.split!r}; load the {split!r} split with "
                                        f"cliplab.load_dataset(..., split={split!r})")
        for key, value in (("data_root", data_root), ("classnames", classnames)):
            if value is not None:
                raise DatasetParameterError(n(key), value, f"{{p:{n(key)}}} is for loading a dataset, and "
                                            f"{{p:{n('dataset')}}} {data.name} is already loaded; give it to "
                                            "cliplab.load_dataset(...)", prefix=False)
        return limit_dataset(data, limit, param=n("limit"))
    if not isinstance(data, (str, os.PathLike)):
        raise DatasetParameterError(n("dataset"), type(data).__name__, "expected a dataset spec (str or path) or a "
                                    "dataset from cliplab.load_dataset(...)", quote=False)
    try:
        return load(os.fspath(data), split=split, data_root=data_root, limit=limit, classnames=classnames,
                    cache_dir=options.cache_dir, names=names)
    except SplitError as exc:
        hint = f" (choose one with {{p:{n('split')}}})" if exc.available else ""
        raise DatasetParameterError(n("split"), split, f"{exc}{hint}") from None


def _check_loaded(m: "LoadedModel", options: RunOptions, pretrained: str | None) -> None:
    """Loading options given with an already loaded model must describe it (they cannot change it)."""
    import torch

    given = {"pretrained": pretrained, "device": options.device, "precision": options.precision,
             "backend": options.backend}
    for key, value in given.items():
        if value is None or (key == "backend" and value == "auto"):
            continue
        have = getattr(m, key)
        if key == "device":
            want = torch.device(value)
            same = want.type == have.type and (want.index is None or want.index == have.index)
        else:
            same = value == have
        if not same:
            raise ModelParameterError(key, value, f"{{p:model}} {m.name} is already loaded with {key} {have}; load "
                                      f"it with cliplab.load_model(..., {key}={value!r}) to use that", quote=False)


def _model(value, pretrained, options: RunOptions, extra: dict, images: int | None = None) -> "LoadedModel":
    from cliplab.models.base import LoadedModel

    if isinstance(value, LoadedModel):
        if extra:
            raise ModelParameterError(next(iter(extra)), None, f"{', '.join('{p:' + k + '}' for k in extra)} are for "
                                      "loading a model, and {p:model} is already loaded", prefix=False)
        _check_loaded(value, options, pretrained)
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise ModelParameterError("model", type(value).__name__, "expected a model name (str) or a model from "
                                  "cliplab.load_model(...)", quote=False)
    return open_model(os.fspath(value), pretrained, options, images=images, **extra)


def _specs(values: dict, options: RunOptions) -> list:
    """The models of a study of several: names paired with pretrained tags (after a models file), or loaded ones."""
    from cliplab.models.base import LoadedModel
    from cliplab.models.specs import ModelSpec, model_specs

    items = list(values.get("model") or ())
    pre = list(values.get("pretrained") or ())
    models_file = values.get("models_file")
    if not items and models_file is None:
        items = [DEFAULT_MODEL]
    if all(isinstance(m, (str, os.PathLike)) for m in items):
        return model_specs([os.fspath(m) for m in items], pre, models_file)
    if pre:
        raise ParameterError("pretrained", pre, "{p:pretrained} pairs with model names; with loaded models, load "
                             "each with cliplab.load_model(name, pretrained) instead", prefix=False)
    out = model_specs([], [], models_file) if models_file else []
    for m in items:
        if isinstance(m, LoadedModel):
            _check_loaded(m, options, None)
            out.append(m)
        elif isinstance(m, (str, os.PathLike, ModelSpec)):
            out.append(ModelSpec(os.fspath(m)) if not isinstance(m, ModelSpec) else m)
        else:
            raise ModelParameterError("model", type(m).__name__, "expected model names or models from "
                                      "cliplab.load_model(...)", quote=False)
    return out


def _template_sets(values: dict, policy: Templates | None, dataset) -> "list[TemplateSet]":
    from cliplab.prompts import resolve_all

    if policy is None:
        return []
    ensemble = policy.ensemble if isinstance(policy.ensemble, bool) else bool(values.get(policy.ensemble))
    given = values.get("templates")
    given = [given] if isinstance(given, str) else list(given or ())
    if given:
        sets = resolve_all(given, ensemble=ensemble)
    elif policy.default:
        sets = resolve_all(list(policy.default), ensemble=ensemble)
    else:
        sets = dataset_templates(dataset, ensemble=ensemble)
    return sets[:1] if policy.one else sets


def dataset_templates(dataset, ensemble: bool = True) -> "list[TemplateSet]":
    """The templates a dataset comes with (its own list, else its usual named set, else ``simple``)."""
    from cliplab.prompts import TemplateSet, resolve_all

    own = getattr(dataset, "templates", None) if dataset is not None else None
    if own:
        return [TemplateSet(f"{dataset.name} templates", tuple(own))]
    hint = getattr(dataset, "templates_hint", None) if dataset is not None else None
    return resolve_all([hint or "simple"], ensemble=ensemble)


def load_inputs(values: dict[str, Any], *, fitting: Fitting | None = None, templates: Templates | None = None,
                model_extra: Sequence[str] = ()) -> Inputs:
    """Load what ``values`` (checked parameter values, library names) name: templates, then device and precision,
    then the dataset(s) and the split each fits on, then the model(s); the first bad value raises a
    :class:`ParameterError` naming its parameter. ``model_extra``: parameters passed on to the model loader
    (``channels_last``, ``compile``, ``force_quick_gelu``)."""
    from cliplab.models.memo import check_options
    from cliplab.prompts import resolve_all

    options = RunOptions.of(values.get("cache_dir"), batch_size=values.get("batch_size", 64),
                            workers=values.get("workers"), use_cache=not values.get("no_cache", False),
                            pipeline=values.get("pipeline", "pil"), device=values.get("device"),
                            precision=values.get("precision"), backend=values.get("backend") or "auto",
                            long_text=values.get("long_text") or "truncate")
    inputs = Inputs(options, dict(values))
    given = values.get("templates")
    if given:  # a bad template file fails before anything is loaded
        resolve_all([given] if isinstance(given, str) else list(given))
    model = values.get("model")
    loads_model = "model" in values and (model is None or isinstance(model, (str, os.PathLike, tuple))
                                         and not _all_loaded(model))
    if loads_model or "models_file" in values:
        check_options(options.device, options.precision, options.backend, options.cache_dir)
    if options.use_cache and "no_cache" in values:  # a study that embeds: before anything is loaded or computed
        require_writable(options.cache_dir, options.cache_dir / "embeddings")

    if "dataset" in values:
        data = values["dataset"]
        many = isinstance(data, tuple)
        items = list(data) if many else ([data] if data is not None else [])
        if many and not items:
            items = [DEFAULT_DATASET]
        for d in items:
            ds = open_dataset(d, options, split=values.get("split"), data_root=values.get("data_root"),
                              limit=values.get("limit"), classnames=values.get("classnames"))
            inputs.datasets.append(ds)
            inputs.fitting.append(_fitting(d, ds, values, fitting, options))
            inputs.template_sets.append(_template_sets(values, templates, ds))
    if not inputs.template_sets and templates is not None:  # no dataset: the user's sets, else the default
        inputs.template_sets.append(_template_sets(values, templates, None))

    if "model" in values:
        extra = {k: values[k] for k in model_extra if values.get(k) not in (None, False)}
        if isinstance(model, tuple) or "models_file" in values:
            inputs.models = _specs(values, options)
        else:
            inputs.model = _model(model, values.get("pretrained"), options, extra, inputs.images)
    return inputs


def _all_loaded(model) -> bool:
    items = model if isinstance(model, tuple) else (model,)
    return bool(items) and all(not isinstance(m, (str, os.PathLike)) for m in items)


def _fitting(spec, evaluated, values: dict, fitting: Fitting | None, options: RunOptions):
    """The split ``evaluated`` fits on (None when the study has none or it is turned off)."""
    from cliplab.data import ImageDataset

    if fitting is None or (fitting.when is not None and not values.get(fitting.when)):
        return None
    split = values.get(fitting.split)
    limit = values.get(fitting.limit) if fitting.limit else None
    names = {"split": fitting.split, "dataset": fitting.dataset or "dataset", "limit": fitting.limit or "limit"}
    source = values.get(fitting.dataset) if fitting.dataset else None
    if isinstance(split, ImageDataset):  # a loaded split given in the split's place
        return open_dataset(split, options, limit=limit, names={**names, "dataset": fitting.split})
    if source is not None:
        loaded = isinstance(source, ImageDataset)
        return open_dataset(source, options, split=None if loaded else split, limit=limit,
                            data_root=None if loaded else values.get("data_root"), names=names)
    if isinstance(spec, ImageDataset):
        hint = (f"give the split {fitting.purpose} uses as {{p:{fitting.dataset}}}, e.g. {{p:{fitting.dataset}}}="
                f"cliplab.load_dataset(..., split={split!r})" if fitting.dataset else
                f"give the dataset by name, or load that split with cliplab.load_dataset(..., split={split!r})")
        raise DatasetParameterError(fitting.split, split, f"{{p:dataset}} {spec.name} is already loaded (split "
                                    f"{spec.split!r}), so its {split!r} split cannot be loaded from it: {hint}")
    return open_dataset(spec, options, split=split, data_root=values.get("data_root"), limit=limit,
                        classnames=values.get("classnames"), names=names)


# ---- the run's config: the same from every door ----

def describe(value) -> Any:
    """A model or dataset as a run's config names it: the spec it was loaded from (a loaded model by the name it was
    asked for, a model spec as ``{model, pretrained, label}``, a loaded dataset by its ``--dataset`` value)."""
    if isinstance(value, tuple):
        return [describe(v) for v in value]
    spec = getattr(value, "spec", None)
    if isinstance(spec, dict):  # a loaded model
        return spec.get("model")
    if spec is not None:  # a loaded dataset
        return spec
    if hasattr(value, "model") and hasattr(value, "label"):  # a ModelSpec
        return {"model": value.model, "pretrained": value.pretrained, "label": value.label}
    return plain(value)


def _named(model) -> tuple[str, str | None]:
    """(name, pretrained) of a model spec or a loaded model, as asked for."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, dict):
        return spec.get("model"), spec.get("pretrained")
    return model.model, model.pretrained


def run_config(params: Sequence[Param], values: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    """The run's configuration as the store and every ``--output`` JSON record it: each parameter that changes a
    number, by its library name, as given (models and datasets by the spec they were loaded from), with the split,
    device, precision and backend as resolved."""
    out: dict[str, Any] = {}
    for p in params:
        if not p.config or p.name not in values:
            continue
        value = values[p.name]
        if p.kind.name == "split" and not isinstance(value, (str, type(None))):  # a loaded split: its name
            value = value.split
        out[p.name] = describe(value) if p.kind.name in ("model", "models", "dataset", "datasets") else plain(value)
    model, data = values.get("model"), values.get("dataset")
    if isinstance(getattr(model, "spec", None), dict) and out.get("pretrained") is None:  # a loaded model
        out["pretrained"] = model.spec.get("pretrained")
    if isinstance(model, tuple) and "model" in out:  # several: the models compared, defaults and files resolved
        named = [_named(m) for m in inputs.models]
        out["model"], out["pretrained"] = [n for n, _ in named], [p for _, p in named]
    if isinstance(data, tuple) and "dataset" in out:
        out["dataset"] = [describe(d) for d in inputs.datasets]
    if out.get("limit") is None and getattr(data, "limit", None):  # a loaded subset: the limit it was loaded with
        out["limit"] = data.limit
    if "split" in out and inputs.datasets:
        splits = [d.split for d in inputs.datasets]
        out["split"] = splits if isinstance(data, tuple) else splits[0]
    if inputs.model is not None:
        for key in ("device", "precision", "backend"):
            if key in out:
                out[key] = str(getattr(inputs.model, key))
    return out


__all__ = ["METRIC_P", "Inputs", "RunOptions", "Fitting", "Templates", "load_inputs", "open_model", "open_dataset",
           "as_options", "run_config", "describe", "dataset_templates", "REQUIRED", "FLOAT"]
