"""Classification studies from Python: zeroshot, prompts, probe, compare, inspect, attack. Each calls the same
``run_*`` as its CLI command, with the same defaults, so the numbers are the CLI's."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cliplab.api._inputs import as_dataset, as_model, study, template_sets
from cliplab.attacks import TypographicParams
from cliplab.data import ImageDataset
from cliplab.models import LoadedModel
from cliplab.models.specs import ModelSpec
from cliplab.studies.attack import AttackResult, run_typographic
from cliplab.studies.compare import CompareRun, run_compare
from cliplab.studies.inspect import Inspection, image_paths, run_inspect
from cliplab.studies.probe import ProbeStudy, run_probe
from cliplab.studies.prompts import PromptStudy, run_prompt_study
from cliplab.studies.zeroshot import ZeroShotRun, run_zeroshot
from cliplab.train.tiny import DEFAULT_MODEL, ensure_tiny_model

Model = LoadedModel | str
Data = ImageDataset | str | Path


@study
def zeroshot(model: Model, dataset: Data, *, templates: str | Sequence[str] | None = None, ensemble: bool = False,
             split: str | None = None, limit: int | None = None, topk: int = 5, cache_dir=None,
             batch_size: int = 64, workers: int | None = None, pipeline: str = "pil", quiet: bool = False
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
    split, limit : optional
        For a dataset spec: the split, and a seeded random subset of ``limit`` images.
    topk : int
        Predictions kept per image (``.predictions``).
    cache_dir, batch_size, workers, pipeline, quiet
        As the CLI's ``--cache-dir``, ``--batch-size``, ``--workers``, ``--pipeline``, ``--quiet``.

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
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    ds = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    sets = template_sets(templates, [ds.templates_hint or "simple"], ensemble=ensemble)
    return run_zeroshot(m, ds, sets, cache_dir, batch_size=batch_size, num_workers=workers, quiet=quiet,
                        pipeline=pipeline, topk=topk)


@study
def prompts(model: Model, dataset: Data, *, templates: str | Sequence[str] | None = None,
            baseline: str | None = None, descriptions: str | Path | None = None, aggregate: str = "mean",
            select: bool = False, select_split: str = "train", val_fraction: float = 0.2, bootstrap: int = 2000,
            seed: int = 0, split: str | None = None, limit: int | None = None, cache_dir=None,
            batch_size: int = 64, workers: int | None = None, quiet: bool = False) -> PromptStudy:
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
        Greedy template selection on a validation part (``val_fraction``) of ``select_split`` (a dataset spec's
        other split, or an :class:`ImageDataset`), reported on the evaluated split.
    bootstrap, seed
        Bootstrap resamples for the CIs, and the seed.

    Returns
    -------
    PromptStudy

    Examples
    --------
    >>> cliplab.prompts("tiny-shapes", "shapes:color", templates="openai-imagenet-7", limit=200, quiet=True)
    """
    ds = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    train = None
    if select:
        train = (select_split if isinstance(select_split, ImageDataset) else
                 as_dataset(dataset, split=select_split, cache_dir=cache_dir, param="select_split"))
    sets = template_sets(templates, ["simple", "openai-imagenet-7"], ensemble=False)
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    return run_prompt_study(m, ds, sets, cache_dir, baseline=baseline,
                            descriptions=str(descriptions) if descriptions else None, aggregate=aggregate,
                            select_from=train, val_fraction=val_fraction, n_boot=bootstrap, seed=seed,
                            batch_size=batch_size, num_workers=workers, quiet=quiet)


@study
def probe(model: Model, dataset: Data, *, train: Data | None = None, train_split: str = "train",
          kshot: Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 3, linear: bool = True, templates: str | None = None,
          zeroshot_init: bool = True, wd: float | None = None, val_fraction: float = 0.2, seed: int = 0,
          split: str | None = None, limit: int | None = None, train_limit: int | None = None, cache_dir=None,
          batch_size: int = 64, workers: int | None = None, quiet: bool = False) -> ProbeStudy:
    """Linear and k-shot probes on frozen embeddings, beside zero-shot. The weight decay is chosen on a validation
    part of the training split only; the test split is used once, for the reported numbers.

    Parameters
    ----------
    model, dataset
        As for :func:`zeroshot`; ``dataset`` is the evaluated (test) split.
    train : ImageDataset or str, optional
        The split the probes are trained on. Default: ``train_split`` of the ``dataset`` spec.
    kshot : list of int
        Shots per class for the k-shot probes (empty: none), each repeated ``seeds`` times.
    linear : bool
        Also the full-data linear probe.
    templates : str, optional
        Template set of the zero-shot row and of the zero-shot initialisation (``zeroshot_init``).
    wd : float, optional
        A fixed weight decay instead of the sweep.

    Returns
    -------
    ProbeStudy

    Examples
    --------
    >>> cliplab.probe("tiny-shapes", "shapes:color", kshot=[1, 4], limit=300, train_limit=600, quiet=True)
    """
    test = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    fit = as_dataset(train if train is not None else dataset, split=None if train is not None else train_split,
                     limit=train_limit, cache_dir=cache_dir, param="train")
    ts = template_sets(templates, [test.templates_hint or "simple"], ensemble=True)[0]
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    return run_probe(m, fit, test, cache_dir, templates=ts, linear=linear, kshots=[k for k in kshot if k > 0],
                     seeds=tuple(range(seed, seed + seeds)), zeroshot_init=zeroshot_init, wd=wd,
                     val_fraction=val_fraction, seed=seed, device=m.device, batch_size=batch_size,
                     num_workers=workers, quiet=quiet)


@study
def compare(models: Sequence[Model | ModelSpec], datasets: Data | Sequence[Data] = "shapes", *,
            templates: str | None = None, probe: bool = False, train_split: str = "train",
            split: str | None = None, limit: int | None = None, train_limit: int | None = None, cache_dir=None,
            batch_size: int = 64, workers: int | None = None, quiet: bool = False) -> CompareRun:
    """Compare models on datasets: zero-shot (and, with ``probe``, a linear probe trained on ``train_split``) side
    by side, with images/s, parameters and embedding size.

    Parameters
    ----------
    models : list of LoadedModel, model names or ModelSpec
        The models; names are loaded one at a time.
    datasets : ImageDataset, str or a list of them
        One or more datasets.
    templates : str, optional
        One template set for every dataset (default: each dataset's usual set).

    Returns
    -------
    CompareRun

    Examples
    --------
    >>> cliplab.compare(["tiny-shapes", m2], "shapes:color", limit=200, quiet=True)
    """
    sets_of = [datasets] if isinstance(datasets, (str, Path, ImageDataset)) else list(datasets)
    pairs, sets = [], []
    for d in sets_of:
        test = as_dataset(d, split=split, limit=limit, cache_dir=cache_dir)
        fit = as_dataset(d, split=train_split, limit=train_limit, cache_dir=cache_dir,
                         param="train_split") if probe else None
        pairs.append((test, fit))
        sets.append(template_sets(templates, [test.templates_hint or "simple"], ensemble=True)[0])
    specs = [ModelSpec(str(m)) if isinstance(m, (str, Path)) else m for m in models]
    for s in specs:
        if isinstance(s, ModelSpec) and s.model == DEFAULT_MODEL and s.pretrained is None:
            ensure_tiny_model(cache_dir, quiet=quiet)
    return run_compare(specs, pairs, sets, cache_dir, batch_size=batch_size, num_workers=workers, quiet=quiet)


@study
def inspect(model: Model, images: str | Path | Sequence[str | Path], *, classes: Sequence[str] | None = None,
            prompts: Sequence[str] | None = None, dataset: Data | None = None, templates: str | None = None,
            topk: int = 5, cache_dir=None, quiet: bool = False) -> Inspection:
    """Rank every class (or your prompts) for a few images, with cosine scores and CLIP probabilities.

    Parameters
    ----------
    model
        As for :func:`zeroshot`.
    images : path or list of paths
        Image files or folders.
    classes : list of str, optional
        Class names (ranked through ``templates``).
    prompts : list of str, optional
        Prompts ranked as written, e.g. ``["a chest X-ray with pneumonia", ...]``.
    dataset : optional
        Take the class names from this dataset (default: ``shapes`` when neither ``classes`` nor ``prompts``).

    Returns
    -------
    Inspection
        Inline: the ranking table and one figure per image (image + top-k bars).

    Examples
    --------
    >>> cliplab.inspect("tiny-shapes", ["red-circle.png"], classes=["red shape", "blue shape"], quiet=True)
    """
    paths = image_paths([images] if isinstance(images, (str, Path)) else list(images))
    names = list(classes) if classes else None
    ds = None
    if not names and not prompts:
        ds = as_dataset(dataset or "shapes", cache_dir=cache_dir)
        ds.require_classes("ranking classes")
        names = ds.classnames
    ts = template_sets(templates, [(ds.templates_hint if ds else None) or "simple"], ensemble=True)[0]
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    return run_inspect(m, paths, cache_dir, classnames=names, template_set=ts,
                       prompts=list(prompts) if prompts else None, source=ds.name if ds else None, topk=topk,
                       quiet=quiet)


@study
def attack(model: Model, dataset: Data, *, target: str = "random", text: str = "{}", font_size: float = 0.22,
           position: str = "center", opacity: float = 1.0, color: str = "white", font: str | Path | None = None,
           templates: str | None = None, seed: int = 0, n_examples: int = 8, split: str | None = None,
           limit: int | None = None, cache_dir=None, batch_size: int = 64, workers: int | None = None,
           quiet: bool = False) -> AttackResult:
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
    ds = as_dataset(dataset, split=split, limit=limit, cache_dir=cache_dir)
    ts = template_sets(templates, [ds.templates_hint or "simple"], ensemble=True)[0]
    m = as_model(model, cache_dir=cache_dir, quiet=quiet)
    return run_typographic(m, ds, ts, params, cache_dir, rule=target, text_format=text, batch_size=batch_size,
                           num_workers=workers, quiet=quiet, n_examples=n_examples)
