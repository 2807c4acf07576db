"""The ``cliplab`` command line. Presentation only: it parses options, calls studies, prints and writes results."""
from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer >= 0.22 ships its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors

from cliplab.errors import CliplabError


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad value, missing argument) as one ``error:`` line and exit code 2, like
    every other bad input, instead of click's multi-line box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except click_errors.NoArgsIsHelpError as exc:  # `cliplab attack` alone: its help (rich has printed it)
            message = exc.format_message()
            if message:
                typer.echo(message)
            rv = exc.exit_code
        except click_errors.ClickException as exc:
            cmd = exc.ctx.command_path if getattr(exc, "ctx", None) else "cliplab"
            typer.echo(f"error: {exc.format_message()} (see `{cmd} --help`)", err=True)
            rv = exc.exit_code
        except typer.Abort:
            typer.echo("aborted", err=True)
            rv = 1
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _version(value: bool) -> None:
    if value:
        from cliplab.version import __version__

        typer.echo(f"cliplab {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=_OneLineErrors,
    name="cliplab",
    help="Evaluate CLIP-style vision-language models: zero-shot, prompt studies, probes, retrieval, search, "
         "clustering, attacks and reports — cached and reproducible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit.")) -> None:
    """Evaluate CLIP-style vision-language models: zero-shot, prompt studies, probes, retrieval, search,
    clustering, attacks and reports — cached and reproducible."""

# ---- shared options --------------------------------------------------------------------------------------------
ModelOpt = typer.Option("tiny-shapes", "--model", "-m", help="open_clip architecture (ViT-B-32), hf-hub:org/name, "
                        "local-dir:FOLDER, a model-config .json, hf:org/name (transformers), or a model trained by "
                        "`cliplab train` (see `cliplab models`).")
PretrainedOpt = typer.Option(None, "--pretrained", "-p", help="pretrained tag (openai, laion2b_s34b_b79k, ...) or "
                             "a checkpoint file (.pt/.bin/.safetensors).")
DatasetOpt = typer.Option("shapes", "--dataset", "-d", help="shapes[:ATTRIBUTE], a torchvision name (cifar10, "
                          "cifar100, food101, eurosat, stl10, flowers102, oxford_pets, dtd, mnist), a folder of "
                          "class subfolders or images, or a caption file (.csv/.jsonl).")
SplitOpt = typer.Option(None, "--split", help="dataset split (named datasets: default test; a folder with split "
                        "subfolders needs it). A split that does not exist is an error listing those that do.")
DataRootOpt = typer.Option(None, "--data-root", help="where torchvision datasets are (downloaded when online).")
LimitOpt = typer.Option(None, "--limit", min=1, help="use a seeded random subset of N images.")
ClassnamesOpt = typer.Option(None, "--classnames", help="class names file (.txt one per line, or .json list/map).")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available).")
PrecisionOpt = typer.Option(None, "--precision", help="fp32 | amp | amp_bf16 | fp16 | bf16 (default: amp on GPU, "
                            "fp32 on CPU).")
CacheDirOpt = typer.Option(None, "--cache-dir", help="embedding/model/dataset cache (default: user cache dir, or "
                           "$CLIPLAB_CACHE_DIR).")
BatchOpt = typer.Option(64, "--batch-size", min=0, help="images per batch; 0 = chosen from free GPU memory "
                        "(64 on CPU).")
WorkersOpt = typer.Option(None, "--workers", min=0, help="DataLoader worker processes (default: automatic).")
PipelineOpt = typer.Option("pil", "--pipeline", help="image preprocessing: pil (open_clip's transform, the "
                           "reference), tensor (torchvision decoding + batched tensor resize/normalise; JPEGs decoded "
                           "on the GPU), auto (tensor on CUDA, else pil).")
NoCacheOpt = typer.Option(False, "--no-cache", help="recompute embeddings and don't write the cache.")
ResultsOpt = typer.Option(None, "--results", help="results store folder: this run's rows (model, dataset, task, "
                          "metric, value, CI, seed, fingerprints, config) are added as a new file; read it with "
                          "pandas or `cliplab report`.")
ResultsFormatOpt = typer.Option("parquet", "--results-format", help="parquet | jsonl")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars or notes (result tables and errors still "
                        "print).")


def handle_errors(fn):
    """User errors become one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CliplabError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        except OSError as exc:  # a file we were asked to read or write (outputs are checked up front; this is the rest)
            if exc.filename is None:
                raise
            typer.echo(f"error: {exc.filename}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("interrupted; finished shards are cached and the next run resumes from them", err=True)
            raise typer.Exit(130)

    return wrapper


def _out(quiet: bool):
    from cliplab.report.tables import stdout_console

    return stdout_console(quiet)


def _load_model(model, pretrained, device, precision, cache_dir):
    from cliplab.models import load_model

    return load_model(model, pretrained, device=device, precision=precision, cache_dir=cache_dir)


def _load_dataset(dataset, split, data_root, limit, classnames, cache_dir, split_flag="--split"):
    from cliplab.data import SplitError, load_dataset

    try:
        return load_dataset(dataset, split=split, data_root=data_root, limit=limit, classnames=classnames,
                            cache_dir=cache_dir)
    except SplitError as exc:
        hint = f" (choose one with {split_flag})" if exc.available else ""
        raise CliplabError(f"{split_flag} {split}: {exc}{hint}") from None


def _load_train_set(dataset, split, limit, cache):
    """The split to train on: the one named, else ``train``; a set without splits (a caption file) is used whole."""
    from cliplab.data import SplitError, load_dataset

    if split is None:
        try:
            return load_dataset(dataset, split="train", limit=limit, cache_dir=cache)
        except SplitError as exc:
            if exc.available:
                raise CliplabError(f"--split: {exc}; choose the split to train on with --split") from None
    return _load_dataset(dataset, split, None, limit, None, cache)


def check_output(path: Optional[Path], flag: str, suffixes: tuple[str, ...] = (), folder: bool = False,
                 warn_existing: bool = True) -> None:
    """Fail before any work when an output cannot be written: a folder given for a file (or the reverse), a
    suffix the command cannot write, or a place that is not a writable folder."""
    if path is None:
        return
    path = Path(path).expanduser()
    if folder:
        if path.exists() and not path.is_dir():
            raise CliplabError(f"{flag} {path}: is a file; give a folder")
    else:
        if path.is_dir():
            raise CliplabError(f"{flag} {path}: is a folder; give a file name"
                               + (f" ending in {' or '.join(suffixes)}" if suffixes else ""))
        if suffixes and path.suffix.lower() not in suffixes:
            raise CliplabError(f"{flag} {path}: cannot write {path.suffix or 'a file without extension'}; "
                               f"use {' or '.join(suffixes)}")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CliplabError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliplabError(f"{flag} {path}: no permission to write in {existing}; choose another place")
    if warn_existing and not folder and path.is_file():
        from cliplab.progress import console

        console.print(f"[yellow]warning: {flag} {escape(str(path))} exists and will be replaced when this run "
                      "finishes (give another name to keep it)[/yellow]")


TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")


def _check_results(results: Optional[Path], fmt: str) -> None:
    from cliplab.report.store import FORMATS

    if fmt not in FORMATS:
        raise CliplabError(f"--results-format {fmt!r}: choose {' or '.join(FORMATS)}")
    check_output(results, "--results", folder=True)


def _check_templates(templates) -> None:
    """Template values are resolved once up front, so a bad file fails before any data is loaded."""
    from cliplab.prompts import resolve_all

    if templates:
        resolve_all(templates if isinstance(templates, list) else [templates])


def _check_device(device: Optional[str], precision: Optional[str]) -> None:
    """Device and precision are checked before any data is loaded or model trained."""
    from cliplab.models import resolve_device, resolve_precision

    resolve_precision(precision, resolve_device(device))


def _ensure_default_model(model: str, pretrained: Optional[str], cache_dir, quiet: bool) -> None:
    """``tiny-shapes`` (the offline default) is the checkpoint shipped with cliplab; a note says if a cache copy
    trained with ``train --name tiny-shapes --force`` replaces it."""
    from cliplab.demo import DEFAULT_MODEL, ensure_tiny_model

    if model == DEFAULT_MODEL and pretrained is None:
        ensure_tiny_model(cache_dir, quiet=quiet)


# ---- commands --------------------------------------------------------------------------------------------------
@app.command()
@handle_errors
def zeroshot(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt, dataset: str = DatasetOpt,
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    classnames: Optional[str] = ClassnamesOpt,
    templates: Optional[List[str]] = typer.Option(
        None, "--templates", "-t", help="repeatable: a named set (simple, openai-imagenet-80, openai-imagenet-7, "
        "openai-cifar, openai-eurosat, openai-food101), a .txt/.json file, or a template like 'a sketch of a {}.'. "
        "Each value is evaluated separately (default: the dataset's usual set)."),
    ensemble: bool = typer.Option(False, "--ensemble", help="merge all --templates into one ensemble."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results JSON (CLIP_benchmark shape + config)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="per-image CSV: true label, top-k labels "
                                               "and scores (first template set)."),
    topk: int = typer.Option(5, "--topk", min=1, help="k for --predictions."),
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, no_cache: bool = NoCacheOpt,
    pipeline: str = PipelineOpt, quiet: bool = QuietOpt,
):
    """Zero-shot classification: top-1/top-5, mean per-class recall, confusion, per-image predictions."""
    from cliplab.prompts import resolve_all
    from cliplab.report.results import predictions_frame, write_json, write_table, zeroshot_json
    from cliplab.report.rows import record_zeroshot
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import zeroshot_table
    from cliplab.studies.zeroshot import run_zeroshot

    check_output(output, "--output", (".json",))
    check_output(predictions, "--predictions", TABLE_SUFFIXES)
    _check_results(results, results_format)
    _check_templates(templates)
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    ds = _load_dataset(dataset, split, data_root, limit, classnames, cache_dir)
    sets = resolve_all(templates or [ds.templates_hint or "simple"], ensemble=ensemble)
    m = _load_model(model, pretrained, device, precision, cache_dir)
    run = run_zeroshot(m, ds, sets, cache_dir, batch_size=batch_size, num_workers=workers, use_cache=not no_cache,
                       quiet=quiet, pipeline=pipeline)
    out = _out(quiet)
    _out(False).print(zeroshot_table(run))
    _report_failures(run.images.failures, quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": ds.split, "limit": limit,
              "templates": templates, "ensemble": ensemble, "batch_size": batch_size,
              "precision": m.precision, "device": str(m.device), "pipeline": pipeline}
    rec = RunRecorder("zeroshot", config)
    record_zeroshot(rec, run)
    _write_results(rec, results, results_format, quiet)
    if output:
        write_json(output, zeroshot_json(run, config))
        out.print(f"wrote {output}")
    if predictions:
        write_table(predictions, predictions_frame(run, k=topk))
        out.print(f"wrote {predictions}")


@app.command()
@handle_errors
def prompts(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt, dataset: str = DatasetOpt,
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    classnames: Optional[str] = ClassnamesOpt,
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
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """Prompt study: accuracy per template, ensemble and description set, with significance tests.

    Each row is compared with a baseline by McNemar's exact test and a paired bootstrap CI; --select picks an
    ensemble on a validation part of the train split. Images are embedded once."""
    from cliplab.prompts import resolve_all
    from cliplab.report.results import prompt_study_json, write_json
    from cliplab.report.rows import record_prompt_study
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import prompt_study_table
    from cliplab.studies.prompts import run_prompt_study

    check_output(output, "--output", (".json",))
    _check_results(results, results_format)
    sets = resolve_all(templates or ["simple", "openai-imagenet-7"])
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    ds = _load_dataset(dataset, split, data_root, limit, classnames, cache_dir)
    train_ds = _load_dataset(dataset, select_split, data_root, None, classnames, cache_dir,
                             split_flag="--select-split") if select else None
    m = _load_model(model, pretrained, device, precision, cache_dir)
    study = run_prompt_study(m, ds, sets, cache_dir, baseline=baseline, descriptions=str(descriptions) if descriptions
                             else None, aggregate=aggregate, select_from=train_ds, val_fraction=val_fraction,
                             n_boot=bootstrap, seed=seed, batch_size=batch_size, num_workers=workers, quiet=quiet)
    _out(False).print(prompt_study_table(study))
    if study.selection:
        _out(False).print(f"selected templates (validation: {study.selection['val_split']}): "
                          + " | ".join(study.selection["templates"]))
    _report_failures(study.images.failures, quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": ds.split,
              "templates": templates, "baseline": study.baseline, "seed": seed, "bootstrap": bootstrap,
              "select": select, "descriptions": str(descriptions) if descriptions else None, "aggregate": aggregate}
    rec = RunRecorder("prompts", config)
    record_prompt_study(rec, study, seed)
    _write_results(rec, results, results_format, quiet)
    if output:
        write_json(output, prompt_study_json(study, config))
        _out(quiet).print(f"wrote {output}")


@app.command()
@handle_errors
def probe(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt, dataset: str = DatasetOpt,
    split: Optional[str] = SplitOpt,
    train_split: str = typer.Option("train", "--train-split", help="split the probes are trained on (a "
                                    "validation part of it chooses the weight decay)."),
    data_root: Optional[str] = DataRootOpt, classnames: Optional[str] = ClassnamesOpt,
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
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """Linear and k-shot probes on frozen embeddings, beside zero-shot.

    Logistic regression in torch with L-BFGS (GPU when available); the weight decay is swept on a validation
    split, then the probe is refit on all of train."""
    from cliplab.prompts import resolve_all
    from cliplab.report.results import probe_json, write_json
    from cliplab.report.rows import record_probe
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import probe_sweep_table, probe_table
    from cliplab.studies.probe import run_probe

    ks = [k for k in _parse_ints(kshot, "--kshot") if k > 0]
    check_output(output, "--output", (".json",))
    _check_results(results, results_format)
    _check_templates(templates)
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    test_ds = _load_dataset(dataset, split, data_root, limit, classnames, cache_dir)
    train_ds = _load_dataset(dataset, train_split, data_root, train_limit, classnames, cache_dir,
                             split_flag="--train-split")
    ts = resolve_all([templates or test_ds.templates_hint or "simple"], ensemble=True)[0]
    m = _load_model(model, pretrained, device, precision, cache_dir)
    study = run_probe(m, train_ds, test_ds, cache_dir, templates=ts, linear=linear, kshots=ks,
                      seeds=tuple(range(seed, seed + seeds)), zeroshot_init=zeroshot_init, wd=wd,
                      val_fraction=val_fraction, seed=seed, device=m.device, batch_size=batch_size,
                      num_workers=workers, quiet=quiet)
    _out(False).print(probe_table(study))
    sweep = probe_sweep_table(study)
    if sweep is not None:
        _out(False).print(sweep)
    _report_failures(study.train_images.failures + study.test_images.failures, quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": test_ds.split,
              "train_split": train_split, "kshot": ks, "seeds": seeds, "seed": seed, "wd": wd,
              "val_fraction": val_fraction, "templates": ts.name, "zeroshot_init": zeroshot_init}
    rec = RunRecorder("probe", config)
    record_probe(rec, study)
    _write_results(rec, results, results_format, quiet)
    if output:
        write_json(output, probe_json(study, config))
        _out(quiet).print(f"wrote {output}")


@app.command()
@handle_errors
def compare(
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="repeatable; paired by position with "
                                              "--pretrained (see `cliplab zeroshot --help` for accepted values)."),
    pretrained: Optional[List[str]] = typer.Option(None, "--pretrained", "-p", help="repeatable; 'none' for a "
                                                   "model without a tag."),
    models_file: Optional[Path] = typer.Option(None, "--models", help="YAML/TOML/JSON list of {model, pretrained, "
                                               "label}."),
    dataset: Optional[List[str]] = typer.Option(None, "--dataset", "-d", help="repeatable (default: shapes)."),
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    templates: Optional[str] = typer.Option(None, "--templates", "-t", help="one template set for every dataset "
                                            "(default: each dataset's usual set)."),
    probe: bool = typer.Option(False, "--probe", help="add a linear probe column (trained on --train-split)."),
    train_split: str = typer.Option("train", "--train-split"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", min=1),
    plot: Optional[Path] = typer.Option(None, "--plot", help="grouped bar chart path stem: writes STEM.png and "
                                        "STEM.svg."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="table as .csv, .parquet or .jsonl."),
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """Compare models on datasets: zero-shot (and linear probe) side by side, with bar charts.

    Columns: top-1/top-5, similarity of the true class, images/s, parameters, embedding dimension."""
    import pandas as pd

    from cliplab.prompts import resolve_all
    from cliplab.report.results import write_table
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import compare_table
    from cliplab.studies.compare import compare_figures, model_specs, run_compare

    specs = model_specs(model or ([] if models_file else ["tiny-shapes"]), pretrained, models_file)
    check_output(output, "--output", TABLE_SUFFIXES)
    check_output(plot, "--plot")
    _check_results(results, results_format)
    _check_templates(templates)
    _check_device(device, precision)
    for s in specs:
        _ensure_default_model(s.model, s.pretrained, cache_dir, quiet)
    pairs, sets = [], []
    for d in dataset or ["shapes"]:
        test = _load_dataset(d, split, data_root, limit, None, cache_dir)
        train = _load_dataset(d, train_split, data_root, train_limit, None, cache_dir,
                              split_flag="--train-split") if probe else None
        pairs.append((test, train))
        sets.append(resolve_all([templates or test.templates_hint or "simple"], ensemble=True)[0])
    config = {"models": [s.__dict__ for s in specs], "datasets": dataset, "templates": templates, "probe": probe,
              "split": split, "limit": limit}
    rec = RunRecorder("compare", config)
    rows = run_compare(specs, pairs, sets, cache_dir, device=device, precision=precision, batch_size=batch_size,
                       num_workers=workers, quiet=quiet, recorder=rec)
    _out(False).print(compare_table(rows))
    out = _out(quiet)
    if output:
        write_table(output, pd.DataFrame([r.as_dict() for r in rows]))
        out.print(f"wrote {output}")
    if plot:
        for p in compare_figures(rows, plot):
            out.print(f"wrote {p}")
            if p.suffix == ".png":
                rec.add_artifact(p, task="compare", model={"name": "several", "pretrained": None, "fingerprint": ""},
                                 dataset=pairs[0][0], caption="model comparison (zero-shot vs probe)")
    _write_results(rec, results, results_format, quiet)


@app.command("inspect")
@handle_errors
def inspect_cmd(
    images: List[str] = typer.Argument(..., help="image files or folders."),
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt,
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="take the class names from this dataset "
                                          "(default: shapes, unless --classes or --prompts)."),
    split: Optional[str] = SplitOpt,
    classes: Optional[str] = typer.Option(None, "--classes", help="comma-separated class names."),
    classnames: Optional[str] = ClassnamesOpt,
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="text file, one prompt per line, ranked as "
                                           "written (no template), e.g. 'a chest X-ray with pneumonia'."),
    templates: Optional[str] = typer.Option(None, "--templates", "-t", help="template set for class names."),
    topk: int = typer.Option(5, "--topk", min=1),
    figures: Optional[Path] = typer.Option(None, "--figures", help="folder for one PNG per image: the image and "
                                           "its top-k bars."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="all scores as .csv/.parquet/.jsonl (one "
                                          "row per image x candidate)."),
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    quiet: bool = QuietOpt,
):
    """Rank all classes (or your prompts) for given images, with cosine scores and CLIP probabilities."""
    import pandas as pd

    from cliplab.prompts import resolve_all
    from cliplab.report.results import write_table
    from cliplab.report.tables import inspect_table
    from cliplab.studies.inspect import image_paths, inspect_images, inspection_figures, read_prompts

    check_output(figures, "--figures", folder=True)
    check_output(output, "--output", TABLE_SUFFIXES)
    _check_results(results, results_format)
    paths = image_paths(images)
    prompt_list = read_prompts(prompts) if prompts else None
    names, hint = None, None
    if classes:
        names = [c.strip() for c in classes.split(",") if c.strip()]
        if len(names) < 2:
            raise CliplabError(f"--classes {classes!r}: give at least two comma-separated names")
    elif not prompt_list:
        ds = _load_dataset(dataset or "shapes", split, None, None, classnames, cache_dir)
        ds.require_classes("ranking classes")
        names, hint = ds.classnames, ds.templates_hint
    ts = resolve_all([templates or hint or "simple"], ensemble=True)[0]
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    m = _load_model(model, pretrained, device, precision, cache_dir)
    ins = inspect_images(m, paths, cache_dir, classnames=names, template_set=ts, prompts=prompt_list, quiet=quiet)
    _out(False).print(inspect_table(ins, topk))
    _report_failures(ins.images.failures, quiet)
    out = _out(quiet)
    from cliplab.report.rows import record_inspection
    from cliplab.report.store import RunRecorder

    rec = RunRecorder("inspect", {"images": [str(p) for p in paths], "classes": names, "prompts": prompt_list,
                                  "templates": ts.name, "topk": topk})
    candidates = _inspect_ds(dataset or ("prompts" if prompt_list else "classes"))
    record_inspection(rec, ins, candidates)
    if figures:
        written = inspection_figures(ins, figures, topk)
        out.print(f"wrote {len(written)} figure(s) to {figures}")
        for fig_path, idx in zip(written, ins.images.indices):
            rec.add_artifact(fig_path, task="inspection", model=m, dataset=candidates,
                             caption=f"ranking for {ins.paths[int(idx)].name}")
    _write_results(rec, results, results_format, quiet)
    if output:
        rows = [{"image": str(ins.paths[int(i)]), "candidate": lab, "rank": r + 1, "cosine": c, "probability": p}
                for row, i in enumerate(ins.images.indices) for r, (lab, c, p) in enumerate(ins.ranking(row, len(ins.labels)))]
        write_table(output, pd.DataFrame(rows))
        out.print(f"wrote {output}")


def _inspect_ds(name):
    from types import SimpleNamespace

    return SimpleNamespace(name=name or "images", split="-", fingerprint="")


attack_app = typer.Typer(help="Adversarial-style probes of a model (typographic attack).", no_args_is_help=True)
app.add_typer(attack_app, name="attack")


@attack_app.command("typographic")
@handle_errors
def attack_typographic(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt, dataset: str = DatasetOpt,
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    classnames: Optional[str] = ClassnamesOpt,
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
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """Write a wrong class name on every image; report the accuracy drop and flips to the written label.

    Attacked images are embedded once and cached under their own keys."""
    from cliplab.attacks import TypographicParams
    from cliplab.prompts import resolve_all
    from cliplab.report.results import provenance, write_json
    from cliplab.report.rows import record_attack
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import attack_table
    from cliplab.studies.attack import attack_examples_figure, run_typographic

    check_output(examples, "--examples", (".png",))
    check_output(output, "--output", (".json",))
    _check_results(results, results_format)
    params = TypographicParams(font_size=font_size, position=position, opacity=opacity, color=color,
                               font=str(font) if font else None, seed=seed)
    params.validate()
    _check_templates(templates)
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    ds = _load_dataset(dataset, split, data_root, limit, classnames, cache_dir)
    ts = resolve_all([templates or ds.templates_hint or "simple"], ensemble=True)[0]
    m = _load_model(model, pretrained, device, precision, cache_dir)
    res = run_typographic(m, ds, ts, params, cache_dir, rule=target, text_format=text, batch_size=batch_size,
                          num_workers=workers, quiet=quiet)
    _out(False).print(attack_table(res))
    _report_failures(res.clean.failures, quiet)
    out = _out(quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": ds.split, "limit": limit,
              "templates": ts.name, "target": target, "text": text, **params.__dict__}
    rec = RunRecorder("attack-typographic", config)
    record_attack(rec, res)
    if examples:
        out.print(f"wrote {attack_examples_figure(res, examples, n_examples)}")
        rec.add_artifact(examples, task="typographic_attack", model=m, dataset=ds,
                         caption=f"typographic attack examples ({target} target)")
    _write_results(rec, results, results_format, quiet)
    if output:
        write_json(output, {"task": "typographic_attack", "model": m.name, "pretrained": m.pretrained,
                            "dataset": ds.name, "split": ds.split, "metrics": res.summary(),
                            "model_fingerprint": m.fingerprint, "config": config, **provenance()})
        out.print(f"wrote {output}")


@app.command()
@handle_errors
def retrieval(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt,
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="captioned images: a caption file "
                                "(.csv/.jsonl), a COCO captions .json, a Karpathy split .json, or shapes."),
    split: Optional[str] = typer.Option(None, "--split", help="Karpathy files: test (default), val, train, all."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="image folder of a COCO/Karpathy JSON "
                                             "(default: guessed from the file's location)."),
    limit: Optional[int] = LimitOpt,
    ks: str = typer.Option("1,5,10", "--ks", help="recall@k cut-offs."),
    captions_out: Optional[Path] = typer.Option(None, "--captions", help="per-caption ranks and top-5 images "
                                                "(.csv/.parquet/.jsonl)."),
    failures: Optional[Path] = typer.Option(None, "--failures", help="PNG grid of the worst-ranked captions with "
                                            "their true and retrieved images."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results JSON."),
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """Caption retrieval: text→image and image→text recall@k, median and mean rank (chunked, bounded memory)."""
    from cliplab.report.results import provenance, write_json, write_table
    from cliplab.report.rows import record_retrieval
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import retrieval_table
    from cliplab.studies.retrieval import failures_figure, run_caption_retrieval

    cut = [k for k in _parse_ints(ks, "--ks") if k > 0] or [1, 5, 10]
    check_output(captions_out, "--captions", TABLE_SUFFIXES)
    check_output(failures, "--failures", (".png",))
    check_output(output, "--output", (".json",))
    _check_results(results, results_format)
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    ds = _load_dataset(dataset, split, image_root, limit, None, cache_dir)
    if getattr(ds, "missing", 0) and not quiet:
        from cliplab.progress import console

        console.print(f"[yellow]{ds.missing} images listed in {escape(dataset)} are not on disk and were left "
                      "out[/yellow]")
    m = _load_model(model, pretrained, device, precision, cache_dir)
    run = run_caption_retrieval(m, ds, cache_dir, ks=tuple(cut), device=m.device, batch_size=batch_size,
                                num_workers=workers, quiet=quiet)
    _out(False).print(retrieval_table(run))
    _report_failures(run.images.failures, quiet)
    out = _out(quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": ds.split, "limit": limit,
              "ks": cut}
    rec = RunRecorder("retrieval", config)
    record_retrieval(rec, run)
    if captions_out:
        write_table(captions_out, run.caption_frame())
        out.print(f"wrote {captions_out}")
    if failures:
        out.print(f"wrote {failures_figure(run, failures)}")
        rec.add_artifact(failures, task="caption_retrieval", model=m, dataset=ds,
                         caption="caption → image failures (worst-ranked captions)")
    _write_results(rec, results, results_format, quiet)
    if output:
        write_json(output, {"dataset": ds.name, "model": m.name, "pretrained": m.pretrained,
                            "task": "zeroshot_retrieval", "metrics": run.result.metrics, "split": ds.split,
                            "model_fingerprint": m.fingerprint, "dataset_fingerprint": ds.fingerprint,
                            "skipped_images": [{"id": i, "reason": r} for _, i, r in run.images.failures],
                            "config": config, **provenance()})
        out.print(f"wrote {output}")


@app.command()
@handle_errors
def search(
    query: Optional[List[str]] = typer.Argument(None, help="text queries (or use --queries / --image)."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="file: one query per line ('# name' starts a "
                                           "query family), or JSON {family: [queries]}."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="query image(s) (image→image search)."),
    plus: Optional[str] = typer.Option(None, "--plus", help="with --image: add this text's embedding "
                                       "(e.g. --image dog.jpg --plus 'in the snow')."),
    minus: Optional[str] = typer.Option(None, "--minus", help="with --image: subtract this text's embedding."),
    text_weight: float = typer.Option(1.0, "--text-weight", help="weight of --plus/--minus texts."),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="repeatable: results side by side "
                                              "(default: tiny-shapes)."),
    pretrained: Optional[List[str]] = typer.Option(None, "--pretrained", "-p", help="repeatable, paired with "
                                                   "--model ('none' for no tag)."),
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="images to search: a folder, a caption file, a "
                                "dataset name (see `cliplab zeroshot --help`)."),
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    k: int = typer.Option(8, "--topk", "-k", min=1),
    grids: Optional[Path] = typer.Option(None, "--grids", help="folder for one PNG grid per query (top-k images "
                                         "with scores, one row per model)."),
    index_type: Optional[str] = typer.Option(None, "--index-type", help="flat (exact) | ivf | hnsw: search with a "
                                             "FAISS index instead of exact chunked search."),
    index: Optional[Path] = typer.Option(None, "--index", help="FAISS index file: reused when it matches the "
                                         "model and images, else built and saved here."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="hits as .csv/.parquet/.jsonl."),
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """Search images by text (or image, or image ± text): top-k with cosine scores, grids, several models."""
    import pandas as pd

    from cliplab.report.results import write_table
    from cliplab.report.rows import record_search
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import search_table
    from cliplab.studies.compare import model_specs
    from cliplab.studies.search import Query, read_queries, run_search, search_figures

    check_output(grids, "--grids", folder=True)
    check_output(index, "--index", warn_existing=False)
    check_output(output, "--output", TABLE_SUFFIXES)
    _check_results(results, results_format)
    qs = [Query(text=t) for t in (query or [])] + (read_queries(queries) if queries else [])
    for p in image or []:
        if not p.is_file():
            raise CliplabError(f"--image {p}: file not found")
        qs.append(Query(image=str(p), plus=plus, minus=minus))
    if (plus or minus) and not image:
        raise CliplabError("--plus/--minus modify an image query; give --image too")
    if not qs:
        raise CliplabError("no query: give text queries, --queries FILE or --image PATH")
    specs = model_specs(model or ["tiny-shapes"], pretrained, None)
    _check_device(device, precision)
    for s in specs:
        _ensure_default_model(s.model, s.pretrained, cache_dir, quiet)
    ds = _load_dataset(dataset, split, data_root, limit, None, cache_dir)
    models = [_load_model(s.model, s.pretrained, device, precision, cache_dir) for s in specs]
    run = run_search(models, ds, qs, cache_dir, k=k, text_weight=text_weight, index_path=index,
                     index_type=index_type, batch_size=batch_size, num_workers=workers, quiet=quiet)
    _out(False).print(search_table(run))
    out = _out(quiet)
    rec = RunRecorder("search", {"queries": [q.label for q in qs], "dataset": dataset, "k": k,
                                 "models": [s.__dict__ for s in specs], "index_type": index_type})
    record_search(rec, run)
    if grids:
        written = search_figures(run, grids)
        out.print(f"wrote {len(written)} grid(s) to {grids}")
        for p, qy in zip(written, qs):
            rec.add_artifact(p, task="search", model=models[0], dataset=ds, caption=f"search: {qy.label}")
    _write_results(rec, results, results_format, quiet)
    if output:
        rows = [{"query": qy.label, "family": qy.family, "model": h.model.name, "pretrained": h.model.pretrained,
                 "rank": j + 1, "image": ident, "score": float(h.scores[q, j])}
                for h in run.hits for q, qy in enumerate(run.queries) for j, ident in enumerate(run.ids(h, q))]
        write_table(output, pd.DataFrame(rows))
        out.print(f"wrote {output}")


@app.command()
@handle_errors
def similar(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt,
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="gallery: a folder (class subfolders = labels), "
                                "or any dataset (see `cliplab zeroshot --help`)."),
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    descriptor: str = typer.Option("global", "--descriptor", help="global (CLIP embedding) | mac | rmac | gem, "
                                   "the last three from --layer."),
    layer: Optional[str] = typer.Option(None, "--layer", help="module path for mac/rmac/gem (default: "
                                        "visual.layer4 for ResNets, visual.transformer patch tokens for ViTs)."),
    levels: int = typer.Option(3, "--levels", min=1, help="R-MAC scales."),
    gem_p: float = typer.Option(3.0, "--gem-p", min=1.0),
    pca_dim: Optional[int] = typer.Option(None, "--pca-dim", min=1, help="PCA to this many dimensions."),
    whiten: bool = typer.Option(True, "--whiten/--no-whiten", help="whiten with the PCA (when --pca-dim or "
                                "--pca-fit is given)."),
    pca_fit: Optional[str] = typer.Option(None, "--pca-fit", help="learn the PCA(-whitening) on these images (a "
                                          "folder or dataset), not on the gallery."),
    qe: int = typer.Option(0, "--qe", min=0, help="average query expansion with the top N neighbours."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Oxford/Paris ground truth: a folder (*_query.txt, _good, "
                                      "_ok, _junk) or a revisited gnd_*.pkl (easy/hard/junk: Easy, Medium and Hard "
                                      "protocols). mAP and mP@1/5/10 with junk ignored; positives missing from the "
                                      "gallery count as misses. Without --gt, class labels are used."),
    no_crop: bool = typer.Option(False, "--no-crop", help="with --gt: use whole query images, not their boxes."),
    k: int = typer.Option(10, "--topk", "-k", min=1, help="k for mAP@k / P@k and for --query results."),
    query: Optional[List[Path]] = typer.Option(None, "--query", help="query image(s): show their top-k."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="PNG of --query results."),
    index: Optional[Path] = typer.Option(None, "--index", help="save a FAISS flat index of the final descriptors "
                                         "(+ the PCA as INDEX.pca.npz)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results JSON."),
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """Image→image retrieval: global/MAC/R-MAC/GeM descriptors, PCA-whitening, query expansion, mAP."""
    from cliplab.embed.descriptors import DescriptorSpec
    from cliplab.report.results import provenance, write_json
    from cliplab.report.rows import record_similar
    from cliplab.report.store import RunRecorder
    from cliplab.report.tables import similar_table
    from cliplab.studies.similar import query_hits, run_similar, similar_figure

    check_output(grid, "--grid", (".png",))
    check_output(index, "--index", warn_existing=False)
    check_output(output, "--output", (".json",))
    _check_results(results, results_format)
    spec = DescriptorSpec(descriptor, layer, levels, 0.4, gem_p)
    spec.validate()
    for q in query or []:
        if not q.is_file():
            raise CliplabError(f"--query {q}: file not found")
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    gal = _load_dataset(dataset, split, data_root, limit, None, cache_dir)
    fit = _load_dataset(pca_fit, None, data_root, None, None, cache_dir) if pca_fit else None
    m = _load_model(model, pretrained, device, precision, cache_dir)
    run = run_similar(m, gal, spec, cache_dir, pca_fit=fit, pca_dim=pca_dim, whiten=whiten, qe=qe, k=k, gt_dir=gt,
                      crop_queries=not no_crop, batch_size=batch_size, num_workers=workers, quiet=quiet)
    out = _out(quiet)
    for note in run.notes:
        out.print(f"note: {note}")
    variant = f"{descriptor}" + (f" layer={layer}" if layer else "") + (f" pca={pca_dim}" if pca_dim else "") + \
        (" whiten" if run.whitening is not None and whiten else "") + (f" qe={qe}" if qe else "")
    table = similar_table(run.metrics, f"image retrieval · {m.name} · {gal.name} · {variant} "
                                       f"(dim {run.descriptors.shape[1]})")
    _out(False).print(table if run.metrics else "no labels or --gt: nothing to evaluate (use --query to search)")
    rec = RunRecorder("similar", {"model": model, "pretrained": pretrained, "dataset": dataset, **spec.__dict__,
                                  "pca_dim": pca_dim, "whiten": whiten, "pca_fit": pca_fit, "qe": qe, "k": k,
                                  "gt": str(gt) if gt else None})
    record_similar(rec, run, variant)
    if query:
        scores, pos = query_hits(run, m, [str(q) for q in query], cache_dir, k, qe)
        for qi, q in enumerate(query):
            hits = ", ".join(f"{Path(gal.source.id(int(run.indices[p]))).name} ({sc:.3f})"
                             for p, sc in zip(pos[qi], scores[qi]))
            _out(False).print(f"{q.name}: {hits}")
        if grid:
            out.print(f"wrote {similar_figure(run, [str(q) for q in query], scores, pos, grid)}")
            rec.add_artifact(grid, task="image_retrieval", model=m, dataset=gal, caption=f"similar images · {variant}")
    _write_results(rec, results, results_format, quiet)
    if index:
        from cliplab.index import VectorIndex

        ids = [gal.source.id(int(i)) for i in run.indices]
        VectorIndex.build(run.descriptors, ids, "flat", meta={"model_fingerprint": m.fingerprint,
                                                              "descriptor": spec.__dict__}).save(index)
        if run.whitening is not None:
            run.whitening.save(index.with_name(index.name + ".pca.npz"))
        out.print(f"wrote {index}")
    if output:
        write_json(output, {"task": "image_retrieval", "model": m.name, "pretrained": m.pretrained,
                            "dataset": gal.name, "metrics": run.metrics, "descriptor": spec.__dict__,
                            "variant": variant, "model_fingerprint": m.fingerprint, **provenance()})
        out.print(f"wrote {output}")


@app.command()
@handle_errors
def cluster(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt, dataset: str = DatasetOpt,
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    k: Optional[str] = typer.Option(None, "--k", help="number of clusters, or a comma list to sweep (default: the "
                                    "number of classes, else 10)."),
    pca_dim: Optional[int] = typer.Option(None, "--pca-dim", min=1, help="PCA before clustering."),
    backend: str = typer.Option("sklearn", "--backend", help="sklearn | faiss"),
    seed: int = typer.Option(0, "--seed"),
    grid: Optional[Path] = typer.Option(None, "--grid", help="PNG of sample images per cluster (for the first k)."),
    per_cluster: int = typer.Option(8, "--per-cluster", min=1),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="assignments as .csv/.parquet/.jsonl."),
    results: Optional[Path] = ResultsOpt, results_format: str = ResultsFormatOpt,
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, quiet: bool = QuietOpt,
):
    """k-means on image embeddings (optionally after PCA): NMI, ARI and purity against labels, sample grids."""
    import pandas as pd
    from rich.table import Table

    from cliplab.embed import embed_images
    from cliplab.report.results import write_table
    from cliplab.report.rows import record_clusters
    from cliplab.report.store import RunRecorder
    from cliplab.studies.cluster import cluster_grid
    from cliplab.tasks.clustering import kmeans, prepare

    check_output(grid, "--grid", (".png",))
    check_output(output, "--output", TABLE_SUFFIXES)
    _check_results(results, results_format)
    if backend not in ("sklearn", "faiss"):
        raise CliplabError(f"--backend {backend!r}: choose sklearn or faiss")
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    ds = _load_dataset(dataset, split, data_root, limit, None, cache_dir)
    ks = _parse_ints(k, "--k") if k else [len(ds.classnames) if ds.classnames else 10]
    m = _load_model(model, pretrained, device, precision, cache_dir)
    res = embed_images(m, ds, cache_dir, batch_size=batch_size, num_workers=workers, quiet=quiet)
    X = prepare(res.embeddings, pca_dim, seed)
    labels = ds.labels[res.indices] if ds.labels is not None else None
    runs = [kmeans(X, kk, backend=backend, seed=seed, labels=labels) for kk in ks]
    table = Table(title=f"k-means · {m.name} · {ds.name} ({len(X)} images" + (f", {len(ds.classnames)} classes)"
                                                                              if labels is not None else ")"))
    cols = ["k", "inertia", "silhouette"] + (["NMI", "ARI", "purity"] if labels is not None else [])
    for c in cols:
        table.add_column(c, justify="right")
    for c in runs:
        mt = c.metrics
        table.add_row(str(c.k), f"{mt['inertia']:.1f}", f"{mt.get('silhouette', float('nan')):.3f}",
                      *([f"{mt['nmi']:.3f}", f"{mt['ari']:.3f}", f"{100 * mt['purity']:.1f} %"]
                        if labels is not None else []))
    _out(False).print(table)
    out = _out(quiet)
    variant = f"kmeans-{backend}" + (f" pca={pca_dim}" if pca_dim else "")
    rec = RunRecorder("cluster", {"model": model, "pretrained": pretrained, "dataset": dataset, "k": ks,
                                  "pca_dim": pca_dim, "backend": backend, "seed": seed})
    record_clusters(rec, m, ds, runs, variant)
    if grid:
        out.print(f"wrote {cluster_grid(ds, res.indices, runs[0], X, grid, per_cluster)}")
        rec.add_artifact(grid, task="clustering", model=m, dataset=ds, caption=f"cluster samples (k = {runs[0].k})")
    _write_results(rec, results, results_format, quiet)
    if output:
        df = pd.DataFrame({"id": [ds.source.id(int(i)) for i in res.indices]})
        if labels is not None:
            df["label"] = np.asarray(ds.classnames, dtype=object)[labels]
        for c in runs:
            df[f"cluster_k{c.k}"] = c.assignments
        write_table(output, df)
        out.print(f"wrote {output}")


@app.command()
@handle_errors
def report(
    results_dirs: List[Path] = typer.Argument(..., help="results store folder(s) written with --results."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="the HTML file; REPORT.csv, "
                                "REPORT.parquet and REPORT-clip_benchmark/ are written beside it."),
    title: str = typer.Option("cliplab report", "--title"),
    clip_benchmark: Optional[List[Path]] = typer.Option(None, "--clip-benchmark", help="CLIP_benchmark result "
                                                         "JSON(s) to show beside cliplab's numbers."),
    no_exports: bool = typer.Option(False, "--no-exports", help="only the HTML file."),
    quiet: bool = QuietOpt,
):
    """Turn results stores into one self-contained HTML report (tables, plots, image grids).

    No network is needed to view it; CSV, parquet and CLIP_benchmark JSON exports are written beside it."""
    import pandas as pd

    from cliplab.report.html import build_report, import_clip_benchmark
    from cliplab.report.store import read_results

    check_output(output, "--output", (".html", ".htm"))
    df = read_results(*results_dirs)
    if clip_benchmark:
        df = pd.concat([df, import_clip_benchmark(clip_benchmark)], ignore_index=True)
    path = build_report(df, output, title=title, sources=results_dirs, exports=not no_exports)
    _out(quiet).print(f"wrote {path} ({len(df)} rows, {df.run_id.nunique()} runs)")


@app.command()
@handle_errors
def embed(
    model: str = ModelOpt, pretrained: Optional[str] = PretrainedOpt, dataset: str = DatasetOpt,
    split: Optional[str] = SplitOpt, data_root: Optional[str] = DataRootOpt, limit: Optional[int] = LimitOpt,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help=".npy (+ .ids.csv sidecar) or .parquet."),
    device: Optional[str] = DeviceOpt, precision: Optional[str] = PrecisionOpt, cache_dir: Optional[Path] = CacheDirOpt,
    batch_size: int = BatchOpt, workers: Optional[int] = WorkersOpt, no_cache: bool = NoCacheOpt,
    shard_batches: int = typer.Option(16, "--shard-batches", min=1, help="batches per cache shard (the resume unit)."),
    pipeline: str = PipelineOpt,
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the image encoder (pays off on "
                                       "large collections on GPU)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory "
                                                 "format for the image tower (default: on for conv towers)."),
    quiet: bool = QuietOpt,
):
    """Embed a dataset's images into the cache (resumable), optionally exporting them. Shards are written every
    --shard-batches batches or 30 s; unreadable images and images over 400 MP are skipped with the reason."""
    from cliplab.embed import embed_images
    from cliplab.report.results import write_embeddings

    check_output(output, "--output", (".npy", ".parquet"))
    _check_device(device, precision)
    _ensure_default_model(model, pretrained, cache_dir, quiet)
    ds = _load_dataset(dataset, split, data_root, limit, None, cache_dir)
    from cliplab.models import load_model

    m = load_model(model, pretrained, device=device, precision=precision, cache_dir=cache_dir,
                   channels_last=channels_last, compile=compile_model)
    res = embed_images(m, ds, cache_dir, batch_size=batch_size, num_workers=workers, use_cache=not no_cache,
                       shard_batches=shard_batches, quiet=quiet, pipeline=pipeline)
    out = _out(quiet)
    out.print(f"{len(res.indices)} embeddings (dim {res.embeddings.shape[1]}), {res.computed} computed, "
              f"{len(res.indices) - res.computed} from cache; model fingerprint {m.fingerprint}")
    _report_failures(res.failures, quiet)
    if output:
        for p in write_embeddings(output, res, ds):
            out.print(f"wrote {p}")


@app.command()
@handle_errors
def models(
    cache_dir: Optional[Path] = CacheDirOpt,
    pretrained_only: bool = typer.Option(False, "--pretrained-only", help="only architecture/tag pairs."),
    filter: Optional[str] = typer.Option(None, "--filter", help="substring to match in the name."),
):
    """List open_clip architectures with their pretrained tags, and models trained locally."""
    from rich.console import Console
    from rich.table import Table

    from cliplab.models.local import list_local_models
    from cliplab.models.openclip import list_architectures, list_pretrained
    from cliplab.paths import resolve_cache_dir

    tags: dict[str, list[str]] = {}
    for arch, tag in list_pretrained():
        tags.setdefault(arch, []).append(tag)
    table = Table(title="open_clip architectures (use --model ARCH --pretrained TAG)")
    table.add_column("architecture")
    table.add_column("pretrained tags")
    for arch in list_architectures():
        if (filter and filter.lower() not in arch.lower()) or (pretrained_only and arch not in tags):
            continue
        table.add_row(arch, ", ".join(tags.get(arch, [])) or "—")
    console = Console()
    console.print(table)
    local = list_local_models(resolve_cache_dir(cache_dir))
    lt = Table(title="local models (use --model NAME)")
    for col in ("name", "trained on", "images", "train s", "folder"):
        lt.add_column(col)
    for lm in local:
        lt.add_row(lm.name, str(lm.meta.get("dataset", "?")), str(lm.meta.get("images", "?")),
                   str(lm.meta.get("train_seconds", "?")), str(lm.folder))
    console.print(lt if local else "no local models yet (`cliplab train` or `cliplab demo` makes one)")
    console.print("Hugging Face transformers CLIP: --model hf:openai/clip-vit-base-patch32 (pip install 'cliplab\\[hf]')")


@app.command()
@handle_errors
def train(
    name: str = typer.Option(..., "--name", help="name of the new model: saved to <cache>/models/NAME (or "
                             "--output-dir/NAME) and used as --model NAME. An existing NAME is an error unless --force."),
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="captioned data: a caption file (.csv/.jsonl) or "
                                "shapes."),
    split: Optional[str] = typer.Option(None, "--split", help="split to train on (default: train; a caption file "
                                        "without splits is used whole)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="open_clip architecture or config .json to "
                                        "train (default: cliplab's tiny CLIP, a ModifiedResNet image tower of width 8 "
                                        "+ a 2-layer text transformer: the recipe of the shipped tiny-shapes)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", "-p", help="fine-tune from this tag/checkpoint."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="default: the tiny-shapes recipe's."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=2, help="default: the recipe's."),
    lr: Optional[float] = typer.Option(None, "--lr", help="default: the recipe's."),
    seed: Optional[int] = typer.Option(None, "--seed", help="default: the recipe's (the shipped model's seed)."),
    limit: Optional[int] = LimitOpt, output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="save "
                                                                                "here instead of the cache."),
    force: bool = typer.Option(False, "--force", help="replace an existing model of the same name (with NAME "
                               "tiny-shapes: train a cache copy that --model tiny-shapes then uses instead of the "
                               "shipped one)."),
    cache_dir: Optional[Path] = CacheDirOpt, quiet: bool = QuietOpt,
):
    """Train a CLIP with the contrastive loss on a caption file, or fine-tune an open_clip model.

    By default this trains cliplab's tiny ResNet-tower CLIP on `shapes` with the recipe of the shipped
    `tiny-shapes` model (same seed: same model up to CPU float differences)."""
    import json

    from cliplab.models.local import SHIPPED_NAMES
    from cliplab.paths import resolve_cache_dir
    from cliplab.train import TrainConfig, train_clip

    check_output(output_dir, "--output-dir", folder=True)
    cache = resolve_cache_dir(cache_dir)
    if "/" in name or ":" in name or name.endswith(".json") or name.startswith(".") or not name.strip():
        raise CliplabError(f"--name {name!r}: use a plain name (no '/', ':', leading '.' or .json)")
    overrides = output_dir is None and name in SHIPPED_NAMES
    if overrides and not force:
        raise CliplabError(f"--name {name}: {name} is the model shipped with cliplab; choose another --name, or pass "
                           f"--force to train a cache copy that --model {name} will use instead of the shipped one")
    recipe = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed).items() if v is not None}
    ds = _load_train_set(dataset, split, limit, cache)
    model_cfg = base = None
    if model and model.endswith(".json"):
        if not Path(model).is_file():
            raise CliplabError(f"--model {model}: config file not found")
        model_cfg = json.loads(Path(model).read_text())
        model_cfg = model_cfg.get("model_cfg", model_cfg)
    elif model:
        base = model
    folder = train_clip(ds, cache, name, out_dir=output_dir, model_cfg=model_cfg, base_model=base,
                        pretrained=pretrained, config=TrainConfig(**recipe), quiet=quiet, overwrite=force,
                        extra_meta={"overrides_shipped": True} if overrides else None)
    meta = json.loads((folder / "meta.json").read_text())
    if output_dir is None:
        use = f"--model {name}" + (f" --cache-dir {cache_dir}" if cache_dir else "")
    else:
        use = f"--model local-dir:{folder}"
    _out(False).print(f"trained {name} on {meta['images']} images in {meta['train_seconds']} s "
                      f"(final loss {meta['history'][-1]['loss']:.3f}); saved to {folder}")
    if overrides:
        _out(False).print(f"--model {name} now uses this model instead of the shipped one; delete {folder} to go back")
    _out(False).print(f"use it with: {use}")


@app.command()
@handle_errors
def demo(
    cache_dir: Optional[Path] = CacheDirOpt, quiet: bool = QuietOpt,
    output_dir: Path = typer.Option(Path("cliplab-demo"), "--output-dir", help="folder for the demo's results "
                                    "store, figures and report.html: a new folder, or one an earlier demo created "
                                    "(marked by a .cliplab-demo file; its results are replaced)."),
    no_report: bool = typer.Option(False, "--no-report", help="only the zero-shot tables."),
):
    """Offline demo: the shipped tiny CLIP (tiny-shapes) on `shapes`: every study, then the HTML report.

    Zero-shot with five template sets, a prompt study, probes, retrieval, search, similar, cluster and a
    typographic attack."""
    from cliplab.demo import run_demo

    check_output(output_dir, "--output-dir", folder=True)
    run_demo(cache_dir, quiet=quiet, output_dir=output_dir, report=not no_report)


def _write_results(rec, results, fmt, quiet) -> None:
    path = rec.write(results, fmt)
    if path is not None:
        _out(quiet).print(f"added {len(rec.rows)} rows to the results store: {path}")


def _parse_ints(value: str, option: str) -> list[int]:
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise CliplabError(f"{option} {value!r}: expected comma-separated integers, e.g. 1,2,4,8,16") from None
    if any(v < 0 for v in out):
        raise CliplabError(f"{option} {value!r}: values must be >= 0")
    return out


def _report_failures(failures, quiet: bool) -> None:
    if not failures:
        return
    from cliplab.progress import console

    console.print(f"[yellow]skipped {len(failures)} image(s) that could not be used:[/yellow]")
    for _, ident, reason in failures[:20]:
        console.print(f"  {escape(str(ident))}: {escape(str(reason))}")
    if len(failures) > 20:
        console.print(f"  ... and {len(failures) - 20} more (all listed in --output JSON)")


def _escape_help(typer_app: typer.Typer, done: set[int] | None = None) -> None:
    """Help texts are plain text: escape what rich would take for markup (``{class: [texts]}``,
    ``'cliplab[hf]'``), so ``--help`` shows them as written."""
    done = set() if done is None else done
    for info in typer_app.registered_commands:
        if info.help is None and info.callback.__doc__:
            info.help = inspect.cleandoc(info.callback.__doc__)
        if info.help:
            info.help = escape(info.help)
        for param in inspect.signature(info.callback).parameters.values():
            default = param.default
            if getattr(default, "help", None) and id(default) not in done:  # shared Option objects: once
                default.help = escape(default.help)
                done.add(id(default))
    for group in typer_app.registered_groups:
        _escape_help(group.typer_instance, done)


_escape_help(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
