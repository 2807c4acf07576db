"""Classification studies from Python: zeroshot, prompts, probe, compare, inspect, attack. Each calls the same
``run_*`` as its CLI command, with the same defaults, so the numbers are the CLI's.

Keywords are the CLI's flags with underscores (``--select-split`` is ``select_split``); flags that name output files
(``--output``, ``--predictions``, ``--figures``, ``--examples``, ``--plot``, ``--results``) are the result's methods
and attributes instead (``.to_json()``, ``.predictions``, ``.save()``, inline figures)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cliplab.api._inputs import (Data, Model, model_for as _model, as_dataset, as_ints, as_list, as_model, as_specs, other_split,
                                 study, template_sets)
from cliplab.attacks import TypographicParams
from cliplab.data import ImageDataset
from cliplab.errors import ParameterError
from cliplab.models import LoadedModel
from cliplab.models.specs import ModelSpec
from cliplab.studies.attack import AttackResult, run_typographic
from cliplab.studies.compare import CompareRun, run_compare
from cliplab.studies.inspect import Inspection, image_paths, parse_classes, read_prompts, run_inspect
from cliplab.studies.probe import ProbeStudy, run_probe
from cliplab.studies.prompts import PromptStudy, run_prompt_study
from cliplab.studies.zeroshot import ZeroShotRun, run_zeroshot
from cliplab.train.tiny import DEFAULT_MODEL, ensure_tiny_model



@study
def zeroshot(model: Model = "tiny-shapes", dataset: Data = "shapes", *,
             templates: str | Sequence[str] | None = None, ensemble: bool = False, topk: int = 5,
             pretrained: str | None = None, split: str | None = None, data_root: str | None = None,
             limit: int | None = None, classnames: str | None = None, device: str | None = None,
             precision: str | None = None, backend: str = "auto", cache_dir=None, batch_size: int = 64,
             workers: int | None = None, no_cache: bool = False, pipeline: str = "pil", quiet: bool = False
             ) -> ZeroShotRun:
    """Zero-shot classification: top-1/top-5, mean per-class recall, confusion and per-image predictions.

    Parameters
    ----------
    model : LoadedModel or str
        A model from :func:`cliplab.load_model`, or a model name (``"tiny-shapes"``, ``"ViT-B-32"``, ...).
    dataset : ImageDataset or str
        A dataset from :func:`cliplab.load_dataset`, or a dataset spec (``"shapes:color"``, a folder, ...).
    templates : str or list of str, optional
        Named sets (``"openai-imagenet-7"``), template files or templates (``"a sketch of a {}."``); each is
        evaluated separately. Default: the dataset's usual set.
    ensemble : bool
        Merge all ``templates`` into one ensemble.
    topk : int
        Predictions kept per image (``.predictions``).
    pretrained, device, precision, backend
        How a model given by name is loaded (see :func:`cliplab.load_model`); leave them out with a loaded model.
    split, data_root, limit, classnames
        For a dataset spec: the split, where torchvision datasets are, a seeded random subset of ``limit`` images
        (also of a loaded dataset), a class names file (see :func:`cliplab.load_dataset`).
    cache_dir, batch_size, workers, no_cache, pipeline, quiet
        As the CLI's ``--cache-dir``, ``--batch-size``, ``--workers``, ``--no-cache``, ``--pipeline``, ``--quiet``.

    Returns
    -------
    ZeroShotRun
        ``.metrics`` (long-format DataFrame), ``.predictions`` (per image), ``.record()`` (CLIP_benchmark-shaped
        dict); shows its tables and per-class figure inline in Jupyter.

    Examples
    --------
    >>> m = cliplab.load_model("tiny-shapes")
    >>> r = cliplab.zeroshot(m, "shapes:color", limit=200, quiet=True)
    >>> r.metrics.query("metric == 'acc1'").value.iloc[0] > 0.5
    True
    """
    user_sets = template_sets(templates, [], ensemble=ensemble) if templates else None
    ds = as_dataset(dataset, split=split, data_root=data_root, limit=limit, classnames=classnames,
                    cache_dir=cache_dir)
    sets = user_sets or template_sets(None, [ds.templates_hint or "simple"], ensemble=ensemble)
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_zeroshot(m, ds, sets, cache_dir, batch_size=batch_size, num_workers=workers, use_cache=not no_cache,
                        quiet=quiet, pipeline=pipeline, topk=topk)


@study
def prompts(model: Model = "tiny-shapes", dataset: Data = "shapes", *,
            templates: str | Sequence[str] | None = None, baseline: str | None = None,
            descriptions: str | Path | None = None, aggregate: str = "mean", select: bool = False,
            select_split: str | ImageDataset = "train", val_fraction: float = 0.2, bootstrap: int = 2000,
            seed: int = 0, pretrained: str | None = None, split: str | None = None, data_root: str | None = None,
            limit: int | None = None, classnames: str | None = None, device: str | None = None,
            precision: str | None = None, backend: str = "auto", cache_dir=None, batch_size: int = 64,
            workers: int | None = None, quiet: bool = False) -> PromptStudy:
    """Prompt study: accuracy of every template alone, of each multi-template set as an ensemble and of a
    description set, each tested against a baseline (McNemar's exact test, paired bootstrap 95 % CI).

    Parameters
    ----------
    model, dataset
        As for :func:`zeroshot`.
    templates : str or list of str, optional
        Named sets, files or templates. Default: ``["simple", "openai-imagenet-7"]``.
    baseline : str, optional
        Template or set name every row is tested against (default: the first template).
    descriptions : path, optional
        JSON ``{class: [description, ...]}`` scored as one more row; ``aggregate`` is ``"mean"`` or ``"max"``.
    select : bool
        Greedy template selection on a validation part (``val_fraction``) of ``select_split`` (the dataset spec's
        other split, or a loaded :class:`ImageDataset`), reported on the evaluated split.
    bootstrap, seed
        Bootstrap resamples for the CIs, and the seed.
    pretrained, device, precision, backend, split, data_root, limit, classnames, cache_dir, batch_size, workers
        As for :func:`zeroshot`.

    Returns
    -------
    PromptStudy

    Examples
    --------
    >>> cliplab.prompts("tiny-shapes", "shapes:color", templates="openai-imagenet-7", limit=200, quiet=True)
    """
    sets = template_sets(templates, ["simple", "openai-imagenet-7"], ensemble=False)
    ds = as_dataset(dataset, split=split, data_root=data_root, limit=limit, classnames=classnames,
                    cache_dir=cache_dir)
    train = None
    if select:
        train = (as_dataset(select_split, names={"dataset": "select_split"}) if isinstance(select_split, ImageDataset)
                 else other_split(dataset, select_split, param="select_split", data_root=data_root,
                                  classnames=classnames, cache_dir=cache_dir))
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_prompt_study(m, ds, sets, cache_dir, baseline=baseline,
                            descriptions=str(descriptions) if descriptions else None, aggregate=aggregate,
                            select_from=train, val_fraction=val_fraction, n_boot=bootstrap, seed=seed,
                            batch_size=batch_size, num_workers=workers, quiet=quiet)


@study
def probe(model: Model = "tiny-shapes", dataset: Data = "shapes", *, train: Data | None = None,
          train_split: str = "train", kshot: str | int | Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 3,
          linear: bool = True, templates: str | None = None, zeroshot_init: bool = True, wd: float | None = None,
          val_fraction: float = 0.2, seed: int = 0, pretrained: str | None = None, split: str | None = None,
          data_root: str | None = None, limit: int | None = None, train_limit: int | None = None,
          classnames: str | None = None, device: str | None = None, precision: str | None = None,
          backend: str = "auto", cache_dir=None, batch_size: int = 64, workers: int | None = None,
          quiet: bool = False) -> ProbeStudy:
    """Linear and k-shot probes on frozen embeddings, beside zero-shot. The weight decay is chosen on a validation
    part of the training split only; the test split is used once, for the reported numbers.

    Parameters
    ----------
    model, dataset
        As for :func:`zeroshot`; ``dataset`` is the evaluated (test) split.
    train : ImageDataset or str, optional
        What the probes are trained on: a loaded dataset, or a spec (its ``train_split``). Default: the
        ``train_split`` of the ``dataset`` spec (with a loaded ``dataset``, give ``train``).
    train_split, train_limit
        The split the probes are trained on, and a seeded subset of it.
    kshot : list of int (or "1,2,4")
        Shots per class for the k-shot probes (empty: none), each repeated ``seeds`` times.
    linear : bool
        Also the full-data linear probe.
    templates : str, optional
        Template set of the zero-shot row and of the zero-shot initialisation (``zeroshot_init``).
    wd : float, optional
        A fixed weight decay instead of the sweep.
    pretrained, device, precision, backend, split, data_root, limit, classnames, cache_dir, batch_size, workers
        As for :func:`zeroshot`.

    Returns
    -------
    ProbeStudy

    Examples
    --------
    >>> cliplab.probe("tiny-shapes", "shapes:color", kshot=[1, 4], limit=300, train_limit=600, quiet=True)
    """
    ks = [k for k in as_ints(kshot, "kshot") if k > 0]
    user_sets = template_sets(templates, [], ensemble=True) if templates else None
    test = as_dataset(dataset, split=split, data_root=data_root, limit=limit, classnames=classnames,
                      cache_dir=cache_dir)
    if train is not None:
        fit = as_dataset(train, split=None if isinstance(train, ImageDataset) else train_split,
                         data_root=None if isinstance(train, ImageDataset) else data_root, limit=train_limit,
                         cache_dir=cache_dir, names={"dataset": "train", "split": "train_split", "limit": "train_limit"})
    elif isinstance(dataset, ImageDataset):
        raise ParameterError("train", None, f"{{p:dataset}} {dataset.name} is already loaded (split {dataset.split!r}): "
                             "give the split the probes are trained on as {p:train}, e.g. "
                             f"{{p:train}}=cliplab.load_dataset(..., split={train_split!r})", prefix=False)
    else:
        fit = other_split(dataset, train_split, param="train_split", data_root=data_root, limit=train_limit,
                          classnames=classnames, cache_dir=cache_dir, names={"limit": "train_limit"})
    ts = (user_sets or template_sets(None, [test.templates_hint or "simple"], ensemble=True))[0]
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_probe(m, fit, test, cache_dir, templates=ts, linear=linear, kshots=ks,
                     seeds=tuple(range(seed, seed + seeds)), zeroshot_init=zeroshot_init, wd=wd,
                     val_fraction=val_fraction, seed=seed, device=m.device, batch_size=batch_size,
                     num_workers=workers, quiet=quiet)


@study
def compare(model: Model | ModelSpec | Sequence[Model | ModelSpec] | None = None,
            dataset: Data | Sequence[Data] = "shapes", *, pretrained: str | Sequence[str | None] | None = None,
            models: str | Path | None = None, templates: str | None = None, probe: bool = False,
            train_split: str = "train", split: str | None = None, data_root: str | None = None,
            limit: int | None = None, train_limit: int | None = None, device: str | None = None,
            precision: str | None = None, backend: str = "auto", cache_dir=None, batch_size: int = 64,
            workers: int | None = None, quiet: bool = False) -> CompareRun:
    """Compare models on datasets: zero-shot (and, with ``probe``, a linear probe trained on ``train_split``) side
    by side, with images/s, parameters and embedding size.

    Parameters
    ----------
    model : a model or a list of them
        Loaded models, model names (loaded one at a time) or :class:`~cliplab.models.specs.ModelSpec`. Default:
        ``tiny-shapes`` (unless ``models`` is given).
    dataset : ImageDataset, str or a list of them
        One or more datasets (default: ``shapes``). With ``probe``, give them by name (their ``train_split`` is
        loaded too).
    pretrained : str or list, optional
        Paired by position with the model names (``None`` / ``"none"`` for a model without a tag).
    models : path, optional
        A YAML/TOML/JSON file listing ``{model, pretrained, label}`` entries (compared before ``model``).
    templates : str, optional
        One template set for every dataset (default: each dataset's usual set).
    device, precision, backend
        How models given by name are loaded.

    Returns
    -------
    CompareRun

    Examples
    --------
    >>> cliplab.compare(["tiny-shapes", m2], "shapes:color", limit=200, quiet=True)
    """
    items = as_list(model, (str, Path, LoadedModel, ModelSpec))
    specs = as_specs(items or ([] if models is not None else [DEFAULT_MODEL]), pretrained, models)
    if templates:
        template_sets(templates, [], ensemble=True)
    for s in specs:
        if isinstance(s, LoadedModel):
            as_model(s, device=device, precision=precision, backend=backend)
        elif s.model == DEFAULT_MODEL and s.pretrained is None:
            ensure_tiny_model(cache_dir, quiet=quiet)
    pairs, sets = [], []
    for d in as_list(dataset, (str, Path, ImageDataset)) or ["shapes"]:
        test = as_dataset(d, split=split, data_root=data_root, limit=limit, cache_dir=cache_dir)
        fit = other_split(d, train_split, param="train_split", data_root=data_root, limit=train_limit,
                          cache_dir=cache_dir, names={"limit": "train_limit"}) if probe else None
        pairs.append((test, fit))
        sets.append(template_sets(templates, [test.templates_hint or "simple"], ensemble=True)[0])
    return run_compare(specs, pairs, sets, cache_dir, device=device, precision=precision, backend=backend,
                       batch_size=batch_size, num_workers=workers, quiet=quiet)


@study
def inspect(model: Model, images: str | Path | Sequence[str | Path], *, classes: str | Sequence[str] | None = None,
            prompts: str | Path | Sequence[str] | None = None, dataset: Data | None = None,
            templates: str | None = None, topk: int = 5, pretrained: str | None = None, split: str | None = None,
            classnames: str | None = None, device: str | None = None, precision: str | None = None,
            backend: str = "auto", cache_dir=None, quiet: bool = False) -> Inspection:
    """Rank every class (or your prompts) for a few images, with cosine scores and CLIP probabilities.

    Parameters
    ----------
    model
        As for :func:`zeroshot`.
    images : path or list of paths
        Image files or folders.
    classes : list of str (or "a,b,c"), optional
        Class names (ranked through ``templates``).
    prompts : list of str, or a text file (one per line), optional
        Prompts ranked as written, e.g. ``["a chest X-ray with pneumonia", ...]``.
    dataset : optional
        Take the class names from this dataset (default: ``shapes`` when neither ``classes`` nor ``prompts``);
        ``split`` and ``classnames`` as for :func:`zeroshot`.
    pretrained, device, precision, backend
        As for :func:`zeroshot`.

    Returns
    -------
    Inspection
        Inline: the ranking table and one figure per image (image + top-k bars).

    Examples
    --------
    >>> cliplab.inspect("tiny-shapes", ["red-circle.png"], classes=["red shape", "blue shape"], quiet=True)
    """
    given = as_list(images, (str, Path))
    for a in given:
        if not Path(a).expanduser().exists():
            raise ParameterError("images", str(a), "no such image file or folder", quote=False)
    paths = image_paths([str(a) for a in given])
    prompt_list = (read_prompts(prompts) if isinstance(prompts, (str, Path)) else list(prompts)) if prompts else None
    names = (parse_classes(classes) if isinstance(classes, str) else list(classes)) if classes else None
    for key, given in (("prompts", prompt_list), ("classes", names)):
        if given is not None and len(given) < 2:  # one candidate would score 100 %, as the CLI refuses
            raise ParameterError(key, given, "give at least two")
    ds = None
    if not names and not prompt_list:
        user_sets = template_sets(templates, [], ensemble=True) if templates else None
        ds = as_dataset(dataset if dataset is not None else "shapes", split=split, classnames=classnames,
                        cache_dir=cache_dir)
        ds.require_classes("ranking classes")
        names = ds.classnames
        ts = (user_sets or template_sets(None, [ds.templates_hint or "simple"], ensemble=True))[0]
    else:
        ts = template_sets(templates, ["simple"], ensemble=True)[0]
    # where the candidates come from, as the CLI names it: the dataset as given (none given: 'classes'/'prompts')
    source = dataset.name if isinstance(dataset, ImageDataset) else (str(dataset) if dataset is not None else None)
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_inspect(m, paths, cache_dir, classnames=names, template_set=ts, prompts=prompt_list, source=source,
                       topk=topk, quiet=quiet)


@study
def attack(model: Model = "tiny-shapes", dataset: Data = "shapes", *, target: str = "random", text: str = "{}",
           font_size: float = 0.22, position: str = "center", opacity: float = 1.0, color: str = "white",
           font: str | Path | None = None, templates: str | None = None, seed: int = 0, n_examples: int = 8,
           pretrained: str | None = None, split: str | None = None, data_root: str | None = None,
           limit: int | None = None, classnames: str | None = None, device: str | None = None,
           precision: str | None = None, backend: str = "auto", cache_dir=None, batch_size: int = 64,
           workers: int | None = None, quiet: bool = False) -> AttackResult:
    """Typographic attack: write a wrong class name on every image; the accuracy drop and the flips to the
    written label (the CLI's ``cliplab attack typographic``).

    Parameters
    ----------
    model, dataset
        As for :func:`zeroshot`.
    target : {"random", "next", "most-confused"}
        Which wrong class is written.
    text : str
        What is written; ``{}`` is the class name (e.g. ``"this is a {}"``).
    font_size, position, opacity, color, font, seed
        How it is written (as the CLI's flags).
    n_examples : int
        Image pairs in the inline examples figure.
    pretrained, device, precision, backend, split, data_root, limit, classnames, cache_dir, batch_size, workers
        As for :func:`zeroshot`.

    Returns
    -------
    AttackResult
        Inline: the clean/attacked table and original vs attacked example pairs.

    Examples
    --------
    >>> cliplab.attack("tiny-shapes", "shapes:color", target="next", limit=200, quiet=True)
    """
    params = TypographicParams(font_size=font_size, position=position, opacity=opacity, color=color,
                               font=str(font) if font else None, seed=seed)
    params.validate()
    user_sets = template_sets(templates, [], ensemble=True) if templates else None
    ds = as_dataset(dataset, split=split, data_root=data_root, limit=limit, classnames=classnames,
                    cache_dir=cache_dir)
    ts = (user_sets or template_sets(None, [ds.templates_hint or "simple"], ensemble=True))[0]
    m = _model(model, pretrained, device, precision, backend, cache_dir, quiet)
    return run_typographic(m, ds, ts, params, cache_dir, rule=target, text_format=text, batch_size=batch_size,
                           num_workers=workers, quiet=quiet, n_examples=n_examples)
