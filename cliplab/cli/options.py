"""Options declared once (``Annotated`` aliases reused by every command), flag checks that run before any work,
and the one error handler that turns library errors into ``error:`` lines."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from cliplab.errors import CliplabError, ParameterError

# Library parameters whose flag is not ``--`` + the name with dashes.
FLAGS = {"pooling": "--descriptor", "template_sets": "--templates", "rule": "--target", "text_format": "--text",
         "select_from": "--select-split", "k": "--topk", "models": "--model", "models_file": "--models",
         "gt_dir": "--gt", "query_images": "--query", "out_dir": "--output-dir", "overwrite": "--force",
         "implementation": "--kmeans"}


def flag_for(param: str) -> str:
    """The CLI flag that sets a library parameter."""
    return FLAGS.get(param, "--" + param.replace("_", "-"))

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=(
        'open_clip architecture (ViT-B-32), hf-hub:org/name, local-dir:FOLDER, a model-config .json, hf:org/name '
        '(transformers), or a model trained by `cliplab train` (see `cliplab models`).'))]
PretrainedOpt = Annotated[Optional[str], typer.Option("--pretrained", "-p", help=(
        'pretrained tag (openai, laion2b_s34b_b79k, ...) or a checkpoint file (.pt/.bin/.safetensors).'))]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help=(
        'shapes[:ATTRIBUTE], a torchvision name (cifar10, cifar100, food101, eurosat, stl10, flowers102, oxford_pets,'
        ' dtd, mnist), a folder of class subfolders or images, a manifest or caption file (.csv/.tsv/.jsonl/.parquet,'
        ' FILE#image=COL,label=COL), webdataset .tar shards (a shard, folder or pattern, CLIP_benchmark ROOT; wds:PATH),'
        ' a Hugging Face dataset (a save_to_disk folder, hf-datasets:org/name); manifests and shards may be URLs.'))]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help=(
        'dataset split (named datasets: default test; a folder with split subfolders needs it). A split that does not'
        ' exist is an error listing those that do.'))]
DataRootOpt = Annotated[Optional[str], typer.Option("--data-root", help=(
        'where torchvision datasets are (downloaded when online).'))]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help=(
        'use a seeded random subset of N images.'))]
ClassnamesOpt = Annotated[Optional[str], typer.Option("--classnames", help=(
        'class names file (.txt one per line, or .json list/map).'))]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help=(
        'cpu, cuda, cuda:1 (default: cuda if available).'))]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help=(
        'fp32 | amp | amp_bf16 | fp16 | bf16 (default: amp on GPU, fp32 on CPU).'))]
CacheDirOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help=(
        'embedding/model/dataset cache (default: user cache dir, or $CLIPLAB_CACHE_DIR).'))]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=0, help=(
        'images per batch; 0 = chosen from free GPU memory (64 on CPU).'))]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=0, help=(
        'DataLoader worker processes (default: automatic).'))]
PipelineOpt = Annotated[str, typer.Option("--pipeline", help=(
        "image preprocessing: pil (open_clip's transform, the reference), tensor (torchvision decoding + batched "
        'tensor resize/normalise; JPEGs decoded on the GPU), auto (tensor on CUDA, else pil).'))]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help=(
        "recompute embeddings and don't write the cache."))]
ResultsOpt = Annotated[Optional[Path], typer.Option("--results", help=(
        "results store folder: this run's rows (model, dataset, task, metric, value, CI, seed, fingerprints, config) "
        'are added as a new file; read it with pandas or `cliplab report`.'))]
ResultsFormatOpt = Annotated[str, typer.Option("--results-format", help=(
        'parquet | jsonl'))]
BackendOpt = Annotated[str, typer.Option("--backend", help=(
        'what runs the towers: auto (the default: OpenVINO on the CPU when installed, else torch), torch, or openvino '
        '(CPU; each tower converted once and cached; fp32, or --precision bf16). Gradient-based work always uses '
        'torch.'))]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help=(
        'no progress bars or notes (result tables and errors still print).'))]


def handle_errors(fn):
    """User errors become one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ParameterError as exc:
            typer.echo(f"error: {exc.render(flag_for)}", err=True)
            raise typer.Exit(2)
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


def check_results(results: Optional[Path], fmt: str) -> None:
    from cliplab.results.store import FORMATS

    if fmt not in FORMATS:
        raise CliplabError(f"--results-format {fmt!r}: choose {' or '.join(FORMATS)}")
    check_output(results, "--results", folder=True)


def check_templates(templates) -> None:
    """Template values are resolved once up front, so a bad file fails before any data is loaded."""
    from cliplab.prompts import resolve_all

    if templates:
        resolve_all(templates if isinstance(templates, list) else [templates])


def check_device(device: Optional[str], precision: Optional[str], backend: Optional[str] = "auto") -> None:
    """Device, backend and precision are checked before any data is loaded or model trained."""
    from cliplab.models import check_options  # heavy (torch): only when a command runs

    check_options(device, precision, backend)


def parse_ints(value: str, option: str) -> list[int]:
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise CliplabError(f"{option} {value!r}: expected comma-separated integers, e.g. 1,2,4,8,16") from None
    if any(v < 0 for v in out):
        raise CliplabError(f"{option} {value!r}: values must be >= 0")
    return out
