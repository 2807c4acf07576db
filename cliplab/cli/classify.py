"""Classification commands: zeroshot, prompts, probe, compare, inspect, attack."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cliplab.cli.options import (TABLE_SUFFIXES, BackendOpt, BatchOpt, CacheDirOpt, ClassnamesOpt, DataRootOpt, DatasetOpt,
                                 DeviceOpt, LimitOpt, ModelOpt, NoCacheOpt, PipelineOpt, PrecisionOpt, PretrainedOpt,
                                 QuietOpt, ResultsFormatOpt, ResultsOpt, SplitOpt, WorkersOpt, check_device,
                                 check_output, check_results, check_templates, handle_errors, parse_ints)
from cliplab.cli.session import Inputs, ensure_default_model, finish, load_dataset, load_inputs, load_model


@handle_errors
def zeroshot(
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None, dataset: DatasetOpt = "shapes",
    split: SplitOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = None,
    classnames: ClassnamesOpt = None,
    templates: Optional[List[str]] = typer.Option(
        None, "--templates", "-t", help="repeatable: a named set (simple, openai-imagenet-80, openai-imagenet-7, "
        "openai-cifar, openai-eurosat, openai-food101), a .txt/.json file, or a template like 'a sketch of a {}.'. "
        "Each value is evaluated separately (default: the dataset's usual set)."),
    ensemble: bool = typer.Option(False, "--ensemble", help="merge all --templates into one ensemble."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results JSON (CLIP_benchmark shape + config)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="per-image CSV: true label, top-k labels "
                                               "and scores (first template set)."),
    topk: int = typer.Option(5, "--topk", min=1, help="k for --predictions."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, no_cache: NoCacheOpt = False,
    pipeline: PipelineOpt = "pil", quiet: QuietOpt = False,
):
    """Zero-shot classification: top-1/top-5, mean per-class recall, confusion, per-image predictions."""
    from cliplab.studies.zeroshot import run_zeroshot

    check_output(output, "--output", (".json",))
    check_output(predictions, "--predictions", TABLE_SUFFIXES)
    check_results(results, results_format)
    inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset, split=split, data_root=data_root,
                      limit=limit, classnames=classnames, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                      quiet=quiet, templates=templates, ensemble=ensemble)
    run = run_zeroshot(inp.model, inp.dataset, inp.template_sets, cache_dir, batch_size=batch_size,
                       num_workers=workers, use_cache=not no_cache, quiet=quiet, pipeline=pipeline, topk=topk)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": inp.dataset.split,
              "limit": limit, "templates": templates, "ensemble": ensemble, "batch_size": batch_size,
              "precision": inp.model.precision, "device": str(inp.model.device), "pipeline": pipeline}
    finish(run, command="zeroshot", config=config, files={"record": output, "predictions": predictions},
           results=results, results_format=results_format, quiet=quiet)


@handle_errors
def prompts(
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None, dataset: DatasetOpt = "shapes",
    split: SplitOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = None,
    classnames: ClassnamesOpt = None,
    templates: Optional[List[str]] = typer.Option(
        None, "--templates", "-t", help="repeatable: named sets, files or template strings. Every template is "
        "scored alone; sets with several templates also as an ensemble (default: simple + openai-imagenet-7)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="template or set name every row is tested "
                                           "against (default: the first template)."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="JSON {class: [description, ...]} "
                                                "used instead of templates (one extra row)."),
    aggregate: str = typer.Option("mean", "--aggregate", help="descriptions: mean (one embedding per class) or "
                                  "max (best-matching description)."),
    select: bool = typer.Option(False, "--select", help="greedy template selection on a validation part of the "
                                "train split, reported on the evaluated split."),
    select_split: str = typer.Option("train", "--select-split", "--train-split", help="split the validation part "
                                     "is carved from (never the evaluated split)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.01, max=1.0),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, help="bootstrap resamples for the 95 % CI."),
    seed: int = typer.Option(0, "--seed"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="study JSON."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """Prompt study: accuracy per template, ensemble and description set, with significance tests.

    Each row is compared with a baseline by McNemar's exact test and a paired bootstrap CI; --select picks an
    ensemble on a validation part of the train split. Images are embedded once."""
    from cliplab.studies.prompts import run_prompt_study

    check_output(output, "--output", (".json",))
    check_results(results, results_format)
    inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset, split=split, data_root=data_root,
                      limit=limit, classnames=classnames, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                      quiet=quiet, templates=templates, ensemble=False,
                      default_templates=["simple", "openai-imagenet-7"],
                      train_split=select_split if select else None, train_flag="--select-split")
    study = run_prompt_study(inp.model, inp.dataset, inp.template_sets, cache_dir, baseline=baseline,
                             descriptions=str(descriptions) if descriptions else None, aggregate=aggregate,
                             select_from=inp.train, val_fraction=val_fraction, n_boot=bootstrap, seed=seed,
                             batch_size=batch_size, num_workers=workers, quiet=quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": inp.dataset.split,
              "templates": templates, "baseline": study.baseline, "seed": seed, "bootstrap": bootstrap,
              "select": select, "descriptions": str(descriptions) if descriptions else None, "aggregate": aggregate}
    finish(study, command="prompts", config=config, files={"record": output}, results=results,
           results_format=results_format, quiet=quiet)


@handle_errors
def probe(
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None, dataset: DatasetOpt = "shapes",
    split: SplitOpt = None,
    train_split: str = typer.Option("train", "--train-split", help="split the probes are trained on (a "
                                    "validation part of it chooses the weight decay)."),
    data_root: DataRootOpt = None, classnames: ClassnamesOpt = None,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="seeded subset of N test images."),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", min=1, help="seeded subset of N train images."),
    kshot: str = typer.Option("1,2,4,8,16", "--kshot", help="shots per class for k-shot probes, comma-separated "
                              "('' or 0 = none)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="k-shot repetitions with different samples."),
    linear: bool = typer.Option(True, "--linear/--no-linear", help="full-data linear probe."),
    templates: Optional[str] = typer.Option(None, "--templates", "-t", help="template set for the zero-shot row "
                                            "and the zero-shot initialisation (default: the dataset's usual set)."),
    zeroshot_init: bool = typer.Option(True, "--zeroshot-init/--no-zeroshot-init", help="also fit k-shot probes "
                                       "anchored at the zero-shot classifier (both are reported)."),
    wd: Optional[float] = typer.Option(None, "--wd", min=0.0, help="fixed weight decay for the linear probe "
                                       "(default: swept on the validation part)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.01, max=0.9),
    seed: int = typer.Option(0, "--seed"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="study JSON."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """Linear and k-shot probes on frozen embeddings, beside zero-shot.

    Logistic regression in torch with L-BFGS (GPU when available); the weight decay is swept on a validation
    split, then the probe is refit on all of train."""
    from cliplab.studies.probe import run_probe

    ks = [k for k in parse_ints(kshot, "--kshot") if k > 0]
    check_output(output, "--output", (".json",))
    check_results(results, results_format)
    inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset, split=split, data_root=data_root,
                      limit=limit, classnames=classnames, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                      quiet=quiet, templates=templates, ensemble=True, train_split=train_split,
                      train_limit=train_limit)
    ts = inp.template_sets[0]
    study = run_probe(inp.model, inp.train, inp.dataset, cache_dir, templates=ts, linear=linear, kshots=ks,
                      seeds=tuple(range(seed, seed + seeds)), zeroshot_init=zeroshot_init, wd=wd,
                      val_fraction=val_fraction, seed=seed, device=inp.model.device, batch_size=batch_size,
                      num_workers=workers, quiet=quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": inp.dataset.split,
              "train_split": train_split, "kshot": ks, "seeds": seeds, "seed": seed, "wd": wd,
              "val_fraction": val_fraction, "templates": ts.name, "zeroshot_init": zeroshot_init}
    finish(study, command="probe", config=config, files={"record": output}, results=results,
           results_format=results_format, quiet=quiet)


@handle_errors
def compare(
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="repeatable; paired by position with "
                                              "--pretrained (see `cliplab zeroshot --help` for accepted values)."),
    pretrained: Optional[List[str]] = typer.Option(None, "--pretrained", "-p", help="repeatable; 'none' for a "
                                                   "model without a tag."),
    models_file: Optional[Path] = typer.Option(None, "--models", help="YAML/TOML/JSON list of {model, pretrained, "
                                               "label}."),
    dataset: Optional[List[str]] = typer.Option(None, "--dataset", "-d", help="repeatable (default: shapes)."),
    split: SplitOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = None,
    templates: Optional[str] = typer.Option(None, "--templates", "-t", help="one template set for every dataset "
                                            "(default: each dataset's usual set)."),
    probe: bool = typer.Option(False, "--probe", help="add a linear probe column (trained on --train-split)."),
    train_split: str = typer.Option("train", "--train-split"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", min=1),
    plot: Optional[Path] = typer.Option(None, "--plot", help="grouped bar chart path stem: writes STEM.png and "
                                        "STEM.svg."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="table as .csv, .parquet or .jsonl."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """Compare models on datasets: zero-shot (and linear probe) side by side, with bar charts.

    Columns: top-1/top-5, similarity of the true class, images/s, parameters, embedding dimension."""
    from cliplab.models.specs import model_specs
    from cliplab.studies.compare import run_compare

    specs = model_specs(model or ([] if models_file else ["tiny-shapes"]), pretrained, models_file)
    check_output(output, "--output", TABLE_SUFFIXES)
    check_output(plot, "--plot")
    check_results(results, results_format)
    check_templates(templates)
    check_device(device, precision, backend)
    for s in specs:
        ensure_default_model(s.model, s.pretrained, cache_dir, quiet)
    pairs, sets = _compare_inputs(dataset or ["shapes"], split, data_root, limit, templates, probe, train_split,
                                  train_limit, cache_dir)
    run = run_compare(specs, pairs, sets, cache_dir, device=device, precision=precision, backend=backend,
                      batch_size=batch_size,
                      num_workers=workers, quiet=quiet)
    config = {"models": [s.__dict__ for s in specs], "datasets": dataset, "templates": templates, "probe": probe,
              "split": split, "limit": limit}
    finish(run, command="compare", config=config, files={"comparison": output, "plot": plot}, results=results,
           results_format=results_format, quiet=quiet)


def _compare_inputs(datasets, split, data_root, limit, templates, probe, train_split, train_limit, cache_dir):
    """Per dataset: (the evaluated split, the split the probe trains on or None) and its template set."""
    from cliplab.prompts import resolve_all

    pairs, sets = [], []
    for d in datasets:
        test = load_dataset(d, split, data_root, limit, None, cache_dir)
        train = load_dataset(d, train_split, data_root, train_limit, None, cache_dir,
                             split_flag="--train-split") if probe else None
        pairs.append((test, train))
        sets.append(resolve_all([templates or test.templates_hint or "simple"], ensemble=True)[0])
    return pairs, sets


@handle_errors
def inspect_cmd(
    images: List[str] = typer.Argument(..., help="image files or folders."),
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None,
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="take the class names from this dataset "
                                          "(default: shapes, unless --classes or --prompts)."),
    split: SplitOpt = None,
    classes: Optional[str] = typer.Option(None, "--classes", help="comma-separated class names."),
    classnames: ClassnamesOpt = None,
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="text file, one prompt per line, ranked as "
                                           "written (no template), e.g. 'a chest X-ray with pneumonia'."),
    templates: Optional[str] = typer.Option(None, "--templates", "-t", help="template set for class names."),
    topk: int = typer.Option(5, "--topk", min=1),
    figures: Optional[Path] = typer.Option(None, "--figures", help="folder for one PNG per image: the image and "
                                           "its top-k bars."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="all scores as .csv/.parquet/.jsonl (one "
                                          "row per image x candidate)."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    quiet: QuietOpt = False,
):
    """Rank all classes (or your prompts) for given images, with cosine scores and CLIP probabilities."""
    from cliplab.studies.inspect import image_paths, parse_classes, read_prompts, run_inspect

    check_output(figures, "--figures", folder=True)
    check_output(output, "--output", TABLE_SUFFIXES)
    check_results(results, results_format)
    paths = image_paths(images)
    prompt_list = read_prompts(prompts) if prompts else None
    names = parse_classes(classes) if classes else None
    inp = _inspect_inputs(names or prompt_list, model=model, pretrained=pretrained, dataset=dataset, split=split,
                          classnames=classnames, templates=templates, device=device, precision=precision,
                          backend=backend, cache_dir=cache_dir, quiet=quiet)
    ins = run_inspect(inp.model, paths, cache_dir, classnames=names or (inp.dataset and inp.dataset.classnames),
                      template_set=inp.template_sets[0], prompts=prompt_list, source=dataset, topk=topk, quiet=quiet)
    config = {"images": [str(p) for p in paths], "classes": ins.classnames, "prompts": prompt_list,
              "templates": ins.template_set.name, "topk": topk}
    finish(ins, command="inspect", config=config, files={"scores": output, "figures": figures}, results=results,
           results_format=results_format, quiet=quiet)


def _inspect_inputs(candidates_given, *, model, pretrained, dataset, split, classnames, templates, device,
                    precision, backend, cache_dir, quiet) -> Inputs:
    """inspect's model and template set; the class names come from a dataset (default shapes) only when neither
    --classes nor --prompts names the candidates."""
    from cliplab.prompts import resolve_all

    if not candidates_given:
        inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset or "shapes", split=split,
                          classnames=classnames, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                          quiet=quiet, templates=templates, ensemble=True)
        inp.dataset.require_classes("ranking classes")
        return inp
    sets = resolve_all([templates or "simple"], ensemble=True)
    check_device(device, precision, backend)
    ensure_default_model(model, pretrained, cache_dir, quiet)
    return Inputs(load_model(model, pretrained, device, precision, cache_dir, backend=backend), None, template_sets=sets)


@handle_errors
def attack_typographic(
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None, dataset: DatasetOpt = "shapes",
    split: SplitOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = None,
    classnames: ClassnamesOpt = None,
    templates: Optional[str] = typer.Option(None, "--templates", "-t", help="template set (default: the dataset's "
                                            "usual set)."),
    target: str = typer.Option("random", "--target", help="which wrong class is written: random (seeded), next "
                               "(label + 1), most-confused (the clean classifier's most frequent confusion)."),
    text: str = typer.Option("{}", "--text", help="what is written, {} = the class name (e.g. 'this is a {}')."),
    font_size: float = typer.Option(0.22, "--font-size", help="text height as a fraction of the image side."),
    position: str = typer.Option("center", "--position", help="center | top | bottom | random"),
    opacity: float = typer.Option(1.0, "--opacity", help="0 < opacity <= 1"),
    color: str = typer.Option("white", "--color", help="text colour (outlined in black)."),
    font: Optional[Path] = typer.Option(None, "--font", help=".ttf/.otf font file (default: Pillow's bundled font)."),
    seed: int = typer.Option(0, "--seed"),
    examples: Optional[Path] = typer.Option(None, "--examples", help="PNG with original vs attacked example pairs."),
    n_examples: int = typer.Option(8, "--n-examples", min=1),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="summary JSON."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """Write a wrong class name on every image; report the accuracy drop and flips to the written label.

    Attacked images are embedded once and cached under their own keys."""
    from cliplab.attacks import TypographicParams
    from cliplab.studies.attack import run_typographic

    check_output(examples, "--examples", (".png",))
    check_output(output, "--output", (".json",))
    check_results(results, results_format)
    params = TypographicParams(font_size=font_size, position=position, opacity=opacity, color=color,
                               font=str(font) if font else None, seed=seed)
    params.validate()
    inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset, split=split, data_root=data_root,
                      limit=limit, classnames=classnames, device=device, precision=precision, backend=backend, cache_dir=cache_dir,
                      quiet=quiet, templates=templates, ensemble=True)
    res = run_typographic(inp.model, inp.dataset, inp.template_sets[0], params, cache_dir, rule=target,
                          text_format=text, batch_size=batch_size, num_workers=workers, quiet=quiet,
                          n_examples=n_examples)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": inp.dataset.split,
              "limit": limit, "templates": res.template_set.name, "target": target, "text": text, **params.__dict__}
    finish(res, command="attack-typographic", config=config, files={"record": output, "examples": examples},
           results=results, results_format=results_format, quiet=quiet)


def register(app: typer.Typer) -> None:
    for fn in (zeroshot, prompts, probe, compare):
        app.command()(fn)
    app.command("inspect")(inspect_cmd)
    attack = typer.Typer(help="Adversarial-style probes of a model (typographic attack).", no_args_is_help=True)
    attack.command("typographic")(attack_typographic)
    app.add_typer(attack, name="attack")
