"""Commands that manage models and reports and run the demo: models, train, report, demo (the studies' commands,
``embed`` among them, are made from their declarations: :mod:`cliplab.cli.doors`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cliplab.cli.doors import finish
from cliplab.cli.options import check_device, check_output, handle_errors, option, stdout
from cliplab.errors import CliplabError
from cliplab.inputs import BACKEND_P, CACHE_DIR_P, LIMIT_P, QUIET_P, RunOptions, open_dataset
from cliplab.progress import ConsoleProgress, note, use

CacheDirOpt = option(CACHE_DIR_P)
QuietOpt = option(QUIET_P)
BackendOpt = option(BACKEND_P)
LimitOpt = option(LIMIT_P)


@handle_errors
def report(
    results_dirs: List[Path] = typer.Argument(..., metavar="RESULTS_DIR...", help="results store folder(s) written with --results."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="the HTML file; REPORT.csv, "
                                "REPORT.parquet and REPORT-clip_benchmark/ are written beside it."),
    title: str = typer.Option("cliplab report", "--title"),
    clip_benchmark: Optional[List[Path]] = typer.Option(None, "--clip-benchmark", help="CLIP_benchmark result "
                                                         "JSON(s) to show beside cliplab's numbers."),
    no_exports: bool = typer.Option(False, "--no-exports", help="only the HTML file."),
    quiet: QuietOpt = False,
):
    """Turn results stores into one self-contained HTML report (tables, plots, image grids).

    No network is needed to view it; CSV, parquet and CLIP_benchmark JSON exports are written beside it."""
    import pandas as pd

    from cliplab.report.html import build_report, import_clip_benchmark
    from cliplab.results.store import read_results
    from cliplab.studies import discover

    check_output(output, "--output", (".html", ".htm"), warn_existing=False)
    with use(ConsoleProgress(quiet=quiet)):
        report_guard(output, results_dirs, clip_benchmark or [], exports=not no_exports)
        discover()  # every study's report sections
        df = read_results(*results_dirs)
        if clip_benchmark:
            df = pd.concat([df, import_clip_benchmark(clip_benchmark)], ignore_index=True)
        path = build_report(df, output, title=title, sources=results_dirs, exports=not no_exports)
    stdout(quiet).print(f"wrote {path} ({len(df)} rows, {df.run_id.nunique()} runs)")


def report_guard(output: Path, stores: list[Path], clip_benchmark: list[Path], exports: bool) -> None:
    """The report's files (the page and, with exports, REPORT.csv, REPORT.parquet and REPORT-clip_benchmark/)
    checked against what it reads (the stores' row files and figures, the CLIP_benchmark files) before any work."""
    import os

    from cliplab.results import guard

    output = Path(output).expanduser()
    planned = [guard.Planned(output, "output", output)]
    if exports:
        planned += [guard.Planned(output.with_suffix(s), "output", output) for s in (".csv", ".parquet")]
        planned.append(guard.Planned(output.with_name(output.stem + "-clip_benchmark"), "output", output, folder=True))
    reads = guard.Inputs.empty()
    for store in stores:
        reads.add_path(store, f"the results store {store}")
        if Path(store).is_dir():
            reads.store_dirs.add(os.path.normcase(os.path.realpath(store)))
    for f in clip_benchmark:
        reads.add_path(f, f"the CLIP_benchmark file {f}")
    guard.check(planned, reads, lambda p: "--output")


PARAMS_LISTED = 20  # parameters are counted (each architecture built on the meta device) for at most this many rows


@handle_errors
def models(
    cache_dir: CacheDirOpt = None,
    pretrained_only: bool = typer.Option(False, "--pretrained-only", help="only architecture/tag pairs."),
    filter: Optional[str] = typer.Option(None, "--filter", help="substring to match in the name."),
    params: Optional[bool] = typer.Option(None, "--params/--no-params", help=(
        "count each architecture's parameters (built without weights on PyTorch's meta device; default: when "
        f"--filter leaves at most {PARAMS_LISTED} architectures; all of them take about half a minute).")),
):
    """List open_clip architectures with their facts (backbone and patch size, input resolution, parameters,
    embedding width, text context, pretraining data of the tags) and pretrained tags, and models trained
    locally."""
    import json

    from rich.console import Console
    from rich.table import Table

    from cliplab.models.facts import (UNKNOWN, count_config_parameters, facts_of_architecture, facts_of_config,
                                      tag_data)
    from cliplab.models.local import list_local_models
    from cliplab.models.openclip import list_architectures, list_pretrained
    from cliplab.paths import resolve_cache_dir

    tags: dict[str, list[str]] = {}
    for arch, tag in list_pretrained():
        tags.setdefault(arch, []).append(tag)
    shown = [a for a in list_architectures() if not ((filter and filter.lower() not in a.lower())
                                                      or (pretrained_only and a not in tags))]
    count = params if params is not None else len(shown) <= PARAMS_LISTED
    table = Table(title="open_clip architectures (use --model ARCH --pretrained TAG)")
    for col in ("architecture", "facts", "pretrained tags", "pretraining data"):
        table.add_column(col, no_wrap=col == "architecture", overflow="fold")  # a narrow terminal folds, never cuts
    for arch in shown:
        f = facts_of_architecture(arch, count_parameters=count)
        data = {t: tag_data(arch, t) for t in tags.get(arch, [])}
        known = {t: d for t, d in data.items() if d != UNKNOWN}
        table.add_row(arch, _facts(f, count), ", ".join(tags.get(arch, [])) or "—",
                      "; ".join(f"{t}: {d}" for t, d in known.items()) + ("; others unknown" if known and
                                                                         len(known) < len(data) else "")
                      if known else (UNKNOWN if data else "—"))
    table.caption = ("facts: image backbone /patch size · input resolution · parameters of both towers" +
                     ("" if count else " (not counted for this many architectures: --filter or --params)") +
                     " · embedding width · text context in tokens; pretraining data: as a tag's pretrained config "
                     "records it (open_clip's record none: the tag's name says it by convention)")
    console = Console()
    console.print(table)
    local = list_local_models(resolve_cache_dir(cache_dir))
    lt = Table(title="local models (use --model NAME)")
    for col in ("name", "facts", "pretraining data", "images", "train s", "folder"):
        lt.add_column(col, no_wrap=col == "name", overflow="fold")
    for lm in local:
        try:
            cfg = json.loads(lm.config.read_text())
        except (OSError, ValueError):
            cfg = {}
        f = facts_of_config(cfg, count_config_parameters(cfg) if cfg else None, str(lm.meta.get("dataset", UNKNOWN)))
        lt.add_row(lm.name, _facts(f), f.pretraining_data, str(lm.meta.get("images", "?")),
                   str(lm.meta.get("train_seconds", "?")), str(lm.folder))
    console.print(lt if local else "no local models yet (`cliplab train` or `cliplab demo` makes one)")
    console.print("Hugging Face transformers CLIP: --model hf:openai/clip-vit-base-patch32 (pip install 'cliplab\\[hf]')")


def _facts(f, counted: bool = True) -> str:
    """``ViT /32 · 224 px · 151.28 M params · dim 512 · context 77`` (unknown facts said so, never guessed)."""
    params = (f"{f.parameters / 1e6:.2f} M params" if f.parameters is not None else
              "params unknown" if counted else "params not counted")
    return " · ".join([f.backbone_text, "resolution unknown" if f.resolution is None else f"{f.resolution} px", params,
                       f"dim {f.embed_dim if f.embed_dim is not None else 'unknown'}",
                       f"context {f.context_length if f.context_length is not None else 'unknown'}"])


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
    limit: LimitOpt = None, output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="save "
                                                                                "here instead of the cache."),
    force: bool = typer.Option(False, "--force", help="replace an existing model of the same name (with NAME "
                               "tiny-shapes: train a cache copy that --model tiny-shapes then uses instead of the "
                               "shipped one)."),
    cache_dir: CacheDirOpt = None, quiet: QuietOpt = False,
):
    """Train a CLIP with the contrastive loss on a caption file, or fine-tune an open_clip model.

    By default this trains cliplab's tiny ResNet-tower CLIP on `shapes` with the recipe of the shipped
    `tiny-shapes` model (same seed: same model up to CPU float differences)."""
    import json

    from cliplab.train import TrainConfig, train_clip
    from cliplab.train.trainer import check_name, model_source

    check_output(output_dir, "--output-dir", folder=True)
    options = RunOptions.of(cache_dir)
    overrides = check_name(name, output_dir, force)
    recipe = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed).items() if v is not None}
    ds = train_set(dataset, split, limit, options)
    model_cfg, base = model_source(model)
    with use(ConsoleProgress(quiet=quiet)):
        folder = train_clip(ds, options.cache_dir, name, out_dir=output_dir, model_cfg=model_cfg, base_model=base,
                            pretrained=pretrained, config=TrainConfig(**recipe), overwrite=force,
                            extra_meta={"overrides_shipped": True} if overrides else None)
    meta = json.loads((folder / "meta.json").read_text())
    if output_dir is None:
        usage = f"--model {name}" + (f" --cache-dir {cache_dir}" if cache_dir else "")
    else:
        usage = f"--model local-dir:{folder}"
    stdout(False).print(f"trained {name} on {meta['images']} images in {meta['train_seconds']} s "
                      f"(final loss {meta['history'][-1]['loss']:.3f}); saved to {folder}")
    if overrides:
        stdout(False).print(f"--model {name} now uses this model instead of the shipped one; delete {folder} to go back")
    stdout(False).print(f"use it with: {usage}")


@handle_errors
def demo(
    cache_dir: CacheDirOpt = None, quiet: QuietOpt = False,
    output_dir: Path = typer.Option(Path("cliplab-demo"), "--output-dir", help="folder for the demo's results "
                                    "store, figures and report.html: a new folder, or one an earlier demo created "
                                    "(marked by a .cliplab-demo file; its results are replaced)."),
    no_report: bool = typer.Option(False, "--no-report", help="only the zero-shot tables."),
    backend: BackendOpt = "auto",
):
    """Offline demo: the shipped tiny CLIP (tiny-shapes) on `shapes`: every study, then the HTML report.

    Zero-shot with five template sets, a prompt study, probes, retrieval, search, similar, cluster and a
    typographic attack."""
    import shutil

    from cliplab.inputs import DEFAULT_MODEL, open_model
    from cliplab.report.html import build_report
    from cliplab.results.store import read_results
    from cliplab.studies import discover
    from cliplab.studies.demo import demo_steps

    check_output(output_dir, "--output-dir", folder=True)
    check_device(None, None, backend)
    out_dir = prepare_demo_dir(output_dir)
    results, figures = out_dir / "results", out_dir / "figures"
    if results.exists():
        shutil.rmtree(results)  # the demo's own folder (marker checked): the report shows this run only
    discover()  # every study's report sections
    options = RunOptions.of(cache_dir, backend=backend)
    with use(ConsoleProgress(quiet=quiet)):
        model = open_model(DEFAULT_MODEL, None, options)
        for step in demo_steps(model, options, zeroshot_only=no_report):
            note(f"{step.title}: done")
            for result in step.results:
                with use(ConsoleProgress(quiet=True)):  # skipped images and notes: in the report, not here
                    finish(result, command=step.command, config=step.config, quiet=True, show=step.show,
                           results=None if no_report else results,
                           artifacts={k: f for k, (f, _) in step.figures.items()},
                           files={k: figures / name for k, (_, name) in step.figures.items()})
    if not no_report:
        path = build_report(read_results(results), out_dir / "report.html",
                            title="cliplab demo · tiny-shapes on shapes", sources=[results])
        stdout(False).print(f"report: {path.resolve()}")


def train_set(dataset: str, split: str | None, limit: int | None, options: RunOptions):
    """The split to train on: the one named, else ``train``; a set without splits (a caption file) is used whole."""
    from cliplab.data import SplitError, open_dataset as load

    if split is None:
        try:
            return load(dataset, split="train", limit=limit, cache_dir=options.cache_dir)
        except SplitError as exc:
            if exc.available:
                raise CliplabError(f"--split: {exc}; choose the split to train on with --split") from None
    return open_dataset(dataset, options, split=split, limit=limit)


DEMO_MARKER = ".cliplab-demo"  # written into every output folder the demo creates; only such folders are reused


def prepare_demo_dir(output_dir: Path) -> Path:
    """Create the demo's output folder (with its marker file), or reuse one the demo created before. Any other
    existing folder is refused: the demo never writes into, or deletes from, a folder it does not own."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise CliplabError(f"--output-dir {out}: exists and is not a folder; pick another --output-dir")
    if out.exists() and not (out / DEMO_MARKER).is_file() and any(out.iterdir()):
        raise CliplabError(f"--output-dir {out}: this folder exists and was not created by `cliplab demo` (no "
                           f"{DEMO_MARKER} file); pick another --output-dir, e.g. a new folder name")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / DEMO_MARKER
    if not marker.is_file():
        marker.write_text("this folder was created by `cliplab demo`; the demo replaces its own results/, "
                          "figures/ and report.html here on each run\n")
    return out


def register(app: typer.Typer) -> None:
    for fn in (models, train, report, demo):
        app.command()(fn)
